//! The import of one card data file: two streaming passes (a quick one that hashes, and one
//! that parses, validates and seals), chunked staging with checkpoints, and one final
//! transaction that makes the whole file visible at once.
//!
//! 1. The opening pass ([`crate::csvfile::check_opening`]) hashes the file, holds every line
//!    to the limit and checks the header and the first row (columns, encryption), refusing the
//!    file whole before anything is stored; it does not parse the other rows as CSV.
//! 2. The file is identified by (SHA-256, card type). A file already imported answers its
//!    stored report and changes nothing. A file whose import was interrupted resumes at its
//!    checkpoint. Otherwise an `imports` row in state 'staging' is created.
//! 3. The staging pass validates each row, seals its secrets under the current KEK (one
//!    AES-GCM record per card) and streams chunks of `carddata.chunk_rows` rows straight into
//!    the live table `carddata.card_rows` with binary `COPY`; each chunk's rows, its refused
//!    rows and the checkpoint commit together. Readers use the view `carddata.cards`, which
//!    shows only rows of 'done' imports, so staged rows are invisible. Parsing and sealing run
//!    on a blocking thread while the previous chunk is written. This pass also refuses the
//!    file whole for what the opening pass did not parse (a row with another field count,
//!    bytes that are not UTF-8, a file changed since): it then drops what it staged, so
//!    nothing of the file is imported either way.
//! 4. Promotion ([`Importer::finish`]) runs in the caller's transaction: set-based SQL refuses
//!    duplicates in the file and conflicts with cards already stored, deletes the refused rows
//!    and those of cards already stored with the same content, stores the report and flips the
//!    import to 'done'. Each row is written once; readers see all of the file or none of it.
//!
//! One import of a given file runs at a time (a session advisory lock on a dedicated
//! connection). This module holds no queue logic (see [`crate::handler`]) and no terminal
//! output (the CLI draws progress through [`Progress`]).
//!
//! The parts, one job each:
//! - this module: the public API ([`Importer`], its request, report, errors and progress) and
//!   the order of the steps;
//! - `bookkeeping`: the file's advisory lock and the `carddata.imports` row (create, resume
//!   point, discard) and the refused rows of `carddata.import_problems`;
//! - `rows`: the staging pass's producer: reading, validating, finding in-file duplicates and
//!   sealing, on a blocking thread, into chunks;
//! - `copy`: a card row in PostgreSQL's binary `COPY` format;
//! - `staging`: writing the chunks with `COPY`, each with its refusals and checkpoint;
//! - `promote`: the final transaction (conflicts with stored cards, deletes, the flip to 'done');
//! - `report`: the report read back from the refused rows.

mod bookkeeping;
mod copy;
mod promote;
mod report;
mod rows;
mod staging;

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;

use sqlx::{Connection, PgConnection, PgPool};

use crate::csvfile::{self, FileRejection};
use crate::kek::{KekConfigError, KekRing};
use crate::reasons;
use crate::transport::TransportKeys;

pub use report::ImportReport;

/// Tuning of the import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Rows per staged chunk (and checkpoint).
    pub chunk_rows: usize,
    /// The longest line accepted, in bytes.
    pub max_line_bytes: usize,
    /// Refused rows listed in a report (all are counted).
    pub max_listed_problems: usize,
}

impl Limits {
    /// From the raw settings.
    pub fn from_settings(settings: &simflow_runtime::settings::CardDataSettings) -> Limits {
        Limits {
            chunk_rows: settings.chunk_rows.max(1),
            max_line_bytes: settings.max_line_bytes.max(256),
            max_listed_problems: settings.max_listed_problems,
        }
    }
}

/// Where the file's bytes are.
#[derive(Debug, Clone)]
pub enum CardFile {
    /// A file on local storage.
    Path(PathBuf),
    /// The bytes themselves (a file that came inline in a job).
    Bytes(Arc<[u8]>),
}

impl CardFile {
    fn open(&self) -> Result<Box<dyn Read + Send>, FileRejection> {
        match self {
            CardFile::Path(path) => std::fs::File::open(path)
                .map(|file| {
                    Box::new(io::BufReader::with_capacity(256 * 1024, file)) as Box<dyn Read + Send>
                })
                .map_err(|_| FileRejection::new(reasons::FILE_UNREADABLE)),
            CardFile::Bytes(bytes) => Ok(Box::new(io::Cursor::new(Arc::clone(bytes)))),
        }
    }
}

