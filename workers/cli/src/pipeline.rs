//! Wiring workers into a running process: one pool, one metrics registry, one health state,
//! one shutdown token, and a task per worker; and the `/metrics` and `/healthz` endpoints a
//! long-running process serves.
//!
//! The `worker` command, the demo, the benchmarks and the end-to-end tests all start workers
//! through here, so they run exactly what production runs.

use std::str::FromStr;
use std::sync::Arc;

use anyhow::bail;
use simflow_runtime::metrics::{Health, Metrics};
use simflow_runtime::shutdown::CancellationToken;
use simflow_runtime::{Handler, Settings, Worker};
use simflow_schemas::topology::JobQueue;
use sqlx::PgPool;
use tokio::task::JoinSet;

/// A worker kind the process can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkerKind {
    /// Warehouse transfers.
    Transfer,
    /// Batch issue to agents.
    Issue,
    /// Batch return from agents.
    Return,
    /// Card data file import (号卡文件).
    CardFile,
    /// The central write-card worker: write requests and orders, outlet results, expired outlet work.
    WriteCard,
}

impl WorkerKind {
    /// Every kind.
    pub const ALL: [WorkerKind; 5] = [
        WorkerKind::Transfer,
        WorkerKind::Issue,
        WorkerKind::Return,
        WorkerKind::CardFile,
        WorkerKind::WriteCard,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            WorkerKind::Transfer => "transfer",
            WorkerKind::Issue => "issue",
            WorkerKind::Return => "return",
            WorkerKind::CardFile => "cardfile",
            WorkerKind::WriteCard => "writecard",
        }
    }
}

impl WorkerKind {
    /// The queues its consumers take work from; each is a health component named after the
    /// queue's key.
    pub fn queues(self) -> &'static [JobQueue] {
        match self {
            WorkerKind::Transfer => &[JobQueue::Transfer],
            WorkerKind::Issue => &[JobQueue::Issue],
            WorkerKind::Return => &[JobQueue::Return],
            WorkerKind::CardFile => &[JobQueue::CardFile],
            WorkerKind::WriteCard => &[
                JobQueue::WriteCard,
                JobQueue::OutletResults,
                JobQueue::OutletExpired,
            ],
        }
    }
}

/// Marks every consumer of `kinds` not ready, saying `why`, before any of them runs: readiness
/// covers only the components it knows, so a process whose workers had not yet registered (a
/// restarted worker process, once its database answered) said ready before it consumed.
pub fn not_ready_yet(health: &Health, kinds: &[WorkerKind], why: &str) {
    for kind in kinds {
        for queue in kind.queues() {
            health.set(queue.key(), false, why);
        }
    }
}

impl FromStr for WorkerKind {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match WorkerKind::ALL.into_iter().find(|kind| kind.name() == text) {
            Some(kind) => Ok(kind),
            None => bail!(
                "unknown worker {text:?}; known: {}",
                WorkerKind::ALL.map(WorkerKind::name).join(", ")
            ),
        }
    }
}

/// Workers running in this process.
#[derive(Debug)]
pub struct RunningWorkers {
    /// Cancels every worker.
    pub shutdown: CancellationToken,
    /// The metrics they record.
    pub metrics: Arc<Metrics>,
    /// Their health.
    pub health: Health,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl RunningWorkers {
    /// Stops taking work, lets in-flight jobs settle, and waits for every worker.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits for every worker to end (after the shutdown token is cancelled elsewhere).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        while let Some(joined) = self.tasks.join_next().await {
            joined??;
        }
        Ok(())
    }
}

fn spawn<H: Handler>(tasks: &mut JoinSet<anyhow::Result<()>>, handler: H, parts: &Parts) {
    let worker = Worker::new(
        handler,
        parts.settings.clone(),
        parts.pool.clone(),
        Arc::clone(&parts.metrics),
        parts.health.clone(),
    );
    tasks.spawn(worker.run(parts.shutdown.clone()));
}

struct Parts {
    settings: Settings,
    pool: PgPool,
    metrics: Arc<Metrics>,
    health: Health,
    shutdown: CancellationToken,
}

