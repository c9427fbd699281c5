//! `simflow chaos`: jobs through real worker processes while they are SIGKILLed and the broker
//! and the database restart under them, then the proof that nothing was lost or done twice.
//!
//! It runs only against the private broker node and database cluster of
//! `deploy/chaos/services.sh` (`--services DIR`; `deploy/chaos.sh` starts and removes them), so
//! no fault reaches the machine's own services. It:
//! 1. migrates, loads the org data, receives one blank card per chain, declares a durable
//!    quorum queue of every event (`chaos.outcomes`), and starts `simflow worker all` processes
//!    (this binary), each with its own health port;
//! 2. runs chains of six jobs per card — transfer create, approve out, approve in (130041 →
//!    13ZDF16), batch issue prepare and commit to an agent, batch return by list — each job
//!    published once its predecessor's outcome arrived, ~10% of them published twice (the
//!    same message id and body, at once or after the outcome), and malformed messages (bad
//!    JSON, unknown type, schema-invalid, wrong content type, an encoded body, too large), ~8%
//!    of the jobs; a publish that is not confirmed (the broker went away) is sent again with the
//!    same message id until it is;
//! 3. meanwhile SIGKILLs a random worker (and starts it again), restarts the broker (graceful
//!    and SIGKILL, alternating) and the database (fast and immediate shutdown, alternating),
//!    one fault at a time, each once every worker is ready again; with `--database-url` naming
//!    the Patroni pair of `deploy/cluster/postgres.sh`, it fails the primary over instead
//!    (`--failovers`: SIGKILL to the primary's postmaster, then alternately a switchover) and
//!    reports how long Patroni took to promote and how long the pipeline stalled;
//! 4. waits until every job is answered and the queues are empty, then checks: every job has
//!    exactly one outcome (distinct event ids: the contract lets events repeat, with the same
//!    id), each the expected one; every card's ledger holds each movement once and ends where
//!    the chain leaves it; the ledger reconciles with the card table; the dead-letter queues
//!    hold exactly the malformed messages, each once; no worker exited on its own; every
//!    worker stops with status 0 on SIGTERM. It prints one table and fails if any check fails.
//!
//! With `--cluster` it runs against the 3-node broker cluster of `deploy/cluster/rabbitmq.sh`
//! instead (the settings' `amqp.uris` and `amqp.management_urls` name its nodes; the database
//! `simflow_chaos_cluster` on the settings' PostgreSQL server, dropped at the end), every
//! worker, publisher and the collector given all three addresses, and the fault is a SIGKILL of
//! the node leading the busiest queue (`--leader-kills`); the killed node starts again once the
//! workers are ready. The table then says how long the pipeline stalled: from the kill to the
//! next new outcome, and to the last one.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use secrecy::{ExposeSecret, SecretString};
use simflow_runtime::Settings;
use simflow_runtime::amqp::{AnyMessage, Client, ReceivedEvent};
use simflow_runtime::brokers::BrokerAddresses;
use simflow_runtime::management::Management;
use simflow_runtime::shutdown::CancellationToken;
use simflow_schemas::common::{CardSelection, ReturnSelection};
use simflow_schemas::registry::{Message, MessageRole};
use simflow_schemas::returns::{ReturnByList, ReturnFee};
use simflow_schemas::topology::{JOBS_EXCHANGE, JobQueue};
use simflow_schemas::transfer::{TransferApproveIn, TransferApproveOut};
use uuid::Uuid;

use crate::pg_cluster::{Failover, PgCluster};
use crate::services::PrivateServices;
use crate::world;

/// The durable queue of every event the run collects outcomes from.
pub const OUTCOME_QUEUE: &str = "chaos.outcomes";
/// The database the run works in, on the private cluster.
const DATABASE: &str = "simflow_chaos";
/// The database of a `--cluster` run, on the settings' PostgreSQL server.
const CLUSTER_DATABASE: &str = "simflow_chaos_cluster";

/// What the faults act on.
#[derive(Debug)]
enum FaultTargets {
    /// The private node and cluster of `deploy/chaos/services.sh` (worker logs in its dir).
    Services(PrivateServices),
    /// The broker cluster of `deploy/cluster/rabbitmq.sh`; worker logs in `work`.
    Cluster {
        cluster: crate::cluster::BrokerCluster,
        work: PathBuf,
    },
}

impl FaultTargets {
    fn workers_dir(&self) -> PathBuf {
        match self {
            FaultTargets::Services(services) => services.dir.join("workers"),
            FaultTargets::Cluster { work, .. } => work.join("workers"),
        }
    }

    fn services(&self) -> anyhow::Result<&PrivateServices> {
        match self {
            FaultTargets::Services(services) => Ok(services),
            FaultTargets::Cluster { .. } => bail!("a --cluster run restarts no private service"),
        }
    }

    fn cluster(&self) -> anyhow::Result<&crate::cluster::BrokerCluster> {
        match self {
            FaultTargets::Cluster { cluster, .. } => Ok(cluster),
            FaultTargets::Services(_) => bail!("leader kills need --cluster"),
        }
    }
}
/// Jobs per chain.
const CHAIN_STEPS: usize = 6;
/// The workers' body limit in this run: small, so a "too large" message stays under the
/// broker's own 1 MiB and reaches a worker.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long one publish may keep trying (broker restarts included).
const PUBLISH_PATIENCE: Duration = Duration::from_secs(180);
/// How long one try waits for the broker's confirm.
const CONFIRM_LIMIT: Duration = Duration::from_secs(10);
/// Over how many milliseconds after its release a wave's jobs start: longer than a broker's
/// graceful stop takes to begin, so some publishes meet a broker that is going or gone.
const STAGGER_MS: u64 = 8000;
/// How long a job may take from its (confirmed) publish to its outcome.
const OUTCOME_PATIENCE: Duration = Duration::from_secs(240);
/// How long the workers may take to be ready again after a fault.
const READY_PATIENCE: Duration = Duration::from_secs(120);

/// Arguments of `chaos`.
#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// The directory of the private services (`deploy/chaos/services.sh start DIR`).
    #[arg(long, required_unless_present = "cluster", conflicts_with = "cluster")]
    pub services: Option<PathBuf>,
    /// Run against the broker cluster of `deploy/cluster/rabbitmq.sh` (its addresses from the
    /// settings: `SIMFLOW__AMQP__URIS`, `SIMFLOW__AMQP__MANAGEMENT_URLS`) and the settings'
    /// PostgreSQL server; the faults are leader kills (and worker kills when asked).
    #[arg(long)]
    pub cluster: bool,
    /// The cluster script.
    #[arg(long, default_value = crate::cluster::CLUSTER_HELPER)]
    pub cluster_helper: PathBuf,
    /// Where a `--cluster` run keeps its worker logs and pid files (default: a new directory
    /// under the temporary directory); removed when the run passes.
    #[arg(long, requires = "cluster")]
    pub work_dir: Option<PathBuf>,
    /// SIGKILLs of the node leading the busiest queue (`--cluster` only); default 3 (short: 1).
    #[arg(long)]
    pub leader_kills: Option<usize>,
    /// The services helper script.
    #[arg(long, default_value = crate::services::HELPER)]
    pub helper: PathBuf,
    /// Short mode: 300 jobs, 3 worker kills, one broker and one database restart.
    #[arg(long)]
    pub short: bool,
    /// Distinct jobs (well-formed and malformed); default 2,000 (short: 300).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Worker SIGKILLs; default 10 (short: 3).
    #[arg(long)]
    pub kills: Option<usize>,
    /// Broker restarts; default 3 (short: 1).
    #[arg(long)]
    pub broker_restarts: Option<usize>,
    /// Database restarts; default 3 (short: 1); none with `--database-url`.
    #[arg(long)]
    pub db_restarts: Option<usize>,
    /// Work in this database cluster instead of the private services' PostgreSQL: the
    /// Patroni pair of `deploy/cluster/postgres.sh`, as a multi-host URL
    /// (`postgres://postgres@127.0.0.1:5461,127.0.0.1:5462/x?target_session_attrs=read-write`;
    /// the database name is replaced by the run's own).
    #[arg(long)]
    pub database_url: Option<String>,
    /// Failovers of the cluster's primary (needs `--database-url`); default 2 (short: 1). The
    /// first SIGKILLs the primary's postmaster, the next is a switchover, and so on.
    #[arg(long)]
    pub failovers: Option<usize>,
    /// The database cluster script.
    #[arg(long, default_value = crate::pg_cluster::HELPER)]
    pub pg_cluster_helper: PathBuf,
    /// The database cluster's data directory (the script's `PG_CLUSTER_DIR`).
    #[arg(long, default_value = "/var/lib/simflow/cluster/patroni")]
    pub pg_cluster_dir: PathBuf,
    /// Worker processes.
    #[arg(long, default_value_t = 3)]
    pub workers: usize,
    /// Seconds at least from one fault to the next (default 5).
    #[arg(long)]
    pub fault_interval: Option<u64>,
    /// Random seed (default: from the clock; printed, so a run can be repeated).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// What one run does, from the arguments.
