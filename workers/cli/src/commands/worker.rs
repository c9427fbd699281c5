//! `simflow worker`: run workers until SIGTERM or SIGINT, then finish in-flight jobs and exit 0.

use clap::Args;
use simflow_runtime::readiness;
use simflow_runtime::{Settings, Shutdown};

use crate::pipeline::{self, WorkerKind};

/// Arguments of `worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Which workers to run (`all` for every one).
    #[arg(required = true)]
    pub kinds: Vec<String>,
}

/// Runs the workers.
pub async fn run(settings: Settings, args: WorkerArgs) -> anyhow::Result<()> {
    let kinds: Vec<WorkerKind> = if args.kinds.iter().any(|kind| kind == "all") {
        WorkerKind::ALL.to_vec()
    } else {
        args.kinds
            .iter()
            .map(|kind| kind.parse())
            .collect::<anyhow::Result<_>>()?
    };
    // Signals first: a SIGTERM that arrives while the process is still migrating ends it
    // cleanly (the workers start with the token already cancelled and stop at once).
    let shutdown = Shutdown::new();
    shutdown.on_signals()?;
    // Serve health first: while the database is down the process stays up and says why it is
    // not ready, instead of exiting and being restarted in a loop.
    let observed = pipeline::observe(&settings, shutdown.token()).await?;
    eprintln!(
        "simflow worker: serving /metrics, /livez and /readyz on http://{}",
        observed.address
    );
    pipeline::not_ready_yet(
        &observed.health,
        &kinds,
        "not ready: waiting for the database",
    );
    let token = shutdown.token();
    let Some(pool) = readiness::until_database_ready(&observed.health, &token, || {
        pipeline::migrate_all(&settings)
    })
    .await
    else {
        // Shutdown before the database came: nothing was started.
        let _ = observed.http.await;
        return Ok(());
    };
    let watch = readiness::watch_database(pool.clone(), observed.health.clone(), token.clone());
    let mut workers = pipeline::start(
        &settings,
        &pool,
        &kinds,
        observed.metrics,
        observed.health,
        shutdown.token(),
    )?;
    workers.wait().await?;
    let _ = watch.await;
    let _ = observed.http.await;
    pool.close().await;
    Ok(())
}
