//! `simflow bench`.
use clap::Subcommand;
/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Transfers.
    Transfer,
}
/// Runs a benchmark.
pub async fn run(
    _settings: simflow_runtime::Settings,
    _command: BenchCommand,
) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
