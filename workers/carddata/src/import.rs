//! The import of one card data file: two streaming passes, chunked staging with checkpoints,
//! and one final transaction that makes the whole file visible at once.
//!
//! 1. The structure pass ([`crate::csvfile::check_structure`]) hashes the file and refuses it
//!    whole for file-level problems, before anything is stored.
//! 2. The file is identified by (SHA-256, card type). A file already imported answers its
//!    stored report and changes nothing. A file whose import was interrupted resumes at its
//!    checkpoint. Otherwise an `imports` row in state 'staging' is created.
//! 3. The staging pass validates each row, seals its secrets under the current KEK (one
//!    AES-GCM record per card) and streams chunks of `carddata.chunk_rows` rows straight into
//!    the live table `carddata.card_rows` with binary `COPY`; each chunk's rows, its refused
//!    rows and the checkpoint commit together. Readers use the view `carddata.cards`, which
//!    shows only rows of 'done' imports, so staged rows are invisible. Parsing and sealing run
//!    on a blocking thread while the previous chunk is written.
//! 4. Promotion ([`Importer::finish`]) runs in the caller's transaction: set-based SQL refuses
//!    duplicates in the file and conflicts with cards already stored, deletes the refused rows
//!    and those of cards already stored with the same content, stores the report and flips the
//!    import to 'done'. Each row is written once; readers see all of the file or none of it.
//!
//! One import of a given file runs at a time (a session advisory lock on a dedicated
//! connection). This module holds no queue logic (see [`crate::handler`]) and no terminal
//! output (the CLI draws progress through [`Progress`]).

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use simflow_schemas::cardfile::RowProblem;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::mpsc;
use zeroize::{Zeroize, Zeroizing};

use crate::csvfile::{self, FileRejection, Guarded, Header};
use crate::kek::{Kek, KekConfigError, KekRing};
use crate::reasons::{self, Reason, RowReason};
use crate::secrets::SecretRecord;
use crate::transport::{TransportKey, TransportKeys};
use crate::validate::{self, CardRow};

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

/// What an import took and left. Never holds a key value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    /// SHA-256 of the file, hex.
    pub file_sha256: String,
    /// The card type.
    pub card_type: String,
    /// Card rows in the file.
    pub total_rows: u64,
    /// Rows imported (new, or already stored with the same content).
    pub accepted: u64,
    /// Rows refused.
    pub rejected: u64,
    /// The first refused rows, by line.
    pub problems: Vec<RowProblem>,
    /// True when this file had been imported before and nothing was done now.
    #[serde(default)]
    pub already_imported: bool,
    /// Rows an earlier, interrupted run had already staged (0 for a fresh run).
    #[serde(default)]
    pub resumed_from_row: u64,
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
    import_key: i64,
    total_rows: u64,
    card_type: String,
    sha256_hex: String,
    resumed_from_row: u64,
    already: Option<ImportReport>,
}

/// The importer: a pool, the keys and the limits.
#[derive(Debug, Clone)]
pub struct Importer {
    pool: PgPool,
    keks: Arc<KekRing>,
    transport_keys: Arc<TransportKeys>,
    limits: Limits,
}

/// A chunk of staged rows, ready to write.
struct Chunk {
    copy: Vec<u8>,
    problems: Vec<RowProblem>,
    rows: u64,
}

/// The columns of `carddata.card_rows` a chunk's `COPY` fills (see `encode_copy_row`).
const STAGED_COLUMNS: &str = "import_key, line, iccid, imsi, fingerprint, kek_id, secrets, acc, msisdn, mcc, mnc, smsp, name";

/// The advisory lock that lets one import of a file run at a time.
fn lock_name(sha256_hex: &str, card_type: &str) -> String {
    format!("carddata.import:{sha256_hex}:{card_type}")
}

