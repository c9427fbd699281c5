//! The inbox: which messages a consumer has handled, and what it published for each.
//!
//! The row is claimed at the start of the handler's transaction and filled with the outcome at
//! its end, so a second delivery of the same message (a redelivery, a duplicate publish, a
//! replay from the dead-letter queue) waits for the first to commit and then finds it.

use sqlx::PgConnection;

use crate::outcome::Outcome;

/// What claiming a message found.
#[derive(Debug)]
pub enum Claim {
    /// First time: go ahead and handle it.
    New,
    /// Already handled: publish this stored outcome again and ack.
    Duplicate(Outcome),
}

/// Claims `message_id` for `consumer` inside the caller's transaction.
pub async fn claim(
    db: &mut PgConnection,
    consumer: &str,
    message_id: &str,
    message_type: &str,
) -> Result<Claim, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO runtime.inbox (consumer, message_id, message_type) VALUES ($1, $2, $3) \
         ON CONFLICT (consumer, message_id) DO NOTHING",
    )
    .bind(consumer)
    .bind(message_id)
    .bind(message_type)
    .execute(&mut *db)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Claim::New);
    }
    let stored: Option<sqlx::types::Json<Outcome>> = sqlx::query_scalar(
        "SELECT outcome FROM runtime.inbox WHERE consumer = $1 AND message_id = $2",
    )
    .bind(consumer)
    .bind(message_id)
    .fetch_one(&mut *db)
    .await?;
    Ok(Claim::Duplicate(
        stored.map(|json| json.0).unwrap_or_default(),
    ))
}

/// Records the outcome of a claimed message (same transaction as the claim).
pub async fn record(
    db: &mut PgConnection,
    consumer: &str,
    message_id: &str,
    outcome: &Outcome,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE runtime.inbox SET outcome = $3 WHERE consumer = $1 AND message_id = $2")
        .bind(consumer)
        .bind(message_id)
        .bind(sqlx::types::Json(outcome))
        .execute(&mut *db)
        .await?;
    Ok(())
}

/// Deletes inbox rows older than `days` days; returns how many went.
pub async fn prune(db: &mut PgConnection, days: u32) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query(
        "DELETE FROM runtime.inbox WHERE received_at < now() - make_interval(days => $1)",
    )
    .bind(i32::try_from(days).unwrap_or(i32::MAX))
    .execute(db)
    .await?
    .rows_affected();
    Ok(deleted)
}
