//! One module per subcommand.

pub mod bench;
pub mod bench_import;
pub mod carddata;
pub mod demo;
pub mod dlq;
pub mod migrate;
pub mod publish;
pub mod seed;
pub mod topology;
pub mod worker;
