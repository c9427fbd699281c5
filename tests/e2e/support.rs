//! Small helpers shared by the test modules.

use std::time::Duration;

use simflow_runtime::amqp::{EventWatch, JobRoute, ReceivedEvent};
use simflow_schemas::common::CardSelection;
use simflow_schemas::registry::Message;
use simflow_schemas::transfer::TransferCreate;
use simflow_tests::TestEnv;

/// How long a test waits for one answer.
pub const ANSWER: Duration = Duration::from_secs(20);

/// Publishes a job with a fresh message id and waits for its answer.
pub async fn send<M: Message>(
    env: &TestEnv,
    watch: &mut EventWatch,
    job: &M,
) -> anyhow::Result<ReceivedEvent> {
    let message_id = uuid::Uuid::new_v4().to_string();
    send_with_id(env, watch, job, &message_id).await
}

/// Publishes a job with a fresh message id (without waiting for its answer); returns the id.
pub async fn publish<M: Message>(env: &TestEnv, job: &M) -> anyhow::Result<String> {
    let message_id = uuid::Uuid::new_v4().to_string();
    env.client
        .publish_job(job, &message_id, JobRoute::Default)
        .await?;
    Ok(message_id)
}

/// Publishes each job with a fresh message id (without waiting for answers); returns the ids
/// in order.
pub async fn publish_each<M: Message>(env: &TestEnv, jobs: &[M]) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(jobs.len());
    for job in jobs {
        ids.push(publish(env, job).await?);
    }
    Ok(ids)
}

/// Publishes a job with a given message id and waits for its answer.
pub async fn send_with_id<M: Message>(
    env: &TestEnv,
    watch: &mut EventWatch,
    job: &M,
    message_id: &str,
) -> anyhow::Result<ReceivedEvent> {
    env.client
        .publish_job(job, message_id, JobRoute::Default)
        .await?;
    watch.next_for(message_id, ANSWER).await
}

/// The rejection code of an answer, failing the test if it is not a rejection.
pub fn rejection_code(event: &ReceivedEvent) -> String {
    assert!(
        event.routing_key.ends_with(".rejected"),
        "expected a rejection, got {} {}",
        event.routing_key,
        event.body
    );
    event.body["reason"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The per-card problems of an answer as (ICCID, reason code), sorted.
pub fn card_problems(event: &ReceivedEvent) -> Vec<(String, String)> {
    let mut problems: Vec<(String, String)> = event.body["problems"]
        .as_array()
        .expect("problems listed")
        .iter()
        .map(|problem| {
            (
                problem["iccid"].as_str().unwrap_or_default().to_owned(),
                problem["reason"]["code"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    problems.sort();
    problems
}

/// A transfer of normal cards from Hexi's secondary warehouse (130041) down to its target
/// warehouse (13ZDF16), asked for by the source keeper S0601.
pub fn hexi_transfer(transfer_id: uuid::Uuid, cards: CardSelection) -> TransferCreate {
    simflow_cli::world::transfer_create(
        transfer_id,
        "S0601",
        "130041",
        "13ZDF16",
        "USIM128K_NORMAL",
        cards,
    )
}

/// Receives `count` normal blank cards of department DU06 into Hexi's secondary warehouse
/// (130041), ICCIDs from body 898601100000000000.
pub async fn receive_hexi_normal(env: &TestEnv, count: u64) -> anyhow::Result<Vec<String>> {
    env.receive_cards(
        "130041",
        "USIM128K_NORMAL",
        "DU06",
        898_601_100_000_000_000,
        count,
    )
    .await
}

/// Ledger entries of one event (`issued`, `transfer_out`, …).
pub async fn ledger_entries(env: &TestEnv, event: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM inventory.card_ledger WHERE event = $1")
        .bind(event)
        .fetch_one(&env.pool)
        .await
        .expect("count query")
}

/// Cards a transfer holds.
pub async fn cards_on_transfers(env: &TestEnv) -> i64 {
    count(
        env,
        "SELECT count(*) FROM inventory.cards WHERE transfer_id IS NOT NULL",
    )
    .await
}

/// Cards a batch issue holds.
pub async fn cards_in_batches(env: &TestEnv) -> i64 {
    count(
        env,
        "SELECT count(*) FROM inventory.cards WHERE batch_id IS NOT NULL",
    )
    .await
}

/// Counts rows of a query returning one bigint.
pub async fn count(env: &TestEnv, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&env.pool)
        .await
        .expect("count query")
}