#[derive(Debug, Clone, Default)]
struct Plan {
    mode: &'static str,
    chains: usize,
    malformed: usize,
    kills: usize,
    broker_restarts: usize,
    db_restarts: usize,
    leader_kills: usize,
    failovers: usize,
    workers: usize,
    interval: Duration,
    seed: u64,
}

impl Plan {
    fn from(args: &ChaosArgs) -> anyhow::Result<Plan> {
        let short = args.short;
        let jobs = args.jobs.unwrap_or(if short { 300 } else { 2000 });
        let malformed = jobs * 8 / 100;
        let chains = (jobs - malformed) / CHAIN_STEPS;
        anyhow::ensure!(chains >= 1, "--jobs {jobs} leaves no room for one chain");
        anyhow::ensure!(args.workers >= 1, "--workers must be at least 1");
        let seed = args.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|elapsed| elapsed.as_secs())
                .unwrap_or(1)
        });
        let cluster = args.cluster;
        let leader_kills = args.leader_kills.unwrap_or(if !cluster {
            0
        } else if short {
            1
        } else {
            3
        });
        anyhow::ensure!(
            cluster || leader_kills == 0,
            "--leader-kills needs --cluster (a single node has no other node to fail over to)"
        );
        anyhow::ensure!(
            !cluster
                || (args.broker_restarts.unwrap_or(0) == 0 && args.db_restarts.unwrap_or(0) == 0),
            "--cluster restarts no broker and no database: use --leader-kills and --kills"
        );
        let restarts = |asked: Option<usize>| {
            if cluster {
                0
            } else {
                asked.unwrap_or(if short { 1 } else { 3 })
            }
        };
        let database_cluster = args.database_url.is_some();
        anyhow::ensure!(
            database_cluster || args.failovers.unwrap_or(0) == 0,
            "--failovers needs --database-url (the Patroni cluster of deploy/cluster/postgres.sh)"
        );
        anyhow::ensure!(
            !database_cluster || args.db_restarts.unwrap_or(0) == 0,
            "--db-restarts restart the private services' PostgreSQL, which a run with \
             --database-url does not use; fail the cluster over with --failovers instead"
        );
        Ok(Plan {
            mode: match (cluster, short) {
                (true, true) => "cluster, short",
                (true, false) => "cluster, full",
                (false, true) => "short",
                (false, false) => "full",
            },
            chains,
            // Whatever the division leaves over is malformed too, so the total is exact.
            malformed: jobs - chains * CHAIN_STEPS,
            kills: args.kills.unwrap_or(if cluster {
                0
            } else if short {
                3
            } else {
                10
            }),
            broker_restarts: restarts(args.broker_restarts),
            db_restarts: if database_cluster {
                0
            } else {
                restarts(args.db_restarts)
            },
            leader_kills,
            failovers: if database_cluster {
                args.failovers.unwrap_or(if short { 1 } else { 2 })
            } else {
                0
            },
            workers: args.workers,
            interval: Duration::from_secs(args.fault_interval.unwrap_or(5)),
            seed,
        })
    }

    fn jobs(&self) -> usize {
        self.chains * CHAIN_STEPS + self.malformed
    }

    fn faults(&self) -> usize {
        self.kills + self.broker_restarts + self.db_restarts + self.leader_kills + self.failovers
    }

    /// Waves of load: one released just before each fault, one after the last.
    fn waves(&self) -> usize {
        self.faults() + 1
    }
}

/// Runs the chaos test.
pub async fn run(settings: Settings, args: ChaosArgs) -> anyhow::Result<()> {
    let plan = Plan::from(&args)?;
    let (mut settings, faults) = match &args.services {
        Some(dir) => {
            let services = PrivateServices::open(dir, &args.helper)?;
            (
                services.settings(&settings, DATABASE),
                FaultTargets::Services(services),
            )
        }
        None => {
            anyhow::ensure!(
                settings.amqp.uris.len() >= 2 && settings.amqp.management_urls.len() >= 2,
                "--cluster needs the cluster's nodes in amqp.uris and amqp.management_urls \
                 (eval \"$({} env)\")",
                crate::cluster::CLUSTER_HELPER
            );
            let work = args.work_dir.clone().unwrap_or_else(|| {
                std::env::temp_dir().join(format!("simflow-chaos-cluster-{}", std::process::id()))
            });
            (
                settings.in_namespace("/", CLUSTER_DATABASE),
                FaultTargets::Cluster {
                    cluster: crate::cluster::BrokerCluster {
                        helper: args.cluster_helper.clone(),
                    },
                    work,
                },
            )
        }
    };
    // A Patroni cluster instead of the private services' PostgreSQL (`--database-url`).
    let database_cluster = match &args.database_url {
        Some(url) => {
            settings.database.url = SecretString::from(url.clone());
            settings = settings.in_namespace("/", DATABASE);
            settings.validate()?;
            Some(PgCluster::new(
                &args.pg_cluster_helper,
                &args.pg_cluster_dir,
            ))
        }
        None => None,
    };
    settings.amqp.max_message_bytes = MAX_BODY_BYTES;
    // Short retry levels and room for many tries: a database restart may take a few of them.
    settings.topology.retry_delays_ms = vec![500, 1000, 2000, 4000];
    settings.worker.max_attempts = 12;
    settings.database.max_connections = 12;
    world::generate_kek(&mut settings.carddata, "chaos");
    let started = Instant::now();
    let cluster_work = match &faults {
        FaultTargets::Cluster { work, .. } => Some(work.clone()),
        FaultTargets::Services(_) => None,
    };
    let database = settings.database.url.clone();
    let result = async {
        let report = Run::new(settings, faults, database_cluster, plan)
            .await?
            .execute()
            .await?;
        report.print(started.elapsed());
        report.verdict()
    }
    .await;
    if let Some(work) = cluster_work
        && result.is_ok()
    {
        // The shared server keeps nothing of a passing run; a failing one is left to look at.
        simflow_runtime::db::drop_database(&database).await?;
        let _ = std::fs::remove_dir_all(work);
    }
    result
}

