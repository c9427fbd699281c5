//! `simflow bench transfer`: transfer-create jobs per second through the real broker and
//! database at several prefetch values and group-commit batch sizes, each next to two raw
//! broker limits measured in the same run at the same prefetch:
//! - the raw round trip: publish with confirms + consume with acks of same-size messages on a
//!   quorum queue (one message per job);
//! - the raw request–reply: the same, plus one persistent confirmed answer per message to a
//!   second queue that another consumer drains — the broker traffic of one job and its
//!   outcome event, with no database.
//!
//! Each job transfers one card of its own, named in a list, so no job depends on how many
//! earlier jobs held cards (a quantity selection scans past every held card in the
//! warehouse; that cost is the database's, not the pipeline's, and would grow run after run).
//! Latency is from publish to the outcome event, under the bench's saturating load.
//!
//! It works in a vhost and database of its own, created and dropped by the run, so it never
//! touches the demo's or anyone's data.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::StreamExt;
use simflow_inventory::org::{self, Receipt};
use simflow_runtime::Settings;
use simflow_runtime::amqp::{Client, JobRoute};
use simflow_runtime::metrics::{Health, Metrics};
use simflow_runtime::shutdown::CancellationToken;
use simflow_schemas::common::CardSelection;
use simflow_schemas::transfer::TransferCreate;

use crate::pipeline::{self, WorkerKind};

/// Arguments of `bench transfer`.
#[derive(Debug, Args)]
pub struct TransferBenchArgs {
    /// Jobs per measurement.
    #[arg(long, default_value_t = 2000)]
    pub jobs: usize,
    /// Prefetch values to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,50,200")]
    pub prefetch: Vec<u16>,
    /// Group-commit batch sizes to measure at each prefetch (`worker.batch_size`; never more
    /// than the prefetch), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    pub batch: Vec<usize>,
    /// Database pool size of the worker.
    #[arg(long, default_value_t = 16)]
    pub pool: u32,
}

fn job(iccid: &str) -> TransferCreate {
    TransferCreate {
        transfer_id: uuid::Uuid::new_v4(),
        staff_id: "S0601".into(),
        source_warehouse: "130041".into(),
        target_warehouse: "13ZDF16".into(),
        card_type: "USIM128K_NORMAL".into(),
        cards: CardSelection::Iccids {
            iccids: vec![iccid.to_owned()],
        },
    }
}