/// Releases a file's advisory lock and closes its connection. The lock is released explicitly:
/// a closed connection frees its locks only when the server notices, and an import of the same
/// file right after must not be told it is still running.
async fn release(
    mut lock: PgConnection,
    sha256_hex: &str,
    card_type: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
        .bind(lock_name(sha256_hex, card_type))
        .execute(&mut lock)
        .await?;
    lock.close().await
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
        let mut staged = self.stage(file, request, progress).await?;
        if let Some(report) = staged.already.take() {
            release(staged.lock, &staged.sha256_hex, &staged.card_type).await?;
            return Ok(report);
        }
        let mut lock = staged.lock;
        let mut transaction = lock.begin().await?;
        let report = promote(
            &mut transaction,
            staged.import_key,
            staged.total_rows,
            &staged.card_type,
            &staged.sha256_hex,
            staged.resumed_from_row,
            self.limits.max_listed_problems,
            progress,
        )
        .await?;
        transaction.commit().await?;
        release(lock, &staged.sha256_hex, &staged.card_type).await?;
        Ok(report)
    }

    /// Promotes a staged file inside the caller's transaction (the queue worker's path, so the
    /// cards and the job's inbox record commit together).
    pub async fn finish(
        &self,
        db: &mut PgConnection,
        mut staged: Staged,
    ) -> Result<ImportReport, ImportError> {
        if let Some(report) = staged.already.take() {
            release(staged.lock, &staged.sha256_hex, &staged.card_type).await?;
            return Ok(report);
        }
        let report = promote(
            db,
            staged.import_key,
            staged.total_rows,
            &staged.card_type,
            &staged.sha256_hex,
            staged.resumed_from_row,
            self.limits.max_listed_problems,
            &NoProgress,
        )
        .await?;
        // The advisory lock goes with the connection; a second import of the same file that
        // starts before the caller commits waits on the `imports` row lock and then sees `done`.
        release(staged.lock, &staged.sha256_hex, &staged.card_type).await?;
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
        let structure = {
            let file = file.clone();
            let transport = transport.clone();
            let max_line = self.limits.max_line_bytes;
            tokio::task::spawn_blocking(move || {
                csvfile::check_structure(file.open()?, max_line, transport.as_ref())
            })
            .await
            .map_err(|error| ImportError::Internal(anyhow::Error::new(error)))??
        };
        let sha256_hex = hex::encode(structure.sha256);
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            rows = structure.data_rows,
            "structure pass done"
        );

        let mut lock = PgConnection::connect_with(&self.pool.connect_options()).await?;
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                .bind(lock_name(&sha256_hex, &request.card_type))
                .fetch_one(&mut lock)
                .await?;
        if !locked {
            return Err(ImportError::Busy);
        }

        let existing: Option<(i64, String, i64, Option<sqlx::types::Json<ImportReport>>)> =
            sqlx::query_as(
                "SELECT import_key, state, rows_read, report FROM carddata.imports \
                 WHERE file_sha256 = $1 AND card_type = $2 FOR SHARE",
            )
            .bind(structure.sha256.as_slice())
            .bind(&request.card_type)
            .fetch_optional(&mut lock)
            .await?;
        let total_rows = structure.data_rows;
        let (import_key, rows_read) = match existing {
            Some((_, state, _, Some(report))) if state == "done" => {
                let mut report = report.0;
                report.already_imported = true;
                report.resumed_from_row = 0;
                return Ok(Staged {
                    lock,
                    import_key: 0,
                    total_rows,
                    card_type: request.card_type.clone(),
                    sha256_hex,
                    resumed_from_row: 0,
                    already: Some(report),
                });
            }
            Some((import_key, _, rows_read, _)) => {
                let rows_read = checked_resume_point(&mut lock, import_key, rows_read).await?;
                (import_key, rows_read)
            }
            None => (
                create_import(&mut lock, &structure.sha256, total_rows, request).await?,
                0,
            ),
        };
        let resumed_from_row = u64::try_from(rows_read).unwrap_or_default();
        if resumed_from_row > 0 {
            tracing::info!(
                import_key,
                resumed_from_row,
                "resuming an interrupted card data import"
            );
        }
        progress.start(total_rows, resumed_from_row);
        let staging_started = std::time::Instant::now();

        let staged = self
            .stage_rows(
                &mut lock,
                file,
                structure.header,
                structure.sha256,
                total_rows,
                resumed_from_row,
                import_key,
                &request.card_type,
                transport,
                progress,
            )
            .await;
        if let Err(ImportError::File(rejection)) = &staged {
            tracing::warn!(
                import_key,
                code = rejection.reason.code,
                "card data file refused while staging; dropping what was staged"
            );
            discard_import(&mut lock, import_key).await?;
        }
        staged?;
        tracing::debug!(
            import_key,
            elapsed_ms = staging_started.elapsed().as_millis() as u64,
            "staging pass done"
        );
        Ok(Staged {
            lock,
            import_key,
            total_rows,
            card_type: request.card_type.clone(),
            sha256_hex,
            resumed_from_row,
            already: None,
        })
    }

    #[allow(clippy::too_many_arguments)] // One call site; a struct would only rename them.
    async fn stage_rows(
        &self,
        lock: &mut PgConnection,
        file: CardFile,
        header: Header,
        sha256: [u8; 32],
        total_rows: u64,
        skip: u64,
        import_key: i64,
        card_type: &str,
        transport: Option<TransportKey>,
        progress: &dyn Progress,
    ) -> Result<(), ImportError> {
        let (sender, mut receiver) = mpsc::channel::<Result<Chunk, FileRejection>>(2);
        let producer = {
            let keks = Arc::clone(&self.keks);
            let card_type = card_type.to_owned();
            let limits = self.limits;
            tokio::task::spawn_blocking(move || {
                let result = keks
                    .current()
                    .map_err(|_| FileRejection::new(reasons::FILE_UNREADABLE))
                    .and_then(|kek| {
                        produce_chunks(
                            import_key,
                            &file,
                            &header,
                            sha256,
                            total_rows,
                            skip,
                            &card_type,
                            transport.as_ref(),
                            kek,
                            limits,
                            &sender,
                        )
                    });
                if let Err(rejection) = result {
                    let _ = sender.blocking_send(Err(rejection));
                }
            })
        };
        let copy_statement =
            format!("COPY carddata.card_rows ({STAGED_COLUMNS}) FROM STDIN (FORMAT binary)");
        while let Some(chunk) = receiver.recv().await {
            let mut chunk = chunk?;
            chunk.copy.extend_from_slice(COPY_BINARY_TRAILER);
            let mut transaction = lock.begin().await?;
            let mut copy = transaction.copy_in_raw(&copy_statement).await?;
            copy.send(chunk.copy).await?;
            copy.finish().await?;
            record_problems(&mut transaction, import_key, &chunk.problems).await?;
            sqlx::query(
                "UPDATE carddata.imports SET rows_read = rows_read + $2 WHERE import_key = $1",
            )
            .bind(import_key)
            .bind(i64::try_from(chunk.rows).unwrap_or(i64::MAX))
            .execute(&mut *transaction)
            .await?;
            transaction.commit().await?;
            progress.advance(chunk.rows);
        }
        producer
            .await
            .map_err(|error| ImportError::Internal(anyhow::Error::new(error)))?;
        Ok(())
    }
}

