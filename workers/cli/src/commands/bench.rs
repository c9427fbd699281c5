//! `simflow bench`.
use clap::Subcommand;
/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Transfers.
    Transfer,
    /// Card data import next to a raw COPY of the same rows.
    Import(super::bench_import::ImportBenchArgs),
}
/// Runs a benchmark.
pub async fn run(settings: simflow_runtime::Settings, command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Import(args) => super::bench_import::run(settings, args).await,
        BenchCommand::Transfer => anyhow::bail!("not yet"),
    }
}
