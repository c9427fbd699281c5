//! `simflow bench inventory`: a batch issue (prepare + commit) and a batch return of N cards
//! (default 100,000) through the real broker, workers and database, each next to the raw SQL
//! that does the same movement without rules, holds or ledger: one `UPDATE` over the same
//! number of rows of the same table, in the same run.

use std::time::{Duration, Instant};

use clap::Args;
use simflow_inventory::raw::{self, RawPlace};
use simflow_runtime::Settings;
use simflow_runtime::amqp::{Client, EventWatch, JobRoute};
use simflow_schemas::common::CardSelection;
use simflow_schemas::registry::Message;
use simflow_schemas::returns::{ReturnByRange, ReturnFee};

use crate::pipeline::{self, WorkerKind};
use crate::world::{self, HEXI_KEEPER, HEXI_TARGET, NORMAL, iccid};

/// Arguments of `bench inventory`.
#[derive(Debug, Args)]
pub struct InventoryBenchArgs {
    /// Cards per batch.
    #[arg(long, default_value_t = 100_000)]
    pub cards: u64,
}

const OURS_FIRST_BODY: u64 = 898_601_100_000_000_000;
const RAW_FIRST_BODY: u64 = 898_601_100_010_000_000;

/// Runs the benchmark.
pub async fn run(settings: Settings, args: InventoryBenchArgs) -> anyhow::Result<()> {
    let scratch = crate::scratch::Scratch::for_bench(&settings).await?;
    let result = measure(&scratch.settings, &args).await;
    scratch.remove().await;
    result
}

async fn answer<M: Message>(
    client: &Client,
    watch: &mut EventWatch,
    job: &M,
    expected: &str,
) -> anyhow::Result<Duration> {
    let message_id = uuid::Uuid::new_v4().to_string();
    let started = Instant::now();
    client
        .publish_job(job, &message_id, JobRoute::Default)
        .await?;
    let event = watch
        .next_for(&message_id, Duration::from_secs(600))
        .await?;
    anyhow::ensure!(
        event.routing_key == expected,
        "expected {expected}, got {} {}",
        event.routing_key,
        event.body
    );
    Ok(started.elapsed())
}

async fn raw<F: std::future::Future<Output = Result<u64, sqlx::Error>>>(
    statement: F,
    expected: u64,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let updated = statement.await?;
    anyhow::ensure!(
        updated == expected,
        "raw statement updated {updated} rows, expected {expected}"
    );
    Ok(started.elapsed())
}

fn line(operation: &str, cards: u64, ours: Duration, raw: Duration) {
    println!(
        "{operation:<34} {cards:>8} {:>11.3} {:>11.3} {:>7.2}x",
        ours.as_secs_f64(),
        raw.as_secs_f64(),
        ours.as_secs_f64() / raw.as_secs_f64().max(f64::EPSILON)
    );
}

async fn measure(settings: &Settings, args: &InventoryBenchArgs) -> anyhow::Result<()> {
    let (pool, _) = world::migrate_with_org(settings, std::path::Path::new("config/org")).await?;
    {
        let mut connection = pool.acquire().await?;
        for first_body in [OURS_FIRST_BODY, RAW_FIRST_BODY] {
            let receipt = world::receipt(HEXI_TARGET, NORMAL, "DU06", first_body, args.cards);
            world::receive_cards(&mut connection, &receipt, "bench").await?;
        }
    }
    raw::analyze(&pool).await?;
    let (ours_first, ours_last) = (
        iccid(OURS_FIRST_BODY)?,
        iccid(OURS_FIRST_BODY + args.cards - 1)?,
    );
    let (raw_first, raw_last) = (
        iccid(RAW_FIRST_BODY)?,
        iccid(RAW_FIRST_BODY + args.cards - 1)?,
    );

    let client = world::central_client(settings, "simflow-bench-client").await?;
    let mut watch = client.watch_events(&["issue.*", "return.*"]).await?;
    let workers = pipeline::start_own(settings, &pool, &[WorkerKind::Issue, WorkerKind::Return])?;

    let batch_id = uuid::Uuid::new_v4();
    let ours = CardSelection::Range {
        first: ours_first.clone(),
        last: ours_last.clone(),
    };
    let prepare = world::issue_prepare(batch_id, "ESS0601", NORMAL, ours);
    let prepared = answer(&client, &mut watch, &prepare, "issue.prepared").await?;
    let commit = world::issue_commit(batch_id);
    let committed = answer(&client, &mut watch, &commit, "issue.committed").await?;
    let raw_issue = raw(
        raw::move_range(&pool, &raw_first, &raw_last, RawPlace::Agent("ESS0601")),
        args.cards,
    )
    .await?;

    let give_back = ReturnByRange {
        return_id: uuid::Uuid::new_v4(),
        staff_id: HEXI_KEEPER.into(),
        warehouse: HEXI_TARGET.into(),
        agent_ess_code: "ESS0601".into(),
        first: ours_first,
        last: ours_last,
        fee: ReturnFee {
            return_amount_fen: 0,
        },
    };
    let returned = answer(&client, &mut watch, &give_back, "return.committed").await?;
    let raw_return = raw(
        raw::move_range(
            &pool,
            &raw_first,
            &raw_last,
            RawPlace::Warehouse(HEXI_TARGET),
        ),
        args.cards,
    )
    .await?;

    println!(
        "bench inventory: {} cards per batch, through broker + worker + PostgreSQL vs one raw UPDATE",
        args.cards
    );
    println!(
        "{:<34} {:>8} {:>11} {:>11} {:>8}",
        "operation", "cards", "simflow s", "raw SQL s", "ratio"
    );
    line(
        "batch issue (prepare + commit)",
        args.cards,
        prepared + committed,
        raw_issue,
    );
    line("  prepare (rules + hold)", args.cards, prepared, raw_issue);
    line("  commit (move + ledger)", args.cards, committed, raw_issue);
    line("batch return (range)", args.cards, returned, raw_return);
    workers.stop().await?;
    client.close().await;
    pool.close().await;
    Ok(())
}