/// What is being imported, and by whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRequest {
    /// The file's name as delivered (for the record only).
    pub file_name: String,
    /// The card type of every card in the file.
    pub card_type: String,
    /// The transport key the key columns are encrypted with, if they are.
    pub transport_key: Option<String>,
    /// The acting staff ID (or `cli:<user>`).
    pub staff_id: String,
}

/// Why an import did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file is refused as a whole; nothing of it was imported.
    #[error("{0}")]
    File(FileRejection),
    /// The keys are not configured well enough to import (no KEK).
    #[error(transparent)]
    Keys(#[from] KekConfigError),
    /// Another process is importing the same file right now.
    #[error(
        "this file is being imported by another process right now; try again when it has finished"
    )]
    Busy,
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A defect or an invariant that did not hold.
    #[error("{0:#}")]
    Internal(anyhow::Error),
}

impl From<FileRejection> for ImportError {
    fn from(rejection: FileRejection) -> ImportError {
        ImportError::File(rejection)
    }
}

/// Progress callbacks (the CLI draws a bar; the queue worker ignores them).
pub trait Progress: Send + Sync {
    /// The staging pass starts: `total` rows in the file, `done` already staged before.
    fn start(&self, _total: u64, _done: u64) {}
    /// `rows` more rows were staged and checkpointed.
    fn advance(&self, _rows: u64) {}
    /// Staging is done; the final transaction runs.
    fn promoting(&self) {}
}

/// A [`Progress`] that does nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// A staged import waiting for [`Importer::finish`]. Holds the connection with the file's
/// advisory lock; dropping it releases the lock and keeps the staged rows for a resume.
#[derive(Debug)]
pub struct Staged {
    lock: PgConnection,
    file: StagedFile,
    already: Option<ImportReport>,
}

/// Which import a [`Staged`] is, for promotion and for releasing its lock.
#[derive(Debug)]
struct StagedFile {
    import_key: i64,
    total_rows: u64,
    card_type: String,
    sha256_hex: String,
    resumed_from_row: u64,
}

/// The importer: a pool, the keys and the limits.
#[derive(Debug, Clone)]
pub struct Importer {
    pool: PgPool,
    keks: Arc<KekRing>,
    transport_keys: Arc<TransportKeys>,
    limits: Limits,
}

fn valid_card_type(card_type: &str) -> bool {
    !card_type.is_empty()
        && card_type.len() <= 64
        && card_type
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.'))
}

impl Importer {
    /// An importer with these keys and limits.
    pub fn new(
        pool: PgPool,
        keks: Arc<KekRing>,
        transport_keys: Arc<TransportKeys>,
        limits: Limits,
    ) -> Importer {
        Importer {
            pool,
            keks,
            transport_keys,
            limits,
        }
    }

    /// An importer from the raw settings. Fails for malformed keys; a missing KEK is reported
    /// when an import starts, so a process can run other workers without one.
    pub fn from_settings(
        pool: PgPool,
        settings: &simflow_runtime::settings::CardDataSettings,
    ) -> Result<Importer, KekConfigError> {
        Ok(Importer::new(
            pool,
            Arc::new(KekRing::from_settings(settings)?),
            Arc::new(TransportKeys::from_settings(settings)?),
            Limits::from_settings(settings),
        ))
    }

    /// The key ring (for the write-card side of the same process).
    pub fn keks(&self) -> &Arc<KekRing> {
        &self.keks
    }

    /// Stages and promotes a file on the importer's own connection (the CLI's path).
    pub async fn import(
        &self,
        file: CardFile,
        request: &ImportRequest,
        progress: &dyn Progress,
    ) -> Result<ImportReport, ImportError> {
        let Staged {
            mut lock,
            file,
            already,
        } = self.stage(file, request, progress).await?;
        if let Some(report) = already {
            bookkeeping::release(lock, &file).await?;
            return Ok(report);
        }
        let mut transaction = lock.begin().await?;
        let report = promote::promote(
            &mut transaction,
            &file,
            self.limits.max_listed_problems,
            progress,
        )
        .await?;
        transaction.commit().await?;
        bookkeeping::release(lock, &file).await?;
        Ok(report)
    }

