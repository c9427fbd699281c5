//! `simflow bench transfer`: transfer-create jobs per second through the real broker and
//! database at several prefetch values, each next to the raw broker round trip (publish with
//! confirms + consume with acks of same-size messages on a quorum queue) at the same prefetch.
//!
//! It works in a vhost and database of its own, created and dropped by the run, so it never
//! touches the demo's or anyone's data.

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
    /// Database pool size of the worker.
    #[arg(long, default_value_t = 16)]
    pub pool: u32,
}

fn job() -> TransferCreate {
    TransferCreate {
        transfer_id: uuid::Uuid::new_v4(),
        staff_id: "S0601".into(),
        source_warehouse: "130041".into(),
        target_warehouse: "13ZDF16".into(),
        card_type: "USIM128K_NORMAL".into(),
        cards: CardSelection::Quantity { quantity: 1 },
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

async fn measure(settings: &Settings, args: &TransferBenchArgs) -> anyhow::Result<()> {
    let pool = pipeline::migrate_all(settings).await?;
    {
        let mut connection = pool.acquire().await?;
        crate::commands::seed::load_org(&mut connection, std::path::Path::new("config/org"))
            .await?;
        let receipt = Receipt {
            warehouse: "130041".into(),
            card_type: "USIM128K_NORMAL".into(),
            department_id: "DU06".into(),
            first_body: 898_601_100_000_000_000,
            count: u64::try_from(args.jobs * args.prefetch.len())?,
        };
        org::receive_blank_cards(&mut connection, &receipt, "bench").await?;
    }
    let body_size = serde_json::to_vec(&job())?.len();
    println!(
        "bench transfer: {} transfer.create.v1 jobs ({} bytes) per run, worker pool {} connections, {} cores",
        args.jobs,
        body_size,
        args.pool,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "{:>9} {:>16} {:>16} {:>8}",
        "prefetch", "raw broker msg/s", "transfer jobs/s", "ratio"
    );
    for prefetch in &args.prefetch {
        let raw = simflow_runtime::bench::raw_round_trip(
            &settings.amqp.uri,
            body_size,
            args.jobs,
            *prefetch,
            1000,
        )
        .await?;
        let mut run_settings = settings.clone();
        run_settings.amqp.prefetch = *prefetch;
        let ours = run_pipeline(&run_settings, &pool, args.jobs).await?;
        let ours_rate = args.jobs as f64 / ours.as_secs_f64();
        println!(
            "{:>9} {:>16.0} {:>16.0} {:>7.1}%",
            prefetch,
            raw.per_second(),
            ours_rate,
            100.0 * ours_rate / raw.per_second()
        );
    }
    pool.close().await;
    Ok(())
}

async fn run_pipeline(
    settings: &Settings,
    pool: &sqlx::PgPool,
    jobs: usize,
) -> anyhow::Result<Duration> {
    let client = Client::connect(&settings.amqp.uri, "simflow-bench-client").await?;
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
    let ids: Vec<String> = (0..jobs)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let started = Instant::now();
    let publishing = futures_util::stream::iter(ids.iter())
        .map(|id| {
            let client = &client;
            async move { client.publish_job(&job(), id, JobRoute::Default).await }
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
        let mut answered = 0;
        while answered < jobs {
            let event = watch.next(Duration::from_secs(60)).await?;
            anyhow::ensure!(
                event.routing_key == "transfer.created",
                "unexpected answer {} {}",
                event.routing_key,
                event.body
            );
            answered += 1;
        }
        anyhow::Ok(())
    };
    let (published, answered) = tokio::join!(publish_all, answers);
    published?;
    answered?;
    let elapsed = started.elapsed();
    workers.stop().await?;
    client.close().await;
    Ok(elapsed)
}
