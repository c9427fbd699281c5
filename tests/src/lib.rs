//! Harness for the end-to-end tests: fresh databases, vhosts, readers and worker processes per test.

pub mod pcsc;
