//! Small helpers shared by the test modules.

use std::time::Duration;

use simflow_runtime::amqp::{EventWatch, JobRoute, ReceivedEvent};
use simflow_schemas::registry::Message;
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

/// Counts rows of a query returning one bigint.
pub async fn count(env: &TestEnv, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&env.pool)
        .await
        .expect("count query")
}
