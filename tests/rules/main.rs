//! The fast tier: every handler's business rules against the real PostgreSQL, without a
//! broker. Each test runs inside a transaction that is rolled back (see
//! `simflow_tests::rules`); delivery semantics stay in the end-to-end suite.
//! `contract` needs neither: it proves the JSON Schemas and the handlers' single-message checks
//! agree.

mod batches;
mod contract;
mod issue;
mod returns;
mod transfers;
mod writecard;
mod writers;
