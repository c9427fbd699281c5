//! Running a handler without a broker, for the fast tier of tests: the same group-commit path
//! the worker uses (inbox claim, savepoint, handler, recorded outcome), inside a transaction
//! the test owns, so a test can look at the database afterwards and roll everything back.
//!
//! Delivery semantics (confirms, acks, retries, dead letters) are not here: the end-to-end
//! suite proves those against the real broker.

use simflow_schemas::registry::JobSet;
use sqlx::PgConnection;

use crate::handler::Handler;
use crate::worker::{BatchJob, Verdict};

/// A handler under test.
#[derive(Debug, Clone)]
pub struct TestWorker<H> {
    handler: H,
}

impl<H: Handler> TestWorker<H> {
    /// Wraps a handler.
    pub fn new(handler: H) -> TestWorker<H> {
        TestWorker { handler }
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// Runs one job as the first delivery of `message_id`, inside the caller's transaction.
    pub async fn run(
        &self,
        db: &mut PgConnection,
        message_id: &str,
        job: impl Into<H::Job>,
    ) -> Result<Verdict, sqlx::Error> {
        let mut verdicts = self
            .run_batch(db, vec![BatchJob::fresh(message_id, job.into())])
            .await?;
        Ok(verdicts
            .pop()
            .unwrap_or(Verdict::Transient("no verdict".to_owned())))
    }

    /// Runs jobs as one batch (one savepoint each), inside the caller's transaction.
    pub async fn run_batch(
        &self,
        db: &mut PgConnection,
        jobs: Vec<BatchJob<H::Job>>,
    ) -> Result<Vec<Verdict>, sqlx::Error> {
        crate::worker::transact_batch(&self.handler, db, jobs).await
    }
}

/// Jobs of a set, each under a fresh message id, ready for [`TestWorker::run_batch`].
pub fn fresh_jobs<J: JobSet>(jobs: impl IntoIterator<Item = J>) -> Vec<BatchJob<J>> {
    jobs.into_iter()
        .map(|job| BatchJob::fresh(&uuid::Uuid::new_v4().to_string(), job))
        .collect()
}