/// Creates the `imports` row (state 'staging': readers do not see its rows).
async fn create_import(
    lock: &mut PgConnection,
    sha256: &[u8; 32],
    total_rows: u64,
    request: &ImportRequest,
) -> Result<i64, ImportError> {
    let import_key: i64 = sqlx::query_scalar(
        "INSERT INTO carddata.imports (file_sha256, card_type, file_name, started_by, state, total_rows) \
         VALUES ($1, $2, $3, $4, 'staging', $5) RETURNING import_key",
    )
    .bind(sha256.as_slice())
    .bind(&request.card_type)
    .bind(&request.file_name)
    .bind(&request.staff_id)
    .bind(i64::try_from(total_rows).unwrap_or(i64::MAX))
    .fetch_one(&mut *lock)
    .await?;
    Ok(import_key)
}

/// The checkpoint of an interrupted import, or 0 after clearing it when the staged rows do
/// not add up to it (each chunk commits its rows, refusals and checkpoint together, so this
/// is a guard against a defect or a hand edit rather than an expected case).
async fn checked_resume_point(
    lock: &mut PgConnection,
    import_key: i64,
    rows_read: i64,
) -> Result<i64, ImportError> {
    let (staged, refused): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM carddata.card_rows WHERE import_key = $1), \
                (SELECT count(DISTINCT line) FROM carddata.import_problems WHERE import_key = $1 \
                 AND code NOT IN ('ICCID_DUPLICATE_IN_FILE', 'IMSI_DUPLICATE_IN_FILE'))",
    )
    .bind(import_key)
    .fetch_one(&mut *lock)
    .await?;
    if staged + refused == rows_read {
        return Ok(rows_read);
    }
    tracing::warn!(
        import_key,
        "staged rows do not match the checkpoint; staging the file again"
    );
    let mut transaction = lock.begin().await?;
    clear_staged(&mut transaction, import_key).await?;
    sqlx::query("UPDATE carddata.imports SET rows_read = 0 WHERE import_key = $1")
        .bind(import_key)
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await?;
    Ok(0)
}

