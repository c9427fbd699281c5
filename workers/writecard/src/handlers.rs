//! The three handlers of the write-card worker, one per queue it consumes: write requests and
//! the order lifecycle (`simflow.writecard`), outlet answers (`simflow.outlet-results`), and
//! outlet work the broker dead-lettered (`simflow.outlet-expired`).

use std::sync::Arc;

use simflow_carddata::kek::KekRing;
use simflow_runtime::{Handler, JobContext, JobError, Outcome};
use simflow_schemas::registry::Job;
use simflow_schemas::topology::JobQueue;
use sqlx::PgConnection;

use crate::settings::WritecardSettings;
use crate::{orders, request, results};

fn unexpected(worker: &str, job: &Job) -> JobError {
    JobError::needs_ops(
        "UNEXPECTED_MESSAGE_TYPE",
        "消息类型不属于此队列",
        &format!("The {worker} worker does not handle {}", job.message_type()),
    )
}

/// Write requests and the order lifecycle.
#[derive(Debug, Clone)]
pub struct WriteCardHandler {
    /// Settings.
    pub settings: WritecardSettings,
    /// Key-encryption keys of the card data.
    pub keks: Arc<KekRing>,
}

impl Handler for WriteCardHandler {
    fn queue(&self) -> JobQueue {
        JobQueue::WriteCard
    }

    async fn handle(
        &self,
        context: &JobContext,
        job: Job,
        db: &mut PgConnection,
    ) -> Result<Outcome, JobError> {
        match job {
            Job::WriteRequest(write) => {
                request::handle(&self.settings, &self.keks, context, write, db).await
            }
            Job::OrderPresubmit(presubmit) => orders::presubmit(context, presubmit, db).await,
            Job::OrderSubmit(submit) => orders::submit(context, submit, db).await,
            Job::OrderCancel(cancel) => orders::cancel(&self.settings, context, cancel, db).await,
            other => Err(unexpected("write-card", &other)),
        }
    }
}

/// Card reads and write results from outlet nodes.
#[derive(Debug, Clone)]
pub struct OutletResultsHandler {
    /// Key-encryption keys of the card data (to check the card's answer).
    pub keks: Arc<KekRing>,
}

impl Handler for OutletResultsHandler {
    fn queue(&self) -> JobQueue {
        JobQueue::OutletResults
    }

    fn name(&self) -> &'static str {
        "outlet-results"
    }

    async fn handle(
        &self,
        context: &JobContext,
        job: Job,
        db: &mut PgConnection,
    ) -> Result<Outcome, JobError> {
        match job {
            Job::WriteResult(result) => {
                results::write_result(&self.keks, context, result, db).await
            }
            Job::OutletCardRead(read) => results::card_read(context, read, db).await,
            other => Err(unexpected("outlet-results", &other)),
        }
    }
}

/// Outlet work nobody took in time (or an outlet refused).
#[derive(Debug, Clone, Copy, Default)]
pub struct OutletExpiredHandler;

impl Handler for OutletExpiredHandler {
    fn queue(&self) -> JobQueue {
        JobQueue::OutletExpired
    }

    fn name(&self) -> &'static str {
        "outlet-expired"
    }

    async fn handle(
        &self,
        context: &JobContext,
        job: Job,
        db: &mut PgConnection,
    ) -> Result<Outcome, JobError> {
        match job {
            Job::WriteScript(envelope) => results::expired_write(context, envelope, db).await,
            Job::CardReadRequest(request) => results::expired_read(context, request).await,
            other => Err(unexpected("outlet-expired", &other)),
        }
    }
}