/// Runs the benchmark.
pub async fn run(mut settings: Settings, args: TransferBenchArgs) -> anyhow::Result<()> {
    let name = format!(
        "simflow_bench_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let scratch = crate::scratch::Scratch::create(&settings, &name).await?;
    settings = scratch.settings.clone();
    settings.database.max_connections = args.pool;
    let result = measure(&settings, &args).await;
    scratch.remove().await;
    result
}

/// The (prefetch, batch size) pairs to measure: a batch never exceeds the prefetch.
fn runs(args: &TransferBenchArgs) -> Vec<(u16, usize)> {
    let mut runs = Vec::new();
    for prefetch in &args.prefetch {
        for batch in &args.batch {
            let batch = (*batch).min(usize::from(*prefetch)).max(1);
            if !runs.contains(&(*prefetch, batch)) {
                runs.push((*prefetch, batch));
            }
        }
    }
    runs
}

async fn measure(settings: &Settings, args: &TransferBenchArgs) -> anyhow::Result<()> {
    let pool = pipeline::migrate_all(settings).await?;
    let runs = runs(args);
    let cards = {
        let mut connection = pool.acquire().await?;
        crate::commands::seed::load_org(&mut connection, std::path::Path::new("config/org"))
            .await?;
        let receipt = Receipt {
            warehouse: "130041".into(),
            card_type: "USIM128K_NORMAL".into(),
            department_id: "DU06".into(),
            first_body: 898_601_100_000_000_000,
            count: u64::try_from(args.jobs * runs.len())?,
        };
        org::receive_blank_cards(&mut connection, &receipt, "bench").await?;
        simflow_inventory::raw::analyze(&pool).await?;
        org::receipt_iccids(&receipt)?
            .into_iter()
            .map(|iccid| iccid.into_string())
            .collect::<Vec<_>>()
    };
    let body_size = serde_json::to_vec(&job(&cards[0]))?.len();
    println!(
        "bench transfer: {} transfer.create.v1 jobs ({} bytes) per run, worker pool {} connections, {} batch slots, {} cores",
        args.jobs,
        body_size,
        args.pool,
        settings.worker.batch_concurrency,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "{:>8} {:>6} {:>10} {:>10} {:>10} {:>8} {:>8} {:>9} {:>9}",
        "prefetch",
        "batch",
        "raw msg/s",
        "raw+reply",
        "jobs/s",
        "of raw",
        "of r+r",
        "p50 ms",
        "p99 ms"
    );
    let mut raw_at: HashMap<u16, (f64, f64)> = HashMap::new();
    for (index, (prefetch, batch)) in runs.iter().enumerate() {
        let (raw, reply) = match raw_at.get(prefetch) {
            Some(limits) => *limits,
            None => {
                let load = simflow_runtime::bench::RawLoad {
                    uri: &settings.amqp.uri,
                    body_size,
                    count: args.jobs,
                    prefetch: *prefetch,
                    window: 1000,
                };
                let raw = simflow_runtime::bench::raw_round_trip(&load)
                    .await?
                    .per_second();
                let reply = simflow_runtime::bench::raw_request_reply(&load)
                    .await?
                    .per_second();
                raw_at.insert(*prefetch, (raw, reply));
                (raw, reply)
            }
        };
        let mut run_settings = settings.clone();
        run_settings.amqp.prefetch = *prefetch;
        run_settings.worker.batch_size = *batch;
        let own_cards = &cards[index * args.jobs..(index + 1) * args.jobs];
        let run = run_pipeline(&run_settings, &pool, own_cards).await?;
        let rate = args.jobs as f64 / run.elapsed.as_secs_f64();
        println!(
            "{:>8} {:>6} {:>10.0} {:>10.0} {:>10.0} {:>7.1}% {:>7.1}% {:>9.1} {:>9.1}",
            prefetch,
            batch,
            raw,
            reply,
            rate,
            100.0 * rate / raw,
            100.0 * rate / reply,
            run.percentile(0.50),
            run.percentile(0.99),
        );
    }
    println!(
        "raw msg/s: publish + consume of one message per job; raw+reply: plus one confirmed answer \
         per message, drained by another consumer (a job and its event, no database)"
    );
    pool.close().await;
    Ok(())
}

/// One measured run.
struct Run {
    elapsed: Duration,
    /// Publish-to-answer times, sorted, in milliseconds.
    latencies: Vec<f64>,
}

impl Run {
    fn percentile(&self, quantile: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((self.latencies.len() as f64 - 1.0) * quantile).round() as usize;
        self.latencies[rank.min(self.latencies.len() - 1)]
    }
}

async fn run_pipeline(
    settings: &Settings,
    pool: &sqlx::PgPool,
    cards: &[String],
) -> anyhow::Result<Run> {
    let client = Client::connect_any(&settings.amqp.addresses(), "simflow-bench-client").await?;
    client
        .declare(&simflow_schemas::topology::central_topology(
            &settings.topology_params(),
        ))
        .await?;

    let mut watch = client.watch_events(&["transfer.*"]).await?;
    let shutdown = CancellationToken::new();
    let workers = pipeline::start(
        settings,
        pool,
        &[WorkerKind::Transfer],
        Arc::new(Metrics::new()),
        Health::default(),
        shutdown.clone(),
    )?;
    let jobs: Vec<(String, TransferCreate)> = cards
        .iter()
        .map(|iccid| (uuid::Uuid::new_v4().to_string(), job(iccid)))
        .collect();
    let published_at: std::sync::Mutex<HashMap<String, Instant>> =
        std::sync::Mutex::new(HashMap::with_capacity(jobs.len()));
    let started = Instant::now();
    let publishing = futures_util::stream::iter(jobs.iter())
        .map(|(id, job)| {
            let client = &client;
            let published_at = &published_at;
            async move {
                published_at
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .insert(id.clone(), Instant::now());
                client.publish_job(job, id, JobRoute::Default).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(1000);
    let publish_all = async {
        let mut publishing = std::pin::pin!(publishing);
        while let Some(result) = publishing.next().await {
            result?;
        }
        anyhow::Ok(())
    };
    let answers = async {
        let mut answered_at = Vec::with_capacity(jobs.len());
        while answered_at.len() < jobs.len() {
            let event = watch.next(Duration::from_secs(60)).await?;
            anyhow::ensure!(
                event.routing_key == "transfer.created",
                "unexpected answer {} {}",
                event.routing_key,
                event.body
            );
            answered_at.push((event.correlation_id.unwrap_or_default(), Instant::now()));
        }
        anyhow::Ok(answered_at)
    };
    let (published, answered) = tokio::join!(publish_all, answers);
    published?;
    let answered = answered?;
    let elapsed = started.elapsed();
    workers.stop().await?;
    client.close().await;
    let published_at = published_at
        .into_inner()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    let mut latencies: Vec<f64> = answered
        .iter()
        .filter_map(|(id, at)| {
            let sent = published_at.get(id)?;
            Some(at.duration_since(*sent).as_secs_f64() * 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    Ok(Run { elapsed, latencies })
}