/// Deletes the rows and refusals an import staged (it is still 'staging': nobody sees them).
async fn clear_staged(db: &mut PgConnection, import_key: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM carddata.card_rows WHERE import_key = $1")
        .bind(import_key)
        .execute(&mut *db)
        .await?;
    sqlx::query("DELETE FROM carddata.import_problems WHERE import_key = $1")
        .bind(import_key)
        .execute(&mut *db)
        .await?;
    Ok(())
}

/// Drops everything an import staged (the file was refused while staging).
async fn discard_import(lock: &mut PgConnection, import_key: i64) -> Result<(), ImportError> {
    let mut transaction = lock.begin().await?;
    let deleted =
        sqlx::query("DELETE FROM carddata.imports WHERE import_key = $1 AND state = 'staging'")
            .bind(import_key)
            .execute(&mut *transaction)
            .await?;
    if deleted.rows_affected() > 0 {
        sqlx::query("DELETE FROM carddata.card_rows WHERE import_key = $1")
            .bind(import_key)
            .execute(&mut *transaction)
            .await?;
    }
    transaction.commit().await?;
    Ok(())
}

async fn record_problems(
    db: &mut PgConnection,
    import_key: i64,
    problems: &[RowProblem],
) -> Result<(), sqlx::Error> {
    if problems.is_empty() {
        return Ok(());
    }
    let lines: Vec<i64> = problems
        .iter()
        .map(|problem| i64::try_from(problem.line).unwrap_or(i64::MAX))
        .collect();
    let columns: Vec<Option<String>> = problems
        .iter()
        .map(|problem| problem.column.clone())
        .collect();
    let codes: Vec<String> = problems
        .iter()
        .map(|problem| problem.code.clone())
        .collect();
    sqlx::query(
        "INSERT INTO carddata.import_problems (import_key, line, column_name, code) \
         SELECT $1, line, column_name, code FROM unnest($2::bigint[], $3::text[], $4::text[]) \
         AS p(line, column_name, code)",
    )
    .bind(import_key)
    .bind(lines)
    .bind(columns)
    .bind(codes)
    .execute(db)
    .await?;
    Ok(())
}

/// The staging pass, on a blocking thread: reads the file again from the start (hashing it, so
/// a file changed since the structure pass is noticed), skips `skip` rows already staged, and
/// sends chunks of validated, sealed rows.
#[allow(clippy::too_many_arguments)] // One call site.
fn produce_chunks(
    import_key: i64,
    file: &CardFile,
    header: &Header,
    sha256: [u8; 32],
    total_rows: u64,
    skip: u64,
    card_type: &str,
    transport: Option<&TransportKey>,
    kek: &Kek,
    limits: Limits,
    sender: &mpsc::Sender<Result<Chunk, FileRejection>>,
) -> Result<(), FileRejection> {
    let mut reader = csvfile::csv_reader(Guarded::new(file.open()?, limits.max_line_bytes, true));
    let mut csv_record = csv::ByteRecord::new();
    let (read_header, _) = csvfile::read_header(&mut reader, &mut csv_record)?;
    if &read_header != header {
        return Err(FileRejection::new(reasons::FILE_CHANGED));
    }
    let new_chunk = || {
        let mut copy = Vec::with_capacity(limits.chunk_rows.saturating_mul(300));
        copy.extend_from_slice(COPY_BINARY_HEADER);
        Chunk {
            copy,
            problems: Vec::new(),
            rows: 0,
        }
    };
    let mut chunk = new_chunk();
    let mut record = Zeroizing::new(Vec::with_capacity(64));
    let mut seen = 0u64;
    let mut duplicates = InFileDuplicates::default();
    let mut skipped_problems = Vec::new();
    while let Some(line) = csvfile::next_row(&mut reader, &mut csv_record, header)? {
        seen += 1;
        let fields = csvfile::fields_of(&csv_record, line)?;
        if seen <= skip {
            // Staged by an earlier run: only its keys are needed, to find duplicates.
            if let Some(row) =
                validate::validate_row(header, &fields, line, transport, &mut skipped_problems)
            {
                duplicates.check(&row, false, &mut chunk.problems);
            }
            skipped_problems.clear();
            continue;
        }
        if let Some(row) =
            validate::validate_row(header, &fields, line, transport, &mut chunk.problems)
        {
            duplicates.check(&row, true, &mut chunk.problems);
            encode_copy_row(
                &mut chunk.copy,
                import_key,
                card_type,
                &row,
                kek,
                &mut record,
            );
        }
        chunk.rows += 1;
        if chunk.rows as usize >= limits.chunk_rows {
            let full = std::mem::replace(&mut chunk, new_chunk());
            if sender.blocking_send(Ok(full)).is_err() {
                return Ok(());
            }
        }
    }
    if seen != total_rows || reader.into_inner().finish_hash() != sha256 {
        return Err(FileRejection::new(reasons::FILE_CHANGED));
    }
    if chunk.rows > 0 {
        let _ = sender.blocking_send(Ok(chunk));
    }
    Ok(())
}

