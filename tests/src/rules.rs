//! Harness of the fast tier: business rules against the real PostgreSQL, without a broker.
//!
//! One database per test process (`simflow_rules_<pid>`), migrated and seeded with the org data
//! once; every test works inside a transaction of its own that is rolled back when it drops,
//! so tests neither see nor disturb each other's rows. Cards come from ICCID ranges no other
//! test of the process uses ([`receive_cards`]), because two uncommitted inserts of one
//! ICCID would wait on each other. Databases of earlier processes that are gone are dropped
//! when the next one starts.
//!
//! Handlers run through `simflow_runtime::testing::TestWorker`: the worker's own batch path
//! (inbox claim, savepoints, recorded outcomes), minus the broker.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use simflow_inventory::issue::{InventorySettings, IssueHandler};
use simflow_runtime::Outcome;
use simflow_runtime::testing::TestWorker;
use simflow_runtime::worker::Verdict;
use simflow_schemas::common::CardSelection;
use sqlx::{Connection, PgConnection};

use crate::{postgres_base, test_settings, workspace_root};

static DATABASE: OnceLock<Result<String, String>> = OnceLock::new();
static NEXT_RANGE: AtomicU64 = AtomicU64::new(0);

/// Creates (once per process) the rules database and returns its URL.
fn database_url() -> anyhow::Result<String> {
    DATABASE
        .get_or_init(|| {
            // Its own runtime on its own thread: tests run on many runtimes, and a pool must
            // not outlive the runtime it was made on.
            std::thread::spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|error| error.to_string())?;
                runtime
                    .block_on(create_database())
                    .map_err(|error| format!("{error:#}"))
            })
            .join()
            .unwrap_or_else(|_| Err("creating the rules database panicked".to_owned()))
        })
        .clone()
        .map_err(|error| anyhow::anyhow!(error))
}

async fn create_database() -> anyhow::Result<String> {
    let mut admin = PgConnection::connect(&format!("{}/postgres", postgres_base()))
        .await
        .context("connecting to PostgreSQL")?;
    let stale: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datname LIKE 'simflow\\_rules\\_%'",
    )
    .fetch_all(&mut admin)
    .await?;
    for name in stale {
        let alive = name
            .rsplit('_')
            .next()
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
                .execute(&mut admin)
                .await?;
        }
    }
    let name = format!("simflow_rules_{}", std::process::id());
    let create = format!("CREATE DATABASE \"{name}\"");
    sqlx::raw_sql(sqlx::AssertSqlSafe(create))
        .execute(&mut admin)
        .await?;
    let url = format!("{}/{name}", postgres_base());
    let settings = test_settings("/", &url)?;
    let (pool, _) =
        simflow_cli::world::migrate_with_org(&settings, &workspace_root().join("config/org"))
            .await?;
    pool.close().await;
    Ok(url)
}

/// A connection to the rules database (created on first use). A test opens its transaction on
/// it with `begin()` and never commits: dropping it rolls everything back.
pub async fn connect() -> anyhow::Result<PgConnection> {
    let url = database_url()?;
    Ok(PgConnection::connect(&url).await?)
}

/// Receives `count` blank cards into `warehouse` from an ICCID range no other test of this
/// process uses; returns the ICCIDs in order.
pub async fn receive_cards(
    db: &mut PgConnection,
    warehouse: &str,
    card_type: &str,
    department: &str,
    count: u64,
) -> anyhow::Result<Vec<String>> {
    anyhow::ensure!(count <= 10_000, "at most 10,000 cards per call");
    let range = NEXT_RANGE.fetch_add(1, Ordering::Relaxed);
    let first_body = 898_601_900_000_000_000 + range * 10_000;
    let receipt = simflow_cli::world::receipt(warehouse, card_type, department, first_body, count);
    simflow_cli::world::receive_cards(db, &receipt, "rules test").await
}

/// A test worker of the batch issue handler with the default settings.
pub fn issue_worker() -> TestWorker<IssueHandler> {
    TestWorker::new(IssueHandler::new(
        &InventorySettings::default(),
        simflow_writecard::outlets::lookup_for_writers,
    ))
}

/// Receives `count` new normal cards of department DU06 into Hexi's target warehouse and issues
/// them to `agent` through the issue handler (prepare, then commit); returns their ICCIDs.
pub async fn issued_to(
    db: &mut PgConnection,
    agent: &str,
    count: u64,
) -> anyhow::Result<Vec<String>> {
    use simflow_cli::world::{HEXI_TARGET, NORMAL, issue_commit, issue_prepare};
    let iccids = receive_cards(db, HEXI_TARGET, NORMAL, "DU06", count).await?;
    let issue = issue_worker();
    let batch_id = uuid::Uuid::new_v4();
    let cards = CardSelection::Iccids {
        iccids: iccids.clone(),
    };
    let prepare = issue_prepare(batch_id, agent, NORMAL, cards);
    issue
        .run(db, &uuid::Uuid::new_v4().to_string(), prepare)
        .await?;
    let commit = issue_commit(batch_id);
    issue
        .run(db, &uuid::Uuid::new_v4().to_string(), commit)
        .await?;
    Ok(iccids)
}

/// Runs a query returning one bigint.
pub async fn count(db: &mut PgConnection, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(db)
        .await
        .expect("count query")
}

/// The event a verdict publishes first: routing key and body.
pub fn first_event(verdict: &Verdict) -> (String, serde_json::Value) {
    let outcome: &Outcome = match verdict {
        Verdict::Committed(outcome)
        | Verdict::Rejected(outcome)
        | Verdict::Duplicate(outcome)
        | Verdict::IdReused(outcome) => outcome,
        other => panic!("no event: {other:?}"),
    };
    let message = outcome.messages.first().expect("an event");
    (message.routing_key.clone(), message.body.clone())
}

/// The rejection code of a verdict, failing the test if it is not a rejection.
pub fn rejection_code(verdict: &Verdict) -> String {
    let Verdict::Rejected(_) = verdict else {
        panic!("expected a rejection, got {verdict:?}");
    };
    let (_, body) = first_event(verdict);
    body["reason"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}
