//! `simflow demo`.
use clap::Args;
/// Demo arguments.
#[derive(Debug, Args)]
pub struct DemoArgs {}
/// Runs the demo.
pub async fn run(_settings: simflow_runtime::Settings, _args: DemoArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
