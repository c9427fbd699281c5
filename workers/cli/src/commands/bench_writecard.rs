//! `simflow bench writecard`: write requests per second through the central write-card worker
//! (checks, reservations, key look-up and decryption, script building, sealing, routing to the
//! outlet's queue), next to the raw broker round trip of same-size messages at the same
//! prefetch, in the same run. Outlets are not part of it: the clock stops when every request's
//! sealed script sits in the outlet's queue.

use std::time::{Duration, Instant};

use clap::Args;
use futures_util::StreamExt;
use simflow_runtime::Settings;
use simflow_runtime::amqp::JobRoute;
use simflow_schemas::writecard::WriteRequest;

use crate::pipeline::{self, WorkerKind};
use crate::world::{self, WritingPlan};

/// Arguments of `bench writecard`.
#[derive(Debug, Args)]
pub struct WritecardBenchArgs {
    /// Write requests per measurement.
    #[arg(long, default_value_t = 1000)]
    pub requests: usize,
    /// Prefetch values to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,50")]
    pub prefetch: Vec<u16>,
}

const FIRST_MSISDN: u64 = 13_000_000_000;
const FIRST_IMSI: u64 = 1_010_000_000_000;

/// Runs the benchmark.
pub async fn run(settings: Settings, args: WritecardBenchArgs) -> anyhow::Result<()> {
    let scratch = crate::scratch::Scratch::for_bench(&settings).await?;
    let mut settings = scratch.settings.clone();
    world::generate_kek(&mut settings.carddata, "bench");
    let result = measure(&settings, &args).await;
    scratch.remove().await;
    result
}

async fn measure(settings: &Settings, args: &WritecardBenchArgs) -> anyhow::Result<()> {
    let total = u64::try_from(args.requests * args.prefetch.len())?;
    let (pool, _) = world::migrate_with_org(settings, std::path::Path::new("config/org")).await?;
    let client = world::central_client(settings, "simflow-bench-client").await?;
    // Every card with its card data, a number for each, one outlet of the agent.
    let plan = WritingPlan {
        cards: total,
        with_card_data: usize::try_from(total)?,
        first_msisdn: FIRST_MSISDN,
        first_imsi: FIRST_IMSI,
        numbers: total,
        outlets: &["BENCH01"],
        agent: "ESS0601",
        by: "bench",
    };
    let iccids: Vec<String> = world::prepare_writing(&pool, &client, settings, &plan)
        .await?
        .cards
        .into_iter()
        .map(|card| card.iccid)
        .collect();
    // Issue every card to the outlet's agent.
    let mut watch = client.watch_events(&["issue.*"]).await?;
    let issue_workers = pipeline::start_own(settings, &pool, &[WorkerKind::Issue])?;
    world::issue_to_agent(
        &client,
        &mut watch,
        "ESS0601",
        total,
        Duration::from_secs(120),
    )
    .await?;
    issue_workers.stop().await?;

    let sample = WriteRequest {
        order_id: uuid::Uuid::new_v4(),
        outlet_code: "BENCH01".into(),
        staff_id: "C0601".into(),
        iccid: iccids[0].clone(),
        msisdn: FIRST_MSISDN.to_string(),
        customer_name: "张三丰".into(),
        package_code: "3G-96".into(),
    };
    let body_size = serde_json::to_vec(&sample)?.len();
    println!(
        "bench writecard: {} write.request.v1 jobs ({} bytes) per run; the clock stops when every sealed script is routed",
        args.requests, body_size
    );
    println!(
        "{:>9} {:>16} {:>18} {:>8}",
        "prefetch", "raw broker msg/s", "write requests/s", "ratio"
    );
    for (run, prefetch) in args.prefetch.iter().enumerate() {
        let raw = simflow_runtime::bench::raw_round_trip(&simflow_runtime::bench::RawLoad {
            uri: &settings.amqp.uri,
            body_size,
            count: args.requests,
            prefetch: *prefetch,
            window: 1000,
        })
        .await?;
        let mut run_settings = settings.clone();
        run_settings.amqp.prefetch = *prefetch;
        let workers = pipeline::start_own(&run_settings, &pool, &[WorkerKind::WriteCard])?;
        let offset = run * args.requests;
        let requests: Vec<WriteRequest> = (0..args.requests)
            .map(|index| WriteRequest {
                order_id: uuid::Uuid::new_v4(),
                iccid: iccids[offset + index].clone(),
                msisdn: (FIRST_MSISDN + (offset + index) as u64).to_string(),
                ..sample.clone()
            })
            .collect();
        let already: i64 = sqlx::query_scalar("SELECT count(*) FROM writecard.scripts")
            .fetch_one(&pool)
            .await?;
        let started = Instant::now();
        let mut publishing = futures_util::stream::iter(requests.iter())
            .map(|request| {
                let client = &client;
                async move {
                    client
                        .publish_job(
                            request,
                            &uuid::Uuid::new_v4().to_string(),
                            JobRoute::Default,
                        )
                        .await
                }
            })
            .buffer_unordered(500);
        while let Some(result) = publishing.next().await {
            result?;
        }
        let wanted = already + i64::try_from(args.requests)?;
        loop {
            let routed: i64 = sqlx::query_scalar("SELECT count(*) FROM writecard.scripts")
                .fetch_one(&pool)
                .await?;
            if routed >= wanted {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(600),
                "only {} of {} scripts routed",
                routed - already,
                args.requests
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ours = args.requests as f64 / started.elapsed().as_secs_f64();
        workers.stop().await?;
        println!(
            "{:>9} {:>16.0} {:>18.0} {:>7.1}%",
            prefetch,
            raw.per_second(),
            ours,
            100.0 * ours / raw.per_second()
        );
    }
    client.close().await;
    pool.close().await;
    Ok(())
}