/// Starts the given workers sharing one pool, metrics and health.
pub fn start(
    settings: &Settings,
    pool: &PgPool,
    kinds: &[WorkerKind],
    metrics: Arc<Metrics>,
    health: Health,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningWorkers> {
    let inventory: simflow_inventory::InventorySettings = settings.section("inventory")?;
    // Each queue's consumer runs up to batch_concurrency transactions at once, each holding a
    // pooled connection; the write-card kind consumes three queues.
    let consumers: usize = kinds
        .iter()
        .map(|kind| match kind {
            WorkerKind::WriteCard => 3,
            _ => 1,
        })
        .sum();
    let wanted = consumers * settings.worker.batch_concurrency;
    let pool_size = usize::try_from(settings.database.max_connections).unwrap_or(usize::MAX);
    if wanted > pool_size {
        tracing::warn!(
            consumers,
            batch_concurrency = settings.worker.batch_concurrency,
            max_connections = pool_size,
            "database.max_connections is below consumers × worker.batch_concurrency: batches will wait for connections"
        );
    }
    let parts = Parts {
        settings: settings.clone(),
        pool: pool.clone(),
        metrics: Arc::clone(&metrics),
        health: health.clone(),
        shutdown: shutdown.clone(),
    };
    not_ready_yet(&health, kinds, "starting");
    let mut tasks = JoinSet::new();
    for kind in kinds {
        match kind {
            WorkerKind::Transfer => spawn(&mut tasks, simflow_inventory::TransferHandler, &parts),
            WorkerKind::Issue => spawn(
                &mut tasks,
                simflow_inventory::IssueHandler::new(
                    &inventory,
                    simflow_writecard::outlets::lookup_for_writers,
                ),
                &parts,
            ),
            WorkerKind::Return => spawn(&mut tasks, simflow_inventory::ReturnHandler, &parts),
            WorkerKind::WriteCard => {
                let writecard: simflow_writecard::WritecardSettings =
                    settings.section("writecard")?;
                let keks = std::sync::Arc::new(
                    simflow_carddata::kek::KekRing::from_settings(&settings.carddata)
                        .map_err(|error| anyhow::Error::new(error).context("carddata settings"))?,
                );
                let foreign_reader = writecard.foreign_reader;
                spawn(
                    &mut tasks,
                    simflow_writecard::WriteCardHandler {
                        settings: writecard,
                        keks: std::sync::Arc::clone(&keks),
                    },
                    &parts,
                );
                spawn(
                    &mut tasks,
                    simflow_writecard::OutletResultsHandler {
                        keks,
                        foreign_reader,
                    },
                    &parts,
                );
                spawn(&mut tasks, simflow_writecard::OutletExpiredHandler, &parts);
            }
            WorkerKind::CardFile => {
                match simflow_carddata::Importer::from_settings(pool.clone(), &settings.carddata) {
                    Ok(importer) => spawn(
                        &mut tasks,
                        simflow_carddata::CardFileHandler::new(importer),
                        &parts,
                    ),
                    // Malformed keys stop the process at start instead of failing every job.
                    Err(error) => {
                        tasks.spawn(async move {
                            Err(anyhow::Error::new(error).context("carddata settings"))
                        });
                    }
                }
            }
        }
    }
    Ok(RunningWorkers {
        shutdown,
        metrics,
        health,
        tasks,
    })
}

/// Starts the given workers with metrics, health and a shutdown token of their own (the demo,
/// the benchmarks and the tests read them from [`RunningWorkers`]).
pub fn start_own(
    settings: &Settings,
    pool: &PgPool,
    kinds: &[WorkerKind],
) -> anyhow::Result<RunningWorkers> {
    start(
        settings,
        pool,
        kinds,
        Arc::new(Metrics::new()),
        Health::default(),
        CancellationToken::new(),
    )
}

/// A process's metrics registry and health state, served on `/metrics` and `/healthz`.
#[derive(Debug)]
pub struct Observed {
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// The health state.
    pub health: Health,
    /// Where `/metrics` and `/healthz` listen.
    pub address: std::net::SocketAddr,
    /// The HTTP server; it ends once the shutdown token is cancelled.
    pub http: tokio::task::JoinHandle<()>,
}

/// Makes the metrics registry and health state of a long-running process (`simflow worker`,
/// `simflow outlet run`) and serves them on `http.listen` until `shutdown`.
pub async fn observe(settings: &Settings, shutdown: CancellationToken) -> anyhow::Result<Observed> {
    let metrics = Arc::new(Metrics::new());
    let health = Health::default();
    let (address, http) = simflow_runtime::http::serve(
        &settings.http.listen,
        Arc::clone(&metrics),
        health.clone(),
        shutdown,
    )
    .await?;
    Ok(Observed {
        metrics,
        health,
        address,
        http,
    })
}

/// Creates the database if needed and applies every migration, in dependency order.
pub async fn migrate_all(settings: &Settings) -> anyhow::Result<PgPool> {
    simflow_runtime::db::ensure_database(&settings.database.url).await?;
    let pool = simflow_runtime::db::lazy_pool(&settings.database)?;
    simflow_runtime::db::migrate_runtime(&pool).await?;
    simflow_inventory::migrate(&pool).await?;
    simflow_carddata::migrate(&pool).await?;
    simflow_writecard::migrate(&pool).await?;
    simflow_console::migrate(&pool).await?;
    Ok(pool)
}
