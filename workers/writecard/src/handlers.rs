//! The three handlers of the write-card worker, one per queue it consumes: write requests and
//! the order lifecycle (`simflow.writecard`), outlet answers (`simflow.outlet-results`), and
//! outlet work the broker dead-lettered (`simflow.outlet-expired`).

use std::sync::Arc;

use simflow_carddata::kek::KekRing;
use simflow_runtime::{Handler, JobContext, JobError, Outcome};
use simflow_schemas::registry::{OutletResultJob, OutletWorkJob, WriteCardJob};
use simflow_schemas::topology::JobQueue;
use sqlx::PgConnection;

use crate::settings::{ForeignReaderPolicy, WritecardSettings};
use crate::{foreign_reader, orders, reasons, request, results};

/// What a write request or an order step dead-letters with (they need ops).
const WRITECARD_NEEDS_OPS: &[simflow_schemas::Reason] = &[
    reasons::WRITE_SCRIPT_MISSING,
    reasons::CARD_DATA_UNREADABLE,
    reasons::IMSI_POOL_EMPTY,
    reasons::SCRIPT_BUILD_FAILED,
    reasons::OUTLET_UNKNOWN,
    reasons::CARD_STATE_INCONSISTENT,
];

/// What an outlet answer or expired outlet work dead-letters with.
const RESULTS_NEEDS_OPS: &[simflow_schemas::Reason] = &[
    reasons::RESULT_NOT_FROM_OUTLET,
    reasons::UNKNOWN_SCRIPT,
    reasons::ORDER_UNKNOWN,
    reasons::WRITE_SCRIPT_MISSING,
    reasons::CARD_DATA_UNREADABLE,
    reasons::CARD_STATE_INCONSISTENT,
    reasons::OUTLET_REFUSED_WORK,
    reasons::KEY_ROTATION_REFUSED,
];

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

    fn dead_letter_reasons(&self) -> &'static [simflow_schemas::Reason] {
        WRITECARD_NEEDS_OPS
    }

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

/// Card reads, write results and reader reports from outlet nodes.
#[derive(Debug, Clone)]
pub struct OutletResultsHandler {
    /// Key-encryption keys of the card data (to check the card's answer).
    pub keks: Arc<KekRing>,
    /// What a reader not issued to its outlet gets (`[writecard] foreign_reader`).
    pub foreign_reader: ForeignReaderPolicy,
}

impl Handler for OutletResultsHandler {
    type Job = OutletResultJob;
    const QUEUE: JobQueue = JobQueue::OutletResults;

    fn dead_letter_reasons(&self) -> &'static [simflow_schemas::Reason] {
        RESULTS_NEEDS_OPS
    }

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
            OutletResultJob::Heartbeat(heartbeat) => {
                results::heartbeat(context, heartbeat, db).await
            }
            OutletResultJob::KeyRotated(rotated) => {
                results::key_rotated(context, rotated, db).await
            }
            OutletResultJob::ReaderReport(report) => {
                foreign_reader::reader_report(self.foreign_reader, context, report, db).await
            }
        }
    }
}

/// Outlet work nobody took in time (or an outlet refused).
#[derive(Debug, Clone, Copy, Default)]
pub struct OutletExpiredHandler;

impl Handler for OutletExpiredHandler {
    type Job = OutletWorkJob;
    const QUEUE: JobQueue = JobQueue::OutletExpired;

    fn dead_letter_reasons(&self) -> &'static [simflow_schemas::Reason] {
        RESULTS_NEEDS_OPS
    }

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