/// A digit string as a number that keeps its length (so `0123` and `123` differ); `None` for
/// anything else (validated ICCIDs and IMSIs are 6 to 20 digits, which always fit).
fn digits_key(digits: &str) -> Option<u128> {
    if digits.len() > 32 {
        return None;
    }
    let value: u128 = digits.parse().ok()?;
    value
        .checked_mul(64)
        .and_then(|value| value.checked_add(digits.len() as u128))
}

/// Key → first line, and whether its occurrences have been refused yet.
type SeenKeys = std::collections::HashMap<u128, (u64, bool)>;

/// Finds ICCIDs and IMSIs that occur more than once among the valid rows of a file, as the
/// staging pass reads it: every occurrence is refused (we cannot tell which one is right).
/// The first occurrence may already be in an earlier chunk; its refusal is recorded with the
/// chunk of the second, and promotion deletes refused rows.
#[derive(Default)]
struct InFileDuplicates {
    iccids: SeenKeys,
    imsis: SeenKeys,
}

impl InFileDuplicates {
    /// Notes a valid row. `record` is false for rows an earlier run staged: their refusals were
    /// recorded then (an earlier run saw every duplicate pair that lies before its checkpoint).
    fn check(&mut self, row: &CardRow, record: bool, problems: &mut Vec<RowProblem>) {
        let checks = [
            (
                &mut self.iccids,
                row.iccid.as_str(),
                "ICCID",
                reasons::ICCID_DUPLICATE_IN_FILE,
            ),
            (
                &mut self.imsis,
                row.imsi.as_str(),
                "IMSI",
                reasons::IMSI_DUPLICATE_IN_FILE,
            ),
        ];
        for (seen, value, column, reason) in checks {
            let Some(key) = digits_key(value) else {
                continue;
            };
            match seen.entry(key) {
                std::collections::hash_map::Entry::Vacant(entry) => {
                    entry.insert((row.line, false));
                }
                std::collections::hash_map::Entry::Occupied(mut entry) => {
                    let (first_line, refused) = entry.get_mut();
                    if record {
                        if !*refused {
                            problems.push(reason.for_row(*first_line, Some(column)));
                        }
                        problems.push(reason.for_row(row.line, Some(column)));
                    }
                    *refused = true;
                }
            }
        }
    }
}

/// The header of PostgreSQL's binary COPY format: signature, flags, header extension length.
const COPY_BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The trailer of PostgreSQL's binary COPY format.
const COPY_BINARY_TRAILER: &[u8] = &[0xff, 0xff];
/// Fields per staged row (see `STAGED_COLUMNS`).
const STAGED_FIELDS: i16 = 13;

/// Appends one field in binary COPY format: length, then the bytes (text and bytea alike).
fn push_field(out: &mut Vec<u8>, bytes: &[u8]) {
    let length = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(bytes);
}

fn push_null(out: &mut Vec<u8>) {
    out.extend_from_slice(&(-1i32).to_be_bytes());
}

fn push_optional(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => push_field(out, bytes),
        None => push_null(out),
    }
}