/// A job as it goes on the wire (also a malformed one).
#[derive(Debug, Clone)]
struct Job {
    id: String,
    message_type: Option<String>,
    queue: JobQueue,
    content_type: Option<&'static str>,
    content_encoding: Option<&'static str>,
    body: Vec<u8>,
}

impl Job {
    fn of<M: Message>(message: &M) -> anyhow::Result<Job> {
        let MessageRole::Job(queue) = M::ROLE else {
            bail!("{} is not a job", M::TYPE)
        };
        Ok(Job {
            id: Uuid::new_v4().to_string(),
            message_type: Some(M::TYPE.to_owned()),
            queue,
            content_type: Some("application/json"),
            content_encoding: None,
            body: serde_json::to_vec(message)?,
        })
    }

    fn wire(&self) -> AnyMessage<'_> {
        AnyMessage {
            exchange: JOBS_EXCHANGE,
            routing_key: self.queue.key(),
            message_id: Some(&self.id),
            message_type: self.message_type.as_deref(),
            content_type: self.content_type,
            content_encoding: self.content_encoding,
            body: &self.body,
            ..AnyMessage::default()
        }
    }
}

/// One card's way through the business: six jobs, each with the event that answers it.
#[derive(Debug, Clone)]
struct Chain {
    iccid: String,
    /// The receipt's reference and each movement's (transfer, transfer, batch, return).
    references: Vec<String>,
    steps: Vec<(Job, &'static str)>,
}

fn chain(iccid: &str, agent: &str) -> anyhow::Result<Chain> {
    let transfer_id = Uuid::new_v4();
    let batch_id = Uuid::new_v4();
    let return_id = Uuid::new_v4();
    let only = || CardSelection::Iccids {
        iccids: vec![iccid.to_owned()],
    };
    let steps = vec![
        (
            Job::of(&world::transfer_create(
                transfer_id,
                "S0601",
                "130041",
                world::HEXI_TARGET,
                world::NORMAL,
                only(),
            ))?,
            "transfer.created",
        ),
        (
            Job::of(&TransferApproveOut {
                transfer_id,
                staff_id: "S0602".into(),
            })?,
            "transfer.approved_out",
        ),
        (
            Job::of(&TransferApproveIn {
                transfer_id,
                staff_id: world::HEXI_KEEPER.into(),
            })?,
            "transfer.approved_in",
        ),
        (
            Job::of(&world::issue_prepare(
                batch_id,
                agent,
                world::NORMAL,
                only(),
            ))?,
            "issue.prepared",
        ),
        (Job::of(&world::issue_commit(batch_id))?, "issue.committed"),
        (
            Job::of(&ReturnByList {
                return_id,
                staff_id: world::HEXI_KEEPER.into(),
                warehouse: world::HEXI_TARGET.into(),
                agent_ess_code: agent.into(),
                cards: ReturnSelection::Iccids {
                    iccids: vec![iccid.to_owned()],
                },
                fee: ReturnFee {
                    return_amount_fen: 100,
                },
            })?,
            "return.committed",
        ),
    ];
    Ok(Chain {
        iccid: iccid.to_owned(),
        references: vec![
            RECEIPT_REFERENCE.to_owned(),
            transfer_id.to_string(),
            transfer_id.to_string(),
            batch_id.to_string(),
            return_id.to_string(),
        ],
        steps,
    })
}

const RECEIPT_REFERENCE: &str = "chaos";

/// The malformed kinds, each with the reason the worker must dead-letter it with.
const MALFORMED_KINDS: [(&str, &str); 6] = [
    ("bad JSON", "MALFORMED_MESSAGE"),
    ("unknown type", "UNKNOWN_MESSAGE_TYPE"),
    ("schema-invalid", "MALFORMED_MESSAGE"),
    ("wrong content_type", "CONTENT_TYPE_UNSUPPORTED"),
    ("encoded body", "CONTENT_ENCODING_UNSUPPORTED"),
    ("too large", "MESSAGE_TOO_LARGE"),
];

/// The `index`-th malformed message: kinds and queues in turn.
fn malformed(index: usize) -> (Job, &'static str) {
    let (kind, reason) = MALFORMED_KINDS[index % MALFORMED_KINDS.len()];
    let queue = [JobQueue::Transfer, JobQueue::Issue, JobQueue::Return][index % 3];
    let message_type = match queue {
        JobQueue::Issue => "issue.prepare.v1",
        JobQueue::Return => "return.by_list.v1",
        _ => "transfer.create.v1",
    };
    let mut job = Job {
        id: Uuid::new_v4().to_string(),
        message_type: Some(message_type.to_owned()),
        queue,
        content_type: Some("application/json"),
        content_encoding: None,
        body: br#"{"staff_id": "S0601"}"#.to_vec(),
    };
    match kind {
        "bad JSON" => job.body = br#"{"staff_id": "S0601", "#.to_vec(),
        "unknown type" => job.message_type = Some(format!("{}.teleport.v1", queue.key())),
        "wrong content_type" => job.content_type = Some("application/xml"),
        "encoded body" => job.content_encoding = Some("gzip"),
        "too large" => {
            let filler = "x".repeat(MAX_BODY_BYTES + 1024);
            job.body = serde_json::json!({ "staff_id": "S0601", "note": filler })
                .to_string()
                .into_bytes();
        }
        _ => {}
    }
    (job, reason)
}

/// What the collector saw.
#[derive(Debug, Default)]
struct Outcomes {
    /// Job message id → event message id → routing key.
    by_job: HashMap<String, BTreeMap<String, String>>,
    /// Outcome messages received (copies included).
    messages: u64,
    /// Events without the job header (none expected).
    without_job: u64,
    /// When each distinct event first arrived.
    arrivals: Vec<Instant>,
}

type Shared = Arc<Mutex<Outcomes>>;

fn record(outcomes: &Shared, event: ReceivedEvent) {
    let Ok(mut outcomes) = outcomes.lock() else {
        return;
    };
    outcomes.messages += 1;
    let Some(job) = event.job_message_id else {
        outcomes.without_job += 1;
        return;
    };
    let fresh = outcomes
        .by_job
        .entry(job)
        .or_default()
        .insert(event.message_id, event.routing_key)
        .is_none();
    if fresh {
        outcomes.arrivals.push(Instant::now());
    }
}

fn outcome_of(outcomes: &Shared, job: &str) -> Option<String> {
    let outcomes = outcomes.lock().ok()?;
    outcomes
        .by_job
        .get(job)
        .and_then(|events| events.values().next().cloned())
}

/// Collects every event from the durable queue, reconnecting whenever the broker goes away.
async fn collect(
    addresses: BrokerAddresses,
    outcomes: Shared,
    stop: CancellationToken,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    while !stop.is_cancelled() {
        let opened = async {
            let client = tokio::time::timeout(
                CONFIRM_LIMIT,
                Client::connect_any(&addresses, "simflow-chaos-outcomes"),
            )
            .await??;
            let watch = client.watch_durable(OUTCOME_QUEUE, &["#"]).await?;
            anyhow::Ok((client, watch))
        }
        .await;
        let Ok((client, mut watch)) = opened else {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        };
        if let Some(ready) = ready.take() {
            let _ = ready.send(());
        }
        loop {
            let asked = Instant::now();
            tokio::select! {
                () = stop.cancelled() => break,
                event = watch.next(Duration::from_secs(1)) => match event {
                    Ok(event) => record(&outcomes, event),
                    // A quiet second; anything else (the stream ended, the broker left) reconnects.
                    Err(_) if client.is_connected() && asked.elapsed() >= Duration::from_millis(900) => {}
                    Err(_) => break,
                },
            }
        }
        drop(watch);
        client.close().await;
    }
}

/// Publishes with confirms, sending again (same message id) until the broker confirms.
struct Sender {
    addresses: BrokerAddresses,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
    confirmed: AtomicU64,
    again: AtomicU64,
}

impl Sender {
    async fn client(&self) -> anyhow::Result<Arc<Client>> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref()
            && client.is_connected()
        {
            return Ok(Arc::clone(client));
        }
        *slot = None;
        let client = tokio::time::timeout(
            CONFIRM_LIMIT,
            Client::connect_any(&self.addresses, "simflow-chaos-publisher"),
        )
        .await
        .context("connecting took too long")??;
        let client = Arc::new(client);
        *slot = Some(Arc::clone(&client));
        Ok(client)
    }

