//! One module per subcommand.

pub mod bench;
pub mod bench_card;
pub mod bench_import;
pub mod bench_inventory;
pub mod bench_outlets;
pub mod bench_scrape;
pub mod bench_transfer;
pub mod bench_writecard;
pub mod carddata;
pub mod chaos;
pub mod console;
pub mod demo;
pub mod dlq;
pub mod inventory;
pub mod migrate;
pub mod outlet;
pub mod outlets;
pub mod publish;
pub mod seed;
pub mod topology;
pub mod vreaders;
pub mod worker;
pub mod writers;
