//! Promotion, the import's final transaction: conflicts with the cards already stored are
//! refused set-based, refused rows and rows of cards already stored with the same content are
//! deleted, the report is stored and the import flips to 'done', which makes the rest of its
//! rows visible in `carddata.cards` at once.

use sqlx::PgConnection;

use super::{ImportError, ImportReport, Progress, StagedFile, report};
use crate::reasons::{self, Reason};

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
pub(super) async fn promote(
    db: &mut PgConnection,
    file: &StagedFile,
    max_listed: usize,
    progress: &dyn Progress,
) -> Result<ImportReport, ImportError> {
    let import_key = file.import_key;
    let total_rows = file.total_rows;
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

    let report = report::read(&mut *db, file, max_listed).await?;
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
        resumed_from_row: file.resumed_from_row,
        ..report
    })
}
