//! The `cardfile` queue job: `cardfile.import.v1` in, `cardfile.imported.v1` out.
//!
//! The file comes inline or as a path the worker can read. Staging (validation, sealing,
//! checkpoints) commits on the importer's own connection so a redelivered job resumes; the
//! promotion runs in the runtime's transaction, so the cards become visible together with the
//! job's inbox record. A file refused as a whole is a rejection (`cardfile.rejected`) with the
//! clerk's reason in Chinese and English; refused rows are listed in the answer by line,
//! column and code. A missing KEK needs ops (the job is dead-lettered, to be replayed once the
//! KEK is configured). This module never sees a channel.

use std::path::PathBuf;
use std::sync::Arc;

use simflow_runtime::{Handler, JobContext, JobError, Outcome, Rejection};
use simflow_schemas::cardfile::{CardFileImport, CardFileImported, CardFileSource};
use simflow_schemas::registry::CardFileJob;
use simflow_schemas::topology::JobQueue;
use sqlx::PgConnection;

use crate::import::{CardFile, ImportError, ImportRequest, Importer, NoProgress};
use crate::reasons;

/// The card data import worker's handler.
#[derive(Debug, Clone)]
pub struct CardFileHandler {
    importer: Importer,
}

impl CardFileHandler {
    /// A handler around an importer.
    pub fn new(importer: Importer) -> CardFileHandler {
        CardFileHandler { importer }
    }

    async fn import(
        &self,
        import: CardFileImport,
        db: &mut PgConnection,
    ) -> Result<Outcome, JobError> {
        let file = match import.source {
            CardFileSource::Inline { content } => CardFile::Bytes(Arc::from(content.into_bytes())),
            CardFileSource::Path { path } => CardFile::Path(PathBuf::from(path)),
        };
        let request = ImportRequest {
            file_name: import.file_name.clone(),
            card_type: import.card_type.clone(),
            transport_key: import.transport_key.clone(),
            staff_id: import.staff_id.clone(),
        };
        let staged = self
            .importer
            .stage(file, &request, &NoProgress)
            .await
            .map_err(job_error)?;
        let report = self.importer.finish(db, staged).await.map_err(job_error)?;
        tracing::info!(
            import_id = %import.import_id,
            accepted = report.accepted,
            rejected = report.rejected,
            already_imported = report.already_imported,
            "card data file imported"
        );
        Ok(Outcome::event(&CardFileImported {
            import_id: import.import_id,
            file_name: import.file_name,
            accepted: report.accepted,
            rejected: report.rejected,
            problems: report.problems,
        }))
    }
}

/// What the runtime should do with each import failure.
fn job_error(error: ImportError) -> JobError {
    match error {
        ImportError::File(rejection) => JobError::Rejected(Rejection::new(rejection.message())),
        ImportError::Keys(error) => {
            tracing::error!(error = %error, "card data import cannot run");
            JobError::needs_ops(reasons::CARDDATA_KEK_MISSING)
        }
        ImportError::Busy => JobError::Transient(anyhow::anyhow!(
            "the same card data file is being imported by another job"
        )),
        ImportError::Database(error) => JobError::from(error),
        ImportError::Internal(error) => {
            tracing::error!(error = %format!("{error:#}"), "card data import failed");
            JobError::needs_ops(reasons::CARDDATA_IMPORT_FAILED)
        }
    }
}

impl Handler for CardFileHandler {
    type Job = CardFileJob;
    const QUEUE: JobQueue = JobQueue::CardFile;

    /// An import stages its rows on connections of its own and may take minutes: one per
    /// transaction.
    fn batch_limit(&self) -> Option<usize> {
        Some(1)
    }

    async fn handle(
        &self,
        _context: &JobContext,
        job: CardFileJob,
        db: &mut PgConnection,
    ) -> Result<Outcome, JobError> {
        match job {
            CardFileJob::Import(import) => self.import(import, db).await,
        }
    }
}
