//! The report of an import: what it took and what it refused, read back from
//! `carddata.import_problems` at promotion and stored with the import, so importing the same
//! file again answers exactly the same.

use serde::{Deserialize, Serialize};
use simflow_schemas::cardfile::RowProblem;
use sqlx::PgConnection;

use super::StagedFile;
use crate::reasons::{self, Reason, RowReason};

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

/// The report of a staged import from its refused rows: all are counted, the first
/// `max_listed` by line are listed. `resumed_from_row` is left at 0 (it is not stored).
pub(super) async fn read(
    db: &mut PgConnection,
    file: &StagedFile,
    max_listed: usize,
) -> Result<ImportReport, sqlx::Error> {
    let import_key = file.import_key;
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
    Ok(ImportReport {
        file_sha256: file.sha256_hex.clone(),
        card_type: file.card_type.clone(),
        total_rows: file.total_rows,
        accepted: file.total_rows.saturating_sub(rejected),
        rejected,
        problems,
        already_imported: false,
        resumed_from_row: 0,
    })
}