    /// Promotes a staged file inside the caller's transaction (the queue worker's path, so the
    /// cards and the job's inbox record commit together).
    pub async fn finish(
        &self,
        db: &mut PgConnection,
        staged: Staged,
    ) -> Result<ImportReport, ImportError> {
        let Staged {
            lock,
            file,
            already,
        } = staged;
        if let Some(report) = already {
            bookkeeping::release(lock, &file).await?;
            return Ok(report);
        }
        let report =
            promote::promote(db, &file, self.limits.max_listed_problems, &NoProgress).await?;
        // The advisory lock goes with the connection; a second import of the same file that
        // starts before the caller commits waits on the `imports` row lock and then sees `done`.
        bookkeeping::release(lock, &file).await?;
        Ok(report)
    }

    /// Checks, identifies and stages a file (resuming an interrupted run).
    pub async fn stage(
        &self,
        file: CardFile,
        request: &ImportRequest,
        progress: &dyn Progress,
    ) -> Result<Staged, ImportError> {
        self.keks.current()?;
        if !valid_card_type(&request.card_type) {
            return Err(FileRejection::new(reasons::CARD_TYPE_INVALID).into());
        }
        let transport = match &request.transport_key {
            Some(name) => Some(
                self.transport_keys
                    .get(name)
                    .cloned()
                    .ok_or_else(|| FileRejection::new(reasons::TRANSPORT_KEY_UNKNOWN))?,
            ),
            None => None,
        };

        let started = std::time::Instant::now();
        let opening = {
            let file = file.clone();
            let transport = transport.clone();
            let max_line = self.limits.max_line_bytes;
            tokio::task::spawn_blocking(move || {
                csvfile::check_opening(file.open()?, max_line, transport.as_ref())
            })
            .await
            .map_err(|error| ImportError::Internal(anyhow::Error::new(error)))??
        };
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            rows_hint = opening.rows_hint,
            "opening pass done"
        );
        let mut staged_file = StagedFile {
            import_key: 0,
            total_rows: opening.rows_hint,
            card_type: request.card_type.clone(),
            sha256_hex: hex::encode(opening.sha256),
            resumed_from_row: 0,
        };

        let mut lock = bookkeeping::lock(&self.pool, &staged_file).await?;
        let (import_key, rows_read) =
            match bookkeeping::existing(&mut lock, &opening.sha256, &request.card_type).await? {
                bookkeeping::Existing::Done(report) => {
                    return Ok(Staged {
                        lock,
                        file: staged_file,
                        already: Some(report),
                    });
                }
                bookkeeping::Existing::Staging {
                    import_key,
                    rows_read,
                } => {
                    let rows_read =
                        bookkeeping::checked_resume_point(&mut lock, import_key, rows_read).await?;
                    (import_key, rows_read)
                }
                bookkeeping::Existing::None => (
                    bookkeeping::create_import(
                        &mut lock,
                        &opening.sha256,
                        staged_file.total_rows,
                        request,
                    )
                    .await?,
                    0,
                ),
            };
        staged_file.import_key = import_key;
        staged_file.resumed_from_row = u64::try_from(rows_read).unwrap_or_default();
        if staged_file.resumed_from_row > 0 {
            tracing::info!(
                import_key,
                resumed_from_row = staged_file.resumed_from_row,
                "resuming an interrupted card data import"
            );
        }
        progress.start(staged_file.total_rows, staged_file.resumed_from_row);
        let staging_started = std::time::Instant::now();

        let pass = rows::Pass {
            import_key,
            file,
            header: opening.header,
            sha256: opening.sha256,
            rows_hint: opening.rows_hint,
            skip: staged_file.resumed_from_row,
            card_type: request.card_type.clone(),
            transport,
        };
        let staged = staging::stage_rows(
            &mut lock,
            pass,
            Arc::clone(&self.keks),
            self.limits,
            progress,
        )
        .await;
        if let Err(ImportError::File(rejection)) = &staged {
            tracing::warn!(
                import_key,
                code = rejection.reason.code,
                "card data file refused while staging; dropping what was staged"
            );
            bookkeeping::discard_import(&mut lock, import_key).await?;
        }
        // The staging pass counted the rows; the opening pass only bounded them.
        staged_file.total_rows = staged?;
        tracing::debug!(
            import_key,
            rows = staged_file.total_rows,
            elapsed_ms = staging_started.elapsed().as_millis() as u64,
            "staging pass done"
        );
        Ok(Staged {
            lock,
            file: staged_file,
            already: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_types_are_codes() {
        assert!(valid_card_type("USIM128K_NORMAL"));
        assert!(!valid_card_type(""));
        assert!(!valid_card_type("a b"));
    }
}
