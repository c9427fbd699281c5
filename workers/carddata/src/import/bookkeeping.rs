//! The import's records: the file's advisory lock (one import of a file at a time), its row in
//! `carddata.imports` (created, resumed at its checkpoint, discarded) and its refused rows in
//! `carddata.import_problems`.

use simflow_schemas::cardfile::RowProblem;
use sqlx::{Connection, PgConnection, PgPool};

use super::{ImportError, ImportReport, ImportRequest, StagedFile};

/// The advisory lock that lets one import of a file run at a time.
fn lock_name(file: &StagedFile) -> String {
    format!("carddata.import:{}:{}", file.sha256_hex, file.card_type)
}

/// A dedicated connection holding the file's advisory lock; [`ImportError::Busy`] when another
/// process holds it.
pub(super) async fn lock(pool: &PgPool, file: &StagedFile) -> Result<PgConnection, ImportError> {
    let mut lock = PgConnection::connect_with(&pool.connect_options()).await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind(lock_name(file))
        .fetch_one(&mut lock)
        .await?;
    if !locked {
        return Err(ImportError::Busy);
    }
    Ok(lock)
}

/// Releases a file's advisory lock and closes its connection. The lock is released explicitly:
/// a closed connection frees its locks only when the server notices, and an import of the same
/// file right after must not be told it is still running.
pub(super) async fn release(mut lock: PgConnection, file: &StagedFile) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
        .bind(lock_name(file))
        .execute(&mut lock)
        .await?;
    lock.close().await
}

/// What the database knows of a file.
pub(super) enum Existing {
    /// Imported before: its report, marked as such.
    Done(ImportReport),
    /// An interrupted import, with its checkpoint.
    Staging { import_key: i64, rows_read: i64 },
    /// Never seen.
    None,
}

/// Looks the file up (under the advisory lock, so nothing changes it meanwhile).
pub(super) async fn existing(
    lock: &mut PgConnection,
    sha256: &[u8; 32],
    card_type: &str,
) -> Result<Existing, sqlx::Error> {
    let existing: Option<(i64, String, i64, Option<sqlx::types::Json<ImportReport>>)> =
        sqlx::query_as(
            "SELECT import_key, state, rows_read, report FROM carddata.imports \
             WHERE file_sha256 = $1 AND card_type = $2 FOR SHARE",
        )
        .bind(sha256.as_slice())
        .bind(card_type)
        .fetch_optional(&mut *lock)
        .await?;
    Ok(match existing {
        Some((_, state, _, Some(report))) if state == "done" => {
            let mut report = report.0;
            report.already_imported = true;
            report.resumed_from_row = 0;
            Existing::Done(report)
        }
        Some((import_key, _, rows_read, _)) => Existing::Staging {
            import_key,
            rows_read,
        },
        None => Existing::None,
    })
}

/// Creates the `imports` row (state 'staging': readers do not see its rows).
pub(super) async fn create_import(
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
pub(super) async fn checked_resume_point(
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
pub(super) async fn discard_import(
    lock: &mut PgConnection,
    import_key: i64,
) -> Result<(), ImportError> {
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

pub(super) async fn record_problems(
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
