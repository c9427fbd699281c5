//! The seam between the runtime and a worker's business rules.
//!
//! A handler names the closed enum of jobs its queue takes ([`Handler::Job`], generated from
//! the contract's registry), gets one decoded job and a database connection inside the
//! runtime's transaction, and answers with an [`Outcome`] or a [`JobError`] that names what
//! should happen next. The runtime decodes once, so a handler has no arm for a message its
//! queue cannot carry. Handlers never see a channel, never ack and never publish: the runtime
//! does all of that after the transaction has committed.

use std::future::Future;

use chrono::{DateTime, Utc};
use simflow_schemas::common::{CardProblem, ClerkMessage};
use simflow_schemas::reason::Reason;
use simflow_schemas::registry::JobSet;
use simflow_schemas::topology::JobQueue;
use sqlx::PgConnection;

use crate::outcome::Outcome;
use crate::reasons;

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

impl JobContext {
    /// The context of a first, fresh delivery with no user (tests and tools).
    pub fn fresh(message_id: &str, message_type: &str) -> JobContext {
        JobContext {
            message_id: message_id.to_owned(),
            message_type: message_type.to_owned(),
            attempt: 1,
            received_at: Utc::now(),
            user_id: None,
            subject_id: None,
            redelivered: false,
            death_reason: None,
        }
    }
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
    pub fn new(reason: ClerkMessage) -> Rejection {
        Rejection {
            reason,
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

impl From<Reason> for Rejection {
    fn from(reason: Reason) -> Rejection {
        Rejection::new(reason.message())
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
    pub fn reject(reason: Reason) -> JobError {
        JobError::Rejected(reason.into())
    }

    /// A rejection whose English text carries a detail (counts, names; never a secret).
    pub fn reject_with(reason: Reason, detail: &str) -> JobError {
        JobError::Rejected(Rejection::new(reason.message_with(detail)))
    }

    /// A failure that needs ops.
    pub fn needs_ops(reason: Reason) -> JobError {
        JobError::NeedsOps(reason.message())
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
            // read-only transaction (a primary that just became a replica)
            | "25006"
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

/// Whether a database error is a unique violation: two jobs created the same thing at once,
/// and a second try sees the first one's row.
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(database_error) if database_error.code().as_deref() == Some("23505"))
}

impl From<sqlx::Error> for JobError {
    /// Connection trouble, deadlocks, serialization failures and unique violations (a race
    /// that a second try settles) are transient; any other database error is a defect that
    /// needs ops (retrying a bug only delays the dead letter).
    fn from(error: sqlx::Error) -> JobError {
        if is_transient_db_error(&error) || is_unique_violation(&error) {
            JobError::Transient(anyhow::Error::new(error).context("database"))
        } else {
            tracing::error!(error = %error, "database error that no retry can fix");
            JobError::needs_ops(reasons::DATABASE_ERROR)
        }
    }
}

/// A worker's business rules for one central queue.
pub trait Handler: Send + Sync + 'static {
    /// The jobs this queue carries, one closed enum from the contract's registry.
    type Job: JobSet;

    /// The queue this handler consumes.
    const QUEUE: JobQueue;

    /// A short name for logs, metrics, dead-letter headers and the inbox (`transfer`, …).
    fn name(&self) -> &'static str {
        Self::QUEUE.key()
    }

    /// The most jobs of this queue one transaction may carry; `None` leaves it to the
    /// worker's settings. A handler whose job is long or does work outside the transaction
    /// (a card data import) says 1.
    fn batch_limit(&self) -> Option<usize> {
        None
    }

    /// The reason codes this handler may dead-letter with (its `JobError::NeedsOps` reasons),
    /// so their `simflow_dead_letters_total` series exist at zero from the start. The
    /// runtime's own reasons are always registered.
    fn dead_letter_reasons(&self) -> &'static [Reason] {
        &[]
    }

    /// Handles one job inside the runtime's transaction. Whatever it writes through `db` is
    /// committed only with an `Ok` outcome; on any error it is rolled back (to a savepoint of
    /// its own: the other jobs of the same transaction are not affected).
    fn handle(
        &self,
        context: &JobContext,
        job: Self::Job,
        db: &mut PgConnection,
    ) -> impl Future<Output = Result<Outcome, JobError>> + Send;
}