/// One row of `carddata.card_rows` in binary COPY format, its secrets sealed as one record.
/// Binary format saves PostgreSQL from parsing hex for the sealed value and the fingerprint.
/// `record` is a scratch buffer for the plain record, wiped after each row.
fn encode_copy_row(
    out: &mut Vec<u8>,
    import_key: i64,
    card_type: &str,
    row: &CardRow,
    kek: &Kek,
    record: &mut Zeroizing<Vec<u8>>,
) {
    let iccid = row.iccid.as_str();
    out.extend_from_slice(&STAGED_FIELDS.to_be_bytes());
    push_field(out, &import_key.to_be_bytes());
    let line = i64::try_from(row.line).unwrap_or(i64::MAX);
    push_field(out, &line.to_be_bytes());
    push_field(out, iccid.as_bytes());
    push_field(out, row.imsi.as_bytes());
    push_field(out, &validate::fingerprint(card_type, row));
    push_field(out, kek.id().as_bytes());
    SecretRecord::encode_into(record, &row.ki, &row.opc, &row.adm1, &row.pins);
    push_field(out, &kek.seal_record(iccid, record));
    record.zeroize();
    let extras = &row.extras;
    for value in [
        &extras.acc,
        &extras.msisdn,
        &extras.mcc,
        &extras.mnc,
        &extras.smsp,
        &extras.name,
    ] {
        push_optional(out, value.as_deref().map(str::as_bytes));
    }
}

/// The set-based refusals of promotion, against the cards already stored: (column, code, SQL
/// selecting the refused lines). Duplicates within the file are refused while staging.
const SET_CHECKS: [(&str, Reason, &str); 2] = [
    (
        "ICCID",
        reasons::ICCID_CONFLICT,
        "SELECT s.line FROM carddata.card_rows s JOIN carddata.cards c ON c.iccid = s.iccid \
         WHERE s.import_key = $1 AND c.fingerprint <> s.fingerprint",
    ),
    (
        "IMSI",
        reasons::IMSI_CONFLICT,
        "SELECT s.line FROM carddata.card_rows s JOIN carddata.cards c ON c.imsi = s.imsi \
         WHERE s.import_key = $1 AND c.iccid <> s.iccid",
    ),
];

