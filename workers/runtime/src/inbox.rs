//! The inbox: which messages a consumer has handled, and what it published for each.
//!
//! The row is written in the same transaction as the handler's effects, just before commit,
//! with `ON CONFLICT DO NOTHING`. A second delivery of the same message (a redelivery, a
//! duplicate publish, a replay from the dead-letter queue) that runs at the same time blocks on
//! that row until the first commits, finds it, and rolls its own work back; one that comes later
//! is answered from the stored outcome without running the handler at all.

use sqlx::PgConnection;

use crate::outcome::Outcome;

/// The stored outcome of `message_id` for `consumer`, if it was handled.
pub async fn lookup(
    db: &mut PgConnection,
    consumer: &str,
    message_id: &str,
) -> Result<Option<Outcome>, sqlx::Error> {
    let stored: Option<sqlx::types::Json<Outcome>> = sqlx::query_scalar(
        "SELECT outcome FROM runtime.inbox WHERE consumer = $1 AND message_id = $2",
    )
    .bind(consumer)
    .bind(message_id)
    .fetch_optional(&mut *db)
    .await?;
    Ok(stored.map(|json| json.0))
}

/// Records a handled message and its outcome inside the caller's transaction. Returns false
/// when another delivery of the same message committed first: the caller must roll back and
/// answer with the stored outcome.
pub async fn record(
    db: &mut PgConnection,
    consumer: &str,
    message_id: &str,
    message_type: &str,
    outcome: &Outcome,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO runtime.inbox (consumer, message_id, message_type, outcome) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (consumer, message_id) DO NOTHING",
    )
    .bind(consumer)
    .bind(message_id)
    .bind(message_type)
    .bind(sqlx::types::Json(outcome))
    .execute(db)
    .await?
    .rows_affected();
    Ok(inserted == 1)
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
