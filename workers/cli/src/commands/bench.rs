//! `simflow bench`: throughput benchmarks that print simflow's numbers next to the raw limit of
//! the same component, measured in the same run on the same machine.
//!
//! Benchmarks never run in the test suite: the machines are shared and noisy, so only ratios
//! measured side by side mean anything.

use clap::Subcommand;
use simflow_runtime::Settings;

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Transfer jobs per second through broker and database vs the raw broker round trip.
    Transfer(super::bench_transfer::TransferBenchArgs),
    /// Batch issue and return of 100,000 cards vs one raw UPDATE over the same number of rows.
    Inventory(super::bench_inventory::InventoryBenchArgs),
    /// Card data import next to a raw COPY of the same rows.
    Import(super::bench_import::ImportBenchArgs),
    /// Write requests per second through the central write-card worker vs the raw broker.
    Writecard(super::bench_writecard::WritecardBenchArgs),
    /// APDUs and host-side time per card personalisation over pcscd + vpcd + the soft SIM.
    Card(super::bench_card::CardBenchArgs),
    /// What outlets cost the broker: memory and file descriptors per outlet queue (by queue
    /// variant), per provisioned outlet and per idle node connection, and a sizing projection.
    Outlets(super::bench_outlets::OutletsBenchArgs),
    /// Time and bytes of one `/metrics` scrape with many outlets' series.
    Scrape(super::bench_scrape::ScrapeBenchArgs),
}

/// Runs a benchmark.
pub async fn run(settings: Settings, command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Transfer(args) => super::bench_transfer::run(settings, args).await,
        BenchCommand::Inventory(args) => super::bench_inventory::run(settings, args).await,
        BenchCommand::Import(args) => super::bench_import::run(settings, args).await,
        BenchCommand::Writecard(args) => super::bench_writecard::run(settings, args).await,
        BenchCommand::Card(args) => super::bench_card::run(args).await,
        BenchCommand::Outlets(args) => super::bench_outlets::run(settings, args).await,
        BenchCommand::Scrape(args) => super::bench_scrape::run(args).await,
    }
}
