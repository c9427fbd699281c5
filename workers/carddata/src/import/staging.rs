//! The writer of the staging pass: runs the producer (`rows`) on a blocking thread and writes
//! each chunk it sends with binary `COPY` into `carddata.card_rows`; a chunk's rows, its
//! refused rows and the checkpoint commit together, so an interrupted import resumes there.

use std::sync::Arc;

use sqlx::{Connection, PgConnection};
use tokio::sync::mpsc;

use super::rows::{self, Chunk, Pass};
use super::{ImportError, Limits, Progress, bookkeeping, copy};
use crate::csvfile::FileRejection;
use crate::kek::KekRing;
use crate::reasons;

/// Chunks produced but not yet written: the producer runs at most this far ahead.
const CHUNKS_AHEAD: usize = 2;

/// Stages the rows of `pass` on `lock` (the connection holding the file's advisory lock),
/// sealing under the current KEK of `keks`; answers the file's number of data rows, which it
/// also stores with the import.
pub(super) async fn stage_rows(
    lock: &mut PgConnection,
    pass: Pass,
    keks: Arc<KekRing>,
    limits: Limits,
    progress: &dyn Progress,
) -> Result<u64, ImportError> {
    let import_key = pass.import_key;
    let (sender, mut receiver) = mpsc::channel::<Result<Chunk, FileRejection>>(CHUNKS_AHEAD);
    let producer = tokio::task::spawn_blocking(move || {
        let result = keks
            .current()
            .map_err(|_| FileRejection::new(reasons::FILE_UNREADABLE))
            .and_then(|kek| rows::produce_chunks(&pass, kek, limits, &sender));
        match result {
            Ok(rows) => Some(rows),
            Err(rejection) => {
                let _ = sender.blocking_send(Err(rejection));
                None
            }
        }
    });
    let copy_statement = format!(
        "COPY carddata.card_rows ({}) FROM STDIN (FORMAT binary)",
        copy::COLUMNS
    );
    while let Some(chunk) = receiver.recv().await {
        let mut chunk = chunk?;
        chunk.copy.extend_from_slice(copy::TRAILER);
        let mut transaction = lock.begin().await?;
        // A chunk's commit need not wait for its WAL to reach the disk: after a server crash
        // the import resumes at the last checkpoint that did (rows, refusals and checkpoint of
        // a chunk are one transaction either way), and promotion commits synchronously.
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *transaction)
            .await?;
        let mut copy = transaction.copy_in_raw(&copy_statement).await?;
        copy.send(chunk.copy).await?;
        copy.finish().await?;
        bookkeeping::record_problems(&mut transaction, import_key, &chunk.problems).await?;
        sqlx::query("UPDATE carddata.imports SET rows_read = rows_read + $2 WHERE import_key = $1")
            .bind(import_key)
            .bind(i64::try_from(chunk.rows).unwrap_or(i64::MAX))
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        progress.advance(chunk.rows);
    }
    let rows = producer
        .await
        .map_err(|error| ImportError::Internal(anyhow::Error::new(error)))?
        .ok_or_else(|| {
            ImportError::Internal(anyhow::anyhow!(
                "import {import_key}: the staging pass stopped without a reason"
            ))
        })?;
    sqlx::query("UPDATE carddata.imports SET total_rows = $2 WHERE import_key = $1")
        .bind(import_key)
        .bind(i64::try_from(rows).unwrap_or(i64::MAX))
        .execute(&mut *lock)
        .await?;
    Ok(rows)
}
