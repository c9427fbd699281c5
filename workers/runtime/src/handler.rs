//! The seam between the runtime and a worker's business rules.
//!
//! A handler gets one decoded job and a database connection inside the runtime's transaction,
//! and answers with an [`Outcome`] or a [`JobError`] that names what should happen next.
//! Handlers never see a channel, never ack and never publish: the runtime does all of that
//! after the transaction has committed.

use std::future::Future;

use chrono::{DateTime, Utc};
use simflow_schemas::common::{CardProblem, ClerkMessage};
use simflow_schemas::registry::Job;
use simflow_schemas::topology::JobQueue;
use sqlx::PgConnection;

use crate::outcome::Outcome;

/// What the runtime tells a handler about the delivery it is handling.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The job's `message_id` (its idempotency key).
    pub message_id: String,
    /// The job's `type`.
    pub message_type: String,
    /// 1 for the first try, then 2, 3 … across retries.
    pub attempt: u32,
    /// When this delivery arrived.
    pub received_at: DateTime<Utc>,
    /// The broker-validated `user_id` property, if the publisher set one.
    pub user_id: Option<String>,
    /// The business id the job names (transfer, batch, order …), for events and logs.
    pub subject_id: Option<String>,
    /// The broker says this delivery was delivered before (and maybe handled).
    pub redelivered: bool,
    /// For a message the broker dead-lettered to this queue: why (`expired`, `rejected`,
    /// `delivery_limit`, `maxlen`), from its most recent `x-death` entry.
    pub death_reason: Option<String>,
}

/// A business answer: the job is refused and nothing it did is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Why, in the clerk's words.
    pub reason: ClerkMessage,
    /// The cards that failed (a bounded list).
    pub problems: Vec<CardProblem>,
    /// How many cards failed in all.
    pub problem_count: u64,
}

impl Rejection {
    /// A rejection without per-card problems.
    pub fn new(code: &str, message_zh: &str, message_en: &str) -> Rejection {
        Rejection {
            reason: ClerkMessage::new(code, message_zh, message_en),
            problems: Vec::new(),
            problem_count: 0,
        }
    }

    /// Adds the failing cards; `total` counts all of them when the list was cut short.
    pub fn with_problems(mut self, problems: Vec<CardProblem>, total: u64) -> Rejection {
        self.problems = problems;
        self.problem_count = total;
        self
    }
}

/// What should happen to a job that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A business answer: roll back, publish `<kind>.rejected`, ack.
    #[error("rejected: {}", .0.reason.code)]
    Rejected(Rejection),
    /// Cannot be done until ops act: roll back, dead-letter with this reason, publish
    /// `<kind>.failed`, ack.
    #[error("needs ops: {}", .0.code)]
    NeedsOps(ClerkMessage),
    /// May succeed later (database or broker restart, lock timeout): roll back and retry with
    /// backoff, then dead-letter when the tries are used up.
    #[error("transient: {0:#}")]
    Transient(anyhow::Error),
}

impl JobError {
    /// A rejection without per-card problems.
    pub fn reject(code: &str, message_zh: &str, message_en: &str) -> JobError {
        JobError::Rejected(Rejection::new(code, message_zh, message_en))
    }

    /// A failure that needs ops.
    pub fn needs_ops(code: &str, message_zh: &str, message_en: &str) -> JobError {
        JobError::NeedsOps(ClerkMessage::new(code, message_zh, message_en))
    }
}

/// PostgreSQL SQLSTATEs that a later try can get past.
fn is_transient_sqlstate(code: &str) -> bool {
    matches!(
        code,
        // serialization failure, deadlock, lock not available, query canceled (statement timeout)
        "40001" | "40P01" | "55P03" | "57014"
            // admin or crash shutdown, cannot connect now
            | "57P01" | "57P02" | "57P03"
            // too many connections, out of memory, disk full
            | "53300" | "53200" | "53100"
    ) || code.starts_with("08")
}

/// Whether a database error is worth another try.
pub fn is_transient_db_error(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(database_error) => database_error
            .code()
            .is_some_and(|code| is_transient_sqlstate(&code)),
        _ => false,
    }
}

impl From<sqlx::Error> for JobError {
    /// Connection trouble, deadlocks and serialization failures are transient; any other
    /// database error is a defect that needs ops (retrying a bug only delays the dead letter).
    fn from(error: sqlx::Error) -> JobError {
        if is_transient_db_error(&error) {
            JobError::Transient(anyhow::Error::new(error).context("database"))
        } else {
            tracing::error!(error = %error, "database error that no retry can fix");
            JobError::needs_ops(
                "DATABASE_ERROR",
                "数据库处理失败，请联系运维",
                "The database refused the job; ops must look at the worker log",
            )
        }
    }
}

/// A worker's business rules for one central queue.
pub trait Handler: Send + Sync + 'static {
    /// The queue this handler consumes.
    fn queue(&self) -> JobQueue;

    /// A short name for logs, metrics, dead-letter headers and the inbox (`transfer`, …).
    fn name(&self) -> &'static str {
        self.queue().key()
    }

    /// Handles one job inside the runtime's transaction. Whatever it writes through `db` is
    /// committed only with an `Ok` outcome; on any error it is rolled back.
    fn handle(
        &self,
        context: &JobContext,
        job: Job,
        db: &mut PgConnection,
    ) -> impl Future<Output = Result<Outcome, JobError>> + Send;
}