    async fn send(&self, job: &Job) -> anyhow::Result<()> {
        let deadline = Instant::now() + PUBLISH_PATIENCE;
        loop {
            let outcome = match self.client().await {
                Ok(client) => {
                    client
                        .within(CONFIRM_LIMIT, client.publish_any(&job.wire()))
                        .await
                }
                Err(error) => Err(error),
            };
            match outcome {
                Ok(()) => {
                    self.confirmed.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err(error) if Instant::now() > deadline => {
                    return Err(error.context(format!(
                        "job {} was not confirmed within {PUBLISH_PATIENCE:?}",
                        job.id
                    )));
                }
                Err(_) => {
                    self.again.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
    }
}

/// The worker processes: `simflow worker all`, this very binary, each on its own health port.
struct Fleet {
    exe: PathBuf,
    env: Vec<(String, String)>,
    dir: PathBuf,
    listen: Vec<String>,
    children: Vec<tokio::process::Child>,
    http: reqwest::Client,
}

impl Fleet {
    fn start(settings: &Settings, dir: PathBuf, count: usize) -> anyhow::Result<Fleet> {
        std::fs::create_dir_all(&dir)?;
        let mut listen = Vec::with_capacity(count);
        for _ in 0..count {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            listen.push(format!("127.0.0.1:{port}"));
        }
        let kek = settings
            .carddata
            .kek
            .as_ref()
            .map(|kek| kek.expose_secret().to_owned())
            .unwrap_or_default();
        let mut env = vec![
            (
                "SIMFLOW__AMQP__URI".into(),
                settings.amqp.uri.expose_secret().to_owned(),
            ),
            (
                "SIMFLOW__AMQP__MANAGEMENT_URL".into(),
                settings.amqp.management_url.clone(),
            ),
            (
                "SIMFLOW__AMQP__MAX_MESSAGE_BYTES".into(),
                settings.amqp.max_message_bytes.to_string(),
            ),
            (
                "SIMFLOW__DATABASE__URL".into(),
                settings.database.url.expose_secret().to_owned(),
            ),
            (
                "SIMFLOW__DATABASE__MAX_CONNECTIONS".into(),
                settings.database.max_connections.to_string(),
            ),
            (
                "SIMFLOW__TOPOLOGY__RETRY_DELAYS_MS".into(),
                settings
                    .topology
                    .retry_delays_ms
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "SIMFLOW__WORKER__MAX_ATTEMPTS".into(),
                settings.worker.max_attempts.to_string(),
            ),
            (
                "SIMFLOW__CARDDATA__KEK_ID".into(),
                settings.carddata.kek_id.clone(),
            ),
            ("SIMFLOW__CARDDATA__KEK".into(), kek),
            ("RUST_LOG".into(), "info,sqlx=warn,lapin=warn".into()),
        ];
        if !settings.amqp.uris.is_empty() {
            env.push((
                "SIMFLOW__AMQP__URIS".into(),
                settings
                    .amqp
                    .uris
                    .iter()
                    .map(|uri| uri.expose_secret().to_owned())
                    .collect::<Vec<_>>()
                    .join(","),
            ));
        }
        if !settings.amqp.management_urls.is_empty() {
            env.push((
                "SIMFLOW__AMQP__MANAGEMENT_URLS".into(),
                settings.amqp.management_urls.join(","),
            ));
        }
        let mut fleet = Fleet {
            exe: std::env::current_exe().context("finding this simflow binary")?,
            env,
            dir,
            listen,
            children: Vec::with_capacity(count),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()?,
        };
        for index in 0..count {
            let child = fleet.spawn(index)?;
            fleet.children.push(child);
        }
        Ok(fleet)
    }

    fn spawn(&self, index: usize) -> anyhow::Result<tokio::process::Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("worker-{index}.log")))?;
        let child = tokio::process::Command::new(&self.exe)
            .args(["worker", "all"])
            .env_remove("SIMFLOW_CONFIG")
            .envs(self.env.iter().cloned())
            .env("SIMFLOW__HTTP__LISTEN", &self.listen[index])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting a worker process")?;
        // deploy/chaos.sh kills what is left by these files, should this run itself be killed.
        if let Some(pid) = child.id() {
            std::fs::write(
                self.dir.join(format!("worker-{index}.pid")),
                pid.to_string(),
            )?;
        }
        Ok(child)
    }

    /// SIGKILL to one worker, then a new process in its place.
    async fn kill(&mut self, index: usize) -> anyhow::Result<()> {
        self.children[index].kill().await?;
        self.children[index] = self.spawn(index)?;
        Ok(())
    }

    async fn ready(&self, index: usize) -> bool {
        let url = format!("http://{}/readyz", self.listen[index]);
        matches!(self.http.get(url).send().await, Ok(response) if response.status().is_success())
    }

    /// Waits until every worker answers `/readyz` with 200; how long that took.
    async fn all_ready(&self, since: Instant) -> anyhow::Result<Duration> {
        loop {
            let mut ready = true;
            for index in 0..self.children.len() {
                ready &= self.ready(index).await;
            }
            if ready {
                return Ok(since.elapsed());
            }
            if since.elapsed() > READY_PATIENCE {
                bail!("the workers were not ready {READY_PATIENCE:?} after a fault");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Workers that ended without being killed, started again; how many.
    fn restart_exited(&mut self) -> anyhow::Result<usize> {
        let mut exited = 0;
        for index in 0..self.children.len() {
            if let Some(status) = self.children[index].try_wait()? {
                eprintln!("chaos: worker {index} exited on its own ({status}); starting it again");
                exited += 1;
                self.children[index] = self.spawn(index)?;
            }
        }
        Ok(exited)
    }

    /// SIGTERM to every worker; their exit statuses (None: had to be killed).
    async fn stop(mut self) -> Vec<Option<i32>> {
        for child in &self.children {
            if let Some(pid) = child.id() {
                let _ = tokio::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .await;
            }
        }
        let mut statuses = Vec::new();
        for child in &mut self.children {
            match tokio::time::timeout(Duration::from_secs(45), child.wait()).await {
                Ok(Ok(status)) => statuses.push(status.code()),
                _ => {
                    let _ = child.kill().await;
                    statuses.push(None);
                }
            }
        }
        for index in 0..self.children.len() {
            let _ = std::fs::remove_file(self.dir.join(format!("worker-{index}.pid")));
        }
        statuses
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum FaultKind {
    WorkerKill,
    BrokerRestart,
    DatabaseRestart,
    LeaderKill,
    DatabaseFailover,
}

impl FaultKind {
    fn name(self) -> &'static str {
        match self {
            FaultKind::WorkerKill => "worker SIGKILL",
            FaultKind::BrokerRestart => "broker restart",
            FaultKind::DatabaseRestart => "database restart",
            FaultKind::LeaderKill => "queue leader SIGKILL",
            FaultKind::DatabaseFailover => "database failover",
        }
    }
}

/// One fault as it happened.
#[derive(Debug, Clone)]
struct Fault {
    kind: FaultKind,
    how: String,
    at: Instant,
    /// When the service was back (restarted; for a worker kill, the new process started; for
    /// a leader kill, the kill itself: the other nodes serve on).
    back: Instant,
    /// From the fault until every worker answered `/readyz` with 200 again.
    ready_after: Duration,
    /// For a failover: from the fault until Patroni named the other node the primary.
    promoted_after: Option<Duration>,
}

/// The faults in the order they happen: each kind spread evenly over the run.
fn schedule(plan: &Plan) -> Vec<FaultKind> {
    let mut placed: Vec<(f64, FaultKind)> = Vec::new();
    for (kind, count) in [
        (FaultKind::WorkerKill, plan.kills),
        (FaultKind::BrokerRestart, plan.broker_restarts),
        (FaultKind::DatabaseRestart, plan.db_restarts),
        (FaultKind::LeaderKill, plan.leader_kills),
        (FaultKind::DatabaseFailover, plan.failovers),
    ] {
        for index in 0..count {
            placed.push(((index as f64 + 0.5) / count as f64, kind));
        }
    }
    placed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    placed.into_iter().map(|(_, kind)| kind).collect()
}

/// Everything one run needs.
struct Run {
    settings: Settings,
    faults: FaultTargets,
    cluster: Option<PgCluster>,
    plan: Plan,
    pool: sqlx::PgPool,
    cards: Vec<String>,
}

/// A job the run published, and what must answer it.
#[derive(Debug, Clone)]
struct Expected {
    routing_key: String,
    /// For a malformed message: its dead-letter queue and reason.
    dead_letter: Option<(String, &'static str)>,
}

#[derive(Debug, Default)]
struct Published {
    expected: HashMap<String, Expected>,
    duplicates: u64,
    /// Chains that could not finish, with why.
    broken: Vec<String>,
}

impl Run {
    async fn new(
        settings: Settings,
        faults: FaultTargets,
        cluster: Option<PgCluster>,
        plan: Plan,
    ) -> anyhow::Result<Run> {
        // A run starts from nothing: the previous run's database and outcome queue go first.
        simflow_runtime::db::drop_database(&settings.database.url).await?;
        let (pool, _) =
            world::migrate_with_org(&settings, std::path::Path::new("config/org")).await?;
        let cards = {
            let mut connection = pool.acquire().await?;
            let receipt = world::receipt(
                "130041",
                world::NORMAL,
                "DU06",
                world::FIRST_BODY,
                u64::try_from(plan.chains)?,
            );
            world::receive_cards(&mut connection, &receipt, RECEIPT_REFERENCE).await?
        };
        Ok(Run {
            settings,
            faults,
            cluster,
            plan,
            pool,
            cards,
        })
    }

    async fn execute(self) -> anyhow::Result<Report> {
        let plan = self.plan.clone();
        let mut rng = StdRng::seed_from_u64(plan.seed);
        let client = world::central_client(&self.settings, "simflow-chaos").await?;
        client.close().await;

        let outcomes: Shared = Arc::new(Mutex::new(Outcomes::default()));
        let stop_collecting = CancellationToken::new();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let collector = tokio::spawn(collect(
            self.settings.amqp.addresses(),
            Arc::clone(&outcomes),
            stop_collecting.clone(),
            ready_tx,
        ));
        tokio::time::timeout(Duration::from_secs(30), ready_rx)
            .await
            .context("the outcome queue was not declared within 30 s")??;

        let mut fleet = Fleet::start(&self.settings, self.faults.workers_dir(), plan.workers)?;
        fleet.all_ready(Instant::now()).await?;
        println!(
            "chaos ({}): {} jobs ({} chains of {CHAIN_STEPS} + {} malformed), {} worker processes, faults every {:?}, seed {}",
            plan.mode,
            plan.jobs(),
            plan.chains,
            plan.malformed,
            plan.workers,
            plan.interval,
            plan.seed
        );

        let sender = Arc::new(Sender {
            addresses: self.settings.amqp.addresses(),
            client: tokio::sync::Mutex::new(None),
            confirmed: AtomicU64::new(0),
            again: AtomicU64::new(0),
        });
        let published = Arc::new(Mutex::new(Published::default()));
        let load_started = Instant::now();
        // The load comes in waves, each released shortly before a fault so the fault finds
        // jobs in flight: chain i in wave i·waves/chains, malformed message j in wave j mod waves.
        let waves = plan.waves();
        let (release, released) = tokio::sync::watch::channel(0_usize);

        // The chains; ~10% of jobs published twice.
        let mut chains = Vec::with_capacity(plan.chains);
        for (index, iccid) in self.cards.iter().enumerate() {
            let agent = if index % 2 == 0 { "ESS0601" } else { "ESS0602" };
            chains.push(chain(iccid, agent)?);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (index, chain) in chains.iter().cloned().enumerate() {
            let wave = index * waves / plan.chains;
            // Spread over 8 s after the release, so some chains start while the fault is on
            // (their first publish then meets a broker that is going or gone).
            let stagger = Duration::from_millis(rng.random_range(0..STAGGER_MS));
            let mut released = released.clone();
            let duplicates: Vec<u8> = (0..CHAIN_STEPS)
                .map(|_| match rng.random_range(0..20) {
                    0 => 1, // again at once
                    1 => 2, // again after the outcome
                    _ => 0,
                })
                .collect();
            let sender = Arc::clone(&sender);
            let outcomes = Arc::clone(&outcomes);
            let published = Arc::clone(&published);
            tasks.spawn(async move {
                if released.wait_for(|count| *count > wave).await.is_err() {
                    return;
                }
                tokio::time::sleep(stagger).await;
                run_chain(&chain, &duplicates, &sender, &outcomes, &published).await;
            });
        }
        // The malformed messages; every fifth one twice.
        let malformed: Vec<(Job, &'static str)> = (0..plan.malformed).map(malformed).collect();
        {
            let sender = Arc::clone(&sender);
            let published = Arc::clone(&published);
            let messages = malformed.clone();
            let mut released = released.clone();
            tasks.spawn(async move {
                for wave in 0..waves {
                    if released.wait_for(|count| *count > wave).await.is_err() {
                        return;
                    }
                    let in_wave = messages.len().div_ceil(waves).max(1);
                    let pause =
                        Duration::from_millis(STAGGER_MS / u64::try_from(in_wave).unwrap_or(1));
                    for (index, (job, reason)) in messages.iter().enumerate() {
                        if index % waves != wave {
                            continue;
                        }
                        tokio::time::sleep(pause).await;
                        if let Ok(mut published) = published.lock() {
                            published.expected.insert(
                                job.id.clone(),
                                Expected {
                                    routing_key: format!("{}.failed", job.queue.key()),
                                    dead_letter: Some((job.queue.dead_letter_queue(), *reason)),
                                },
                            );
                        }
                        let times = if index % 5 == 0 { 2 } else { 1 };
                        for time in 0..times {
                            if let Err(error) = sender.send(job).await
                                && let Ok(mut published) = published.lock()
                            {
                                published
                                    .broken
                                    .push(format!("malformed {}: {error:#}", job.id));
                            }
                            if time == 1
                                && let Ok(mut published) = published.lock()
                            {
                                published.duplicates += 1;
                            }
                        }
                    }
                }
            });
        }

        // The faults, one at a time.
        let mut faults = Vec::new();
        let mut exited = 0;
        let (mut broker_restarts, mut db_restarts, mut failovers) = (0, 0, 0);
        for (index, kind) in schedule(&plan).into_iter().enumerate() {
            let wave_at = Instant::now();
            release.send_replace(index + 1);
            tokio::time::sleep(Duration::from_millis(rng.random_range(200..1500))).await;
            exited += fleet.restart_exited()?;
            let mut at = Instant::now();
            let mut promoted_after = None;
            let how = match kind {
                FaultKind::WorkerKill => {
                    let victim = rng.random_range(0..plan.workers);
                    fleet.kill(victim).await?;
                    format!("worker {victim}")
                }
                FaultKind::BrokerRestart => {
                    broker_restarts += 1;
                    let kill = broker_restarts % 2 == 0;
                    self.faults
                        .services()?
                        .run("restart-broker", if kill { &["--kill"] } else { &[] })
                        .await?;
                    (if kill { "SIGKILL" } else { "graceful" }).to_owned()
                }
                FaultKind::DatabaseRestart => {
                    db_restarts += 1;
                    let immediate = db_restarts % 2 == 0;
                    self.faults
                        .services()?
                        .run("restart-db", if immediate { &["--immediate"] } else { &[] })
                        .await?;
                    (if immediate { "immediate" } else { "fast" }).to_owned()
                }
                FaultKind::LeaderKill => {
                    let management = Management::new(&self.settings.amqp);
                    let (queue, leader) =
                        crate::cluster::leader_of_busiest_queue(&management, "/").await?;
                    at = Instant::now();
                    self.faults.cluster()?.kill(&leader).await?;
                    format!("{leader}, leading {queue}")
                }
                FaultKind::DatabaseFailover => {
                    failovers += 1;
                    let how = if failovers % 2 == 1 {
                        Failover::Kill
                    } else {
                        Failover::Switchover
                    };
                    let cluster = self
                        .cluster
                        .as_ref()
                        .context("a failover needs the database cluster")?;
                    promoted_after = Some(cluster.fail_over(how, READY_PATIENCE).await?);
                    (match how {
                        Failover::Kill => "primary SIGKILLed",
                        Failover::Switchover => "switchover",
                    })
                    .to_owned()
                }
            };
            let back = if kind == FaultKind::LeaderKill {
                at
            } else {
                Instant::now()
            };
            let ready_after = fleet.all_ready(at).await?;
            if kind == FaultKind::LeaderKill {
                // The node comes back (and rejoins) once the workers moved, so the next kill
                // again finds three nodes.
                let restarting = Instant::now();
                self.faults.cluster()?.start().await?;
                eprintln!(
                    "chaos: the killed node runs again after {:.1}s",
                    restarting.elapsed().as_secs_f64()
                );
            }
            eprintln!(
                "chaos: {:>6.1}s {} ({how}): {}every worker ready after {:.1}s",
                load_started.elapsed().as_secs_f64(),
                kind.name(),
                promoted_after
                    .map(|promoted| format!("new primary after {:.1}s, ", promoted.as_secs_f64()))
                    .unwrap_or_default(),
                ready_after.as_secs_f64()
            );
            faults.push(Fault {
                kind,
                how,
                at,
                back,
                ready_after,
                promoted_after,
            });
            // At least an interval between waves, so the system is seen working between faults.
            tokio::time::sleep_until((wave_at + plan.interval).into()).await;
        }
        release.send_replace(waves);

        while let Some(joined) = tasks.join_next().await {
            joined?;
        }
        let publishing_done = load_started.elapsed();
        exited += fleet.restart_exited()?;

        // Drain: every job answered, the work queues empty, then a quiet moment for late copies.
        let expected = published
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .expected
            .clone();
        let drain_deadline = Instant::now() + OUTCOME_PATIENCE;
        while Instant::now() < drain_deadline
            && expected
                .keys()
                .any(|id| outcome_of(&outcomes, id).is_none())
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let management = Management::new(&self.settings.amqp);
        let queues_empty = wait_for_empty_queues(&management).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let drained = load_started.elapsed();
        stop_collecting.cancel();
        let _ = collector.await;
        let statuses = fleet.stop().await;

        let published = Arc::try_unwrap(published)
            .map_err(|_| anyhow::anyhow!("publishers still running"))?
            .into_inner()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        let outcomes = Arc::try_unwrap(outcomes)
            .map_err(|_| anyhow::anyhow!("collector still running"))?
            .into_inner()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        let mut report = Report {
            plan,
            confirmed: sender.confirmed.load(Ordering::Relaxed),
            published_again: sender.again.load(Ordering::Relaxed),
            duplicates: published.duplicates,
            broken: published.broken.clone(),
            faults,
            exited,
            statuses,
            publishing_done,
            drained,
            queues_empty,
            ..Report::default()
        };
        report.check_outcomes(&published, &outcomes);
        report.check_effects(&self.pool, &chains).await?;
        report
            .check_dead_letters(&self.settings, &published)
            .await?;
        self.pool.close().await;
        Ok(report)
    }
}

async fn run_chain(
    chain: &Chain,
    duplicates: &[u8],
    sender: &Sender,
    outcomes: &Shared,
    published: &Mutex<Published>,
) {
    for ((job, expect), duplicate) in chain.steps.iter().zip(duplicates) {
        if let Ok(mut published) = published.lock() {
            published.expected.insert(
                job.id.clone(),
                Expected {
                    routing_key: (*expect).to_owned(),
                    dead_letter: None,
                },
            );
        }
        let sent = if *duplicate == 1 {
            let (first, second) = tokio::join!(sender.send(job), sender.send(job));
            first.and(second)
        } else {
            sender.send(job).await
        };
        if *duplicate != 0
            && let Ok(mut published) = published.lock()
        {
            published.duplicates += 1;
        }
        if let Err(error) = sent {
            note_broken(published, format!("{}: {error:#}", chain.iccid));
            return;
        }
        let deadline = Instant::now() + OUTCOME_PATIENCE;
        let answer = loop {
            if let Some(answer) = outcome_of(outcomes, &job.id) {
                break answer;
            }
            if Instant::now() > deadline {
                note_broken(
                    published,
                    format!(
                        "{}: no outcome for {} within {OUTCOME_PATIENCE:?}",
                        chain.iccid, job.id
                    ),
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if *duplicate == 2
            && let Err(error) = sender.send(job).await
        {
            note_broken(published, format!("{}: {error:#}", chain.iccid));
            return;
        }
        if answer != *expect {
            note_broken(
                published,
                format!(
                    "{}: {} answered {answer}, expected {expect}",
                    chain.iccid, job.id
                ),
            );
            return;
        }
    }
}

fn note_broken(published: &Mutex<Published>, why: String) {
    eprintln!("chaos: chain broken: {why}");
    if let Ok(mut published) = published.lock() {
        published.broken.push(why);
    }
}

/// Waits (bounded) until every work and retry queue is empty twice in a row (the management
/// API's counters lag by a few seconds); whether they were.
async fn wait_for_empty_queues(management: &Management) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut empty_in_a_row = 0;
    while Instant::now() < deadline {
        if let Ok(queues) = management.queues("/").await {
            let busy = queues.iter().any(|queue| {
                let name = &queue.counters.name;
                name.starts_with("simflow.")
                    && !name.ends_with(".dlq")
                    && name != "simflow.events.unrouted"
                    && queue.counters.messages > 0
            });
            empty_in_a_row = if busy { 0 } else { empty_in_a_row + 1 };
            if empty_in_a_row >= 2 {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    false
}

/// The run's figures and checks.
#[derive(Debug, Default)]
struct Report {
    plan: Plan,
    confirmed: u64,
    published_again: u64,
    duplicates: u64,
    broken: Vec<String>,
    faults: Vec<Fault>,
    exited: usize,
    statuses: Vec<Option<i32>>,
    publishing_done: Duration,
    drained: Duration,
    queues_empty: bool,
    jobs_answered_once: usize,
    jobs: usize,
    messages: u64,
    distinct_events: usize,
    lost: Vec<String>,
    doubled: Vec<String>,
    unexpected: Vec<String>,
    strays: u64,
    arrivals: Vec<Instant>,
    cards_right: usize,
    cards: usize,
    card_problems: Vec<String>,
    reconcile_cards: i64,
    reconcile_entries: i64,
    reconcile_mismatches: Vec<String>,
    malformed_held_once: usize,
    malformed: usize,
    dlq_problems: Vec<String>,
    dlq_total: usize,
}

impl Report {
    fn check_outcomes(&mut self, published: &Published, outcomes: &Outcomes) {
        self.jobs = published.expected.len();
        self.messages = outcomes.messages;
        self.strays = outcomes.without_job;
        self.distinct_events = outcomes.by_job.values().map(BTreeMap::len).sum();
        self.arrivals = outcomes.arrivals.clone();
        self.arrivals.sort();
        for (id, expected) in &published.expected {
            match outcomes.by_job.get(id) {
                None => self.lost.push(id.clone()),
                Some(events) if events.len() > 1 => self.doubled.push(format!(
                    "{id}: {} different outcomes ({})",
                    events.len(),
                    events.values().cloned().collect::<Vec<_>>().join(", ")
                )),
                Some(events) => {
                    self.jobs_answered_once += 1;
                    let answer = events.values().next().cloned().unwrap_or_default();
                    if answer != expected.routing_key {
                        self.unexpected.push(format!(
                            "{id}: answered {answer}, expected {}",
                            expected.routing_key
                        ));
                    }
                }
            }
        }
        for id in outcomes.by_job.keys() {
            if !published.expected.contains_key(id) {
                self.unexpected
                    .push(format!("{id}: an outcome for a job the run never sent"));
            }
        }
    }

    async fn check_effects(&mut self, pool: &sqlx::PgPool, chains: &[Chain]) -> anyhow::Result<()> {
        let mut connection = pool.acquire().await?;
        self.cards = chains.len();
        let home = format!("warehouse:{}", world::HEXI_TARGET);
        for chain in chains {
            let Some(history) =
                simflow_inventory::queries::card_history(&mut connection, &chain.iccid).await?
            else {
                self.card_problems
                    .push(format!("{}: no such card", chain.iccid));
                continue;
            };
            let references: Vec<String> = history
                .entries
                .iter()
                .map(|entry| entry.reference.clone().unwrap_or_default())
                .collect();
            if history.location == home
                && history.state == "blank"
                && references == chain.references
            {
                self.cards_right += 1;
            } else {
                let moves: Vec<String> = history
                    .entries
                    .iter()
                    .map(|entry| format!("{}→{}", entry.event, entry.to_location))
                    .collect();
                self.card_problems.push(format!(
                    "{}: {} {} after {} ledger entries ({}), expected {} ending in {home}",
                    chain.iccid,
                    history.state,
                    history.location,
                    moves.len(),
                    moves.join(", "),
                    chain.references.len()
                ));
            }
        }
        let reconciliation = simflow_inventory::queries::reconcile(&mut connection, 20).await?;
        self.reconcile_cards = reconciliation.cards;
        self.reconcile_entries = reconciliation.entries;
        self.reconcile_mismatches = reconciliation
            .mismatches
            .iter()
            .map(|mismatch| {
                format!(
                    "{} {}: ledger {:?}, card table {:?}",
                    mismatch.iccid, mismatch.problem, mismatch.ledger, mismatch.current
                )
            })
            .collect();
        Ok(())
    }

    async fn check_dead_letters(
        &mut self,
        settings: &Settings,
        published: &Published,
    ) -> anyhow::Result<()> {
        let client = Client::connect_any(&settings.amqp.addresses(), "simflow-chaos-dlq").await?;
        let mut held: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for queue in JobQueue::ALL {
            let letters = simflow_runtime::deadletter::list(
                client.connection(),
                &queue.dead_letter_queue(),
                usize::MAX,
            )
            .await?;
            for letter in letters {
                self.dlq_total += 1;
                held.entry(
                    letter
                        .message_id
                        .unwrap_or_else(|| "(no message id)".into()),
                )
                .or_default()
                .push((queue.dead_letter_queue(), letter.reason_code));
            }
        }
        client.close().await;
        for (id, expected) in &published.expected {
            let Some((queue, reason)) = &expected.dead_letter else {
                continue;
            };
            self.malformed += 1;
            match held.remove(id) {
                None => self
                    .dlq_problems
                    .push(format!("{id}: not in {queue} (expected {reason})")),
                Some(copies)
                    if copies.len() == 1 && copies[0].0 == *queue && copies[0].1 == *reason =>
                {
                    self.malformed_held_once += 1;
                }
                Some(copies) => self.dlq_problems.push(format!(
                    "{id}: {} copies {copies:?}, expected one in {queue} with {reason}",
                    copies.len()
                )),
            }
        }
        for (id, copies) in held {
            self.dlq_problems
                .push(format!("{id}: dead-lettered but well-formed: {copies:?}"));
        }
        Ok(())
    }

    /// Recovery figures of one fault kind, min/median/max: (count, every worker ready again,
    /// the first new outcome once the service was back), both counted from the fault.
    fn recovery(&self, kind: FaultKind) -> (usize, [Duration; 3], Option<[Duration; 3]>) {
        let faults: Vec<&Fault> = self.faults.iter().filter(|f| f.kind == kind).collect();
        let ready: Vec<Duration> = faults.iter().map(|fault| fault.ready_after).collect();
        let next: Vec<Duration> = faults
            .iter()
            .filter_map(|fault| {
                let after = self.arrivals.partition_point(|at| *at <= fault.back);
                self.arrivals
                    .get(after)
                    .map(|at| at.duration_since(fault.at))
            })
            .collect();
        let next = (next.len() == faults.len() && !next.is_empty()).then(|| spread_of(next));
        (faults.len(), spread_of(ready), next)
    }

    /// From each leader kill to the last outcome of the run (how long until the load was
    /// through), min/median/max.
    fn stall_after_leader_kills(&self) -> Option<[Duration; 3]> {
        let last = self.arrivals.last()?;
        let to_end: Vec<Duration> = self
            .faults
            .iter()
            .filter(|fault| fault.kind == FaultKind::LeaderKill)
            .map(|fault| last.saturating_duration_since(fault.at))
            .collect();
        (!to_end.is_empty()).then(|| spread_of(to_end))
    }

    fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        let mut fail = |what: &str, items: &[String]| {
            if !items.is_empty() {
                let shown: Vec<&str> = items.iter().take(5).map(String::as_str).collect();
                failures.push(format!(
                    "{what}: {} ({}{})",
                    items.len(),
                    shown.join("; "),
                    if items.len() > 5 { "; …" } else { "" }
                ));
            }
        };
        fail("lost (no outcome)", &self.lost);
        fail("doubled (two different outcomes)", &self.doubled);
        fail("unexpected outcomes", &self.unexpected);
        fail("chains broken", &self.broken);
        fail("cards with a wrong ledger or place", &self.card_problems);
        fail("ledger disagreements", &self.reconcile_mismatches);
        fail("dead-letter queues", &self.dlq_problems);
        if self.strays > 0 {
            failures.push(format!(
                "{} events without x-simflow-job-message-id",
                self.strays
            ));
        }
        if self.exited > 0 {
            failures.push(format!("{} worker(s) exited on their own", self.exited));
        }
        if self.statuses.iter().any(|status| *status != Some(0)) {
            failures.push(format!(
                "workers did not all stop with 0 on SIGTERM: {:?}",
                self.statuses
            ));
        }
        if !self.queues_empty {
            failures.push("the work queues did not drain within 120 s".into());
        }
        failures
    }

    fn print(&self, elapsed: Duration) {
        let plan = &self.plan;
        let kills = self
            .faults
            .iter()
            .filter(|f| f.kind == FaultKind::WorkerKill)
            .count();
        let hows = |kind: FaultKind| {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for fault in self.faults.iter().filter(|f| f.kind == kind) {
                *counts.entry(fault.how.as_str()).or_default() += 1;
            }
            counts
                .iter()
                .map(|(how, count)| format!("{count} {how}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!();
        println!(
            "chaos ({}) done in {:.0} s (load and faults {:.0} s, drained at {:.0} s)",
            plan.mode,
            elapsed.as_secs_f64(),
            self.publishing_done.as_secs_f64(),
            self.drained.as_secs_f64()
        );
        let row = |check: &str, figure: String, ok: Option<bool>| {
            let verdict = match ok {
                Some(true) => "ok",
                Some(false) => "FAIL",
                None => "",
            };
            println!("| {check:<62} | {figure:>26} | {verdict:<6} |");
        };
        println!("| {:<62} | {:>26} | {:<6} |", "check", "figure", "result");
        println!("|{}|{}|{}|", "-".repeat(64), "-".repeat(28), "-".repeat(8));
        row(
            "jobs (distinct message ids): chains + malformed",
            format!(
                "{} ({} + {})",
                self.jobs,
                plan.chains * CHAIN_STEPS,
                self.malformed
            ),
            None,
        );
        row(
            "published twice (same id, same body)",
            self.duplicates.to_string(),
            None,
        );
        row(
            "publishes confirmed / tries repeated (broker away)",
            format!("{} / {}", self.confirmed, self.published_again),
            None,
        );
        row(
            "faults: worker SIGKILLs",
            kills.to_string(),
            Some(kills >= plan.kills),
        );
        row(
            "faults: broker restarts",
            hows(FaultKind::BrokerRestart),
            None,
        );
        row(
            "faults: database restarts",
            hows(FaultKind::DatabaseRestart),
            None,
        );
        if plan.failovers > 0 {
            row(
                "faults: database failovers",
                hows(FaultKind::DatabaseFailover),
                Some(
                    self.faults
                        .iter()
                        .filter(|f| f.kind == FaultKind::DatabaseFailover)
                        .count()
                        >= plan.failovers,
                ),
            );
        }
        row(
            "jobs with exactly one outcome",
            format!("{} of {}", self.jobs_answered_once, self.jobs),
            Some(self.jobs_answered_once == self.jobs),
        );
        row(
            "outcome events: distinct ids / messages received",
            format!("{} / {}", self.distinct_events, self.messages),
            None,
        );
        row(
            "lost (no outcome)",
            self.lost.len().to_string(),
            Some(self.lost.is_empty()),
        );
        row(
            "doubled (two different outcomes for one job)",
            self.doubled.len().to_string(),
            Some(self.doubled.is_empty()),
        );
        row(
            "unexpected outcome (not the chain's next event)",
            self.unexpected.len().to_string(),
            Some(self.unexpected.is_empty()),
        );
        row(
            "cards whose ledger holds each movement once",
            format!("{} of {}", self.cards_right, self.cards),
            Some(self.cards_right == self.cards && self.card_problems.is_empty()),
        );
        row(
            "ledger reconciles: cards, entries, disagreements",
            format!(
                "{}, {}, {}",
                self.reconcile_cards,
                self.reconcile_entries,
                self.reconcile_mismatches.len()
            ),
            Some(self.reconcile_mismatches.is_empty()),
        );
        row(
            "DLQ: malformed held exactly once / all dead letters",
            format!(
                "{} of {} / {}",
                self.malformed_held_once, self.malformed, self.dlq_total
            ),
            Some(self.dlq_problems.is_empty() && self.malformed_held_once == self.malformed),
        );
        row(
            "workers that exited on their own",
            self.exited.to_string(),
            Some(self.exited == 0),
        );
        row(
            "workers stopped by SIGTERM with status 0",
            format!(
                "{} of {}",
                self.statuses.iter().filter(|s| **s == Some(0)).count(),
                self.statuses.len()
            ),
            Some(self.statuses.iter().all(|s| *s == Some(0))),
        );
        if plan.leader_kills > 0 {
            row(
                "faults: queue leader SIGKILLs",
                format!(
                    "{}",
                    self.faults
                        .iter()
                        .filter(|f| f.kind == FaultKind::LeaderKill)
                        .count()
                ),
                Some(
                    self.faults
                        .iter()
                        .filter(|f| f.kind == FaultKind::LeaderKill)
                        .count()
                        >= plan.leader_kills,
                ),
            );
            for fault in self
                .faults
                .iter()
                .filter(|f| f.kind == FaultKind::LeaderKill)
            {
                println!("  killed {}", fault.how);
            }
        }
        for kind in [
            FaultKind::WorkerKill,
            FaultKind::BrokerRestart,
            FaultKind::DatabaseRestart,
            FaultKind::LeaderKill,
            FaultKind::DatabaseFailover,
        ] {
            let (count, ready, next) = self.recovery(kind);
            if count == 0 {
                continue;
            }
            let promoted: Vec<Duration> = self
                .faults
                .iter()
                .filter(|fault| fault.kind == kind)
                .filter_map(|fault| fault.promoted_after)
                .collect();
            if !promoted.is_empty() {
                row(
                    &format!("after a {}: new primary, min/median/max s", kind.name()),
                    seconds(&spread_of(promoted)),
                    None,
                );
            }
            row(
                &format!("after a {}: all ready again, min/median/max s", kind.name()),
                seconds(&ready),
                None,
            );
            row(
                &format!(
                    "after a {}: next new outcome, min/median/max s",
                    kind.name()
                ),
                next.map(|next| seconds(&next))
                    .unwrap_or_else(|| "-".into()),
                None,
            );
        }
        if let Some(stall) = self.stall_after_leader_kills() {
            row(
                "after a queue leader SIGKILL: last outcome, min/median/max s",
                seconds(&stall),
                None,
            );
        }
    }

    fn verdict(&self) -> anyhow::Result<()> {
        let failures = self.failures();
        if failures.is_empty() {
            println!("chaos: every check passed");
            return Ok(());
        }
        for failure in &failures {
            eprintln!("chaos: FAILED: {failure}");
        }
        bail!("{} chaos check(s) failed", failures.len())
    }
}

fn spread_of(mut durations: Vec<Duration>) -> [Duration; 3] {
    durations.sort();
    match durations.as_slice() {
        [] => [Duration::ZERO; 3],
        all => [all[0], all[all.len() / 2], all[all.len() - 1]],
    }
}

fn seconds(figures: &[Duration; 3]) -> String {
    figures
        .iter()
        .map(|d| format!("{:.1}", d.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(" / ")
}
