//! The audit trail of the console's actions (`console.audit`): who replayed or discarded which
//! dead letter, when, and how it ended.
//!
//! [`begin`] writes the record before the action runs and [`finish`] completes it, so an
//! action that crashes half way still shows who started it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::auth::Session;

/// One audit record.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditRecord {
    /// Its number.
    pub audit_id: i64,
    /// When the action started.
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: String,
    /// With which role.
    pub role: String,
    /// `replay` or `discard`.
    pub action: String,
    /// The work queue's key.
    pub queue: String,
    /// The dead letter's message id.
    pub message_id: String,
    /// Its reason code when the action started.
    pub reason_code: Option<String>,
    /// `started`, `done` or `failed`.
    pub outcome: String,
    /// What happened, for people.
    pub detail: Option<String>,
}

/// What an audited action is about.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// `replay` or `discard`.
    pub action: &'a str,
    /// The work queue's key.
    pub queue: &'a str,
    /// The dead letter's message id.
    pub message_id: &'a str,
    /// Its reason code.
    pub reason_code: Option<&'a str>,
}

/// Records that `session` starts `target`; returns the record's number.
pub async fn begin(db: &PgPool, session: &Session, target: Target<'_>) -> anyhow::Result<i64> {
    let id = sqlx::query_scalar(
        "INSERT INTO console.audit (actor, role, action, queue, message_id, reason_code) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING audit_id",
    )
    .bind(&session.user)
    .bind(session.role.name())
    .bind(target.action)
    .bind(target.queue)
    .bind(target.message_id)
    .bind(target.reason_code)
    .fetch_one(db)
    .await?;
    Ok(id)
}

/// Completes a record with how the action ended.
pub async fn finish(db: &PgPool, audit_id: i64, done: bool, detail: &str) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE console.audit SET outcome = $2, detail = $3, finished_at = now() WHERE audit_id = $1",
    )
    .bind(audit_id)
    .bind(if done { "done" } else { "failed" })
    .bind(detail)
    .execute(db)
    .await?;
    Ok(())
}

/// The latest records, newest first.
pub async fn latest(db: &PgPool, limit: i64) -> anyhow::Result<Vec<AuditRecord>> {
    Ok(sqlx::query_as(
        "SELECT audit_id, at, actor, role, action, queue, message_id, reason_code, outcome, detail \
         FROM console.audit ORDER BY audit_id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await?)
}
