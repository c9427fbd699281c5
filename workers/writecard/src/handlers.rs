//! The three handlers of the write-card worker, one per queue it consumes: write requests and
//! the order lifecycle (`simflow.writecard`), outlet answers (`simflow.outlet-results`), and
//! outlet work the broker dead-lettered (`simflow.outlet-expired`).

use std::sync::Arc;

use simflow_carddata::kek::KekRing;
use simflow_runtime::{Handler, JobContext, JobError, Outcome};
use simflow_schemas::registry::{OutletResultJob, OutletWorkJob, WriteCardJob};
use simflow_schemas::topology::JobQueue;
use sqlx::PgConnection;

use crate::settings::WritecardSettings;
use crate::{orders, request, results};

/// Write requests and the order lifecycle.
#[derive(Debug, Clone)]
pub struct WriteCardHandler {
    /// Settings.
    pub settings: WritecardSettings,
    /// Key-encryption keys of the card data.
    pub keks: Arc<KekRing>,
}

impl Handler for WriteCardHandler {
    type Job = WriteCardJob;
    const QUEUE: JobQueue = JobQueue::WriteCard;

    async fn handle(
        &self,
        context: &JobContext,
        job: WriteCardJob,
        db: &mut PgConnection,
    ) -> Result<Outcome, JobError> {
        match job {
            WriteCardJob::Request(write) => {
                request::handle(&self.settings, &self.keks, context, write, db).await
            }
            WriteCardJob::Presubmit(presubmit) => orders::presubmit(context, presubmit, db).await,
            WriteCardJob::Submit(submit) => orders::submit(context, submit, db).await,
            WriteCardJob::Cancel(cancel) => {
                orders::cancel(&self.settings, context, cancel, db).await
            }
            WriteCardJob::ReadRequest(read) => results::forward_read(read, db).await,
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
    type Job = OutletResultJob;
    const QUEUE: JobQueue = JobQueue::OutletResults;

    async fn handle(
        &self,
        context: &JobContext,
        job: OutletResultJob,
        db: &mut PgConnection,
    ) -> Result<Outcome, JobError> {
        match job {
            OutletResultJob::WriteResult(result) => {
                results::write_result(&self.keks, context, result, db).await
            }
            OutletResultJob::CardRead(read) => results::card_read(context, read, db).await,
        }
    }
}

/// Outlet work nobody took in time (or an outlet refused).
#[derive(Debug, Clone, Copy, Default)]
pub struct OutletExpiredHandler;

impl Handler for OutletExpiredHandler {
    type Job = OutletWorkJob;
    const QUEUE: JobQueue = JobQueue::OutletExpired;

    async fn handle(
        &self,
        context: &JobContext,
        job: OutletWorkJob,
        db: &mut PgConnection,
    ) -> Result<Outcome, JobError> {
        match job {
            OutletWorkJob::WriteScript(envelope) => {
                results::expired_write(context, envelope, db).await
            }
            OutletWorkJob::ReadRequest(request) => results::expired_read(context, request).await,
        }
    }
}