/// The final transaction: refuse duplicates and conflicts, delete the refused rows and those of
/// cards already stored with the same content, store the report and flip the import to 'done',
/// which makes the rest visible in `carddata.cards`.
#[allow(clippy::too_many_arguments)] // Two call sites with the parts of a `Staged`.
async fn promote(
    db: &mut PgConnection,
    import_key: i64,
    total_rows: u64,
    card_type: &str,
    sha256_hex: &str,
    resumed_from_row: u64,
    max_listed: usize,
    progress: &dyn Progress,
) -> Result<ImportReport, ImportError> {
    progress.promoting();
    let started = std::time::Instant::now();
    let (state, stored): (String, Option<sqlx::types::Json<ImportReport>>) = sqlx::query_as(
        "SELECT state, report FROM carddata.imports WHERE import_key = $1 FOR UPDATE",
    )
    .bind(import_key)
    .fetch_one(&mut *db)
    .await?;
    if let (true, Some(report)) = (state == "done", stored) {
        let mut report = report.0;
        report.already_imported = true;
        return Ok(report);
    }
    // The duplicate checks hash a million keys; let them do it in memory.
    sqlx::query("SET LOCAL work_mem = '256MB'")
        .execute(&mut *db)
        .await?;
    // The statements below are planned as costly (a million rows) but run once: compiling
    // them with JIT takes longer than running them.
    sqlx::query("SET LOCAL jit = off").execute(&mut *db).await?;
    // Promotions (and KEK rotation, and other imports' chunks) take turns, so the conflict
    // checks see every stored card; readers of carddata.cards are not blocked.
    sqlx::query("LOCK TABLE carddata.card_rows IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *db)
        .await?;

    let (staged_rows, refused_rows, rows_read): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM carddata.card_rows WHERE import_key = $1), \
                (SELECT count(DISTINCT line) FROM carddata.import_problems WHERE import_key = $1 \
                 AND code NOT IN ('ICCID_DUPLICATE_IN_FILE', 'IMSI_DUPLICATE_IN_FILE')), \
                (SELECT rows_read FROM carddata.imports WHERE import_key = $1)",
    )
    .bind(import_key)
    .fetch_one(&mut *db)
    .await?;
    let expected = i64::try_from(total_rows).unwrap_or(i64::MAX);
    if staged_rows + refused_rows != expected || rows_read != expected {
        return Err(ImportError::Internal(anyhow::anyhow!(
            "import {import_key}: {staged_rows} staged and {refused_rows} refused rows do not add up to \
             the file's {total_rows} rows; import the file again to restage it"
        )));
    }

    for (column, reason, select_lines) in SET_CHECKS {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO carddata.import_problems (import_key, line, column_name, code) \
             SELECT $1, line, $2, $3 FROM ({select_lines}) refused"
        )))
        .bind(import_key)
        .bind(column)
        .bind(reason.code)
        .execute(&mut *db)
        .await?;
    }

    tracing::debug!(
        import_key,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "set-based checks done"
    );
    // Refused rows go, and so do rows of cards already stored (the same content again: accepted,
    // and the stored row stays as it is; other content was refused just above).
    sqlx::query(
        "DELETE FROM carddata.card_rows s WHERE s.import_key = $1 AND \
         (s.line IN (SELECT line FROM carddata.import_problems WHERE import_key = $1) \
          OR EXISTS (SELECT 1 FROM carddata.cards c WHERE c.iccid = s.iccid))",
    )
    .bind(import_key)
    .execute(&mut *db)
    .await?;
    tracing::debug!(
        import_key,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "refused rows deleted"
    );

    let rejected: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT line) FROM carddata.import_problems WHERE import_key = $1",
    )
    .bind(import_key)
    .fetch_one(&mut *db)
    .await?;
    let listed: Vec<(i64, Option<String>, String)> = sqlx::query_as(
        "SELECT line, column_name, code FROM carddata.import_problems WHERE import_key = $1 \
         ORDER BY line, column_name, code LIMIT $2",
    )
    .bind(import_key)
    .bind(i64::try_from(max_listed).unwrap_or(i64::MAX))
    .fetch_all(&mut *db)
    .await?;
    let problems = listed
        .into_iter()
        .map(|(line, column, code)| {
            let reason = Reason::by_code(&code).unwrap_or(reasons::FIELD_INVALID);
            reason.for_row(u64::try_from(line).unwrap_or_default(), column.as_deref())
        })
        .collect();
    let rejected = u64::try_from(rejected).unwrap_or_default();
    let report = ImportReport {
        file_sha256: sha256_hex.to_owned(),
        card_type: card_type.to_owned(),
        total_rows,
        accepted: total_rows.saturating_sub(rejected),
        rejected,
        problems,
        already_imported: false,
        resumed_from_row: 0,
    };
    sqlx::query(
        "UPDATE carddata.imports SET state = 'done', accepted = $2, rejected = $3, report = $4, \
         finished_at = now() WHERE import_key = $1",
    )
    .bind(import_key)
    .bind(i64::try_from(report.accepted).unwrap_or(i64::MAX))
    .bind(i64::try_from(report.rejected).unwrap_or(i64::MAX))
    .bind(sqlx::types::Json(&report))
    .execute(&mut *db)
    .await?;
    tracing::debug!(
        import_key,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "promotion done"
    );
    Ok(ImportReport {
        resumed_from_row,
        ..report
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_copy_fields_are_length_prefixed() {
        let mut out = Vec::new();
        push_field(&mut out, b"ab");
        push_null(&mut out);
        assert_eq!(out, [0, 0, 0, 2, b'a', b'b', 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(COPY_BINARY_HEADER.len(), 19);
    }

    #[test]
    fn digit_keys_keep_leading_zeros_apart() {
        assert_ne!(digits_key("0123456"), digits_key("123456"));
        assert_eq!(
            digits_key("89860110000000000094"),
            digits_key("89860110000000000094")
        );
        assert!(digits_key("89860110000000000094").is_some());
        assert!(digits_key("12a").is_none());
    }

    #[test]
    fn card_types_are_codes() {
        assert!(valid_card_type("USIM128K_NORMAL"));
        assert!(!valid_card_type(""));
        assert!(!valid_card_type("a b"));
    }
}
