//! Key rotation: re-encrypting stored card keys under the current key-encryption key.
//!
//! To rotate, an operator configures a new KEK as the current one (`kek_id` + `kek`), moves
//! the old one into `retired_keks`, and runs `simflow carddata rotate-kek`. Rotation walks the
//! rows whose `kek_id` is not the current id in batches; each batch is opened with its old KEK,
//! sealed again under the current one and committed on its own, so an interrupted rotation
//! resumes where it stopped and running it twice is harmless. When it reports nothing left, the
//! retired KEK can be removed from the configuration (readers use the KEK each row names, so
//! the process keeps working throughout).
//!
//! Rotation walks every stored row, finished or still staging (they share `carddata.card_rows`),
//! and writes format v2 (one sealed record per card); rows still in format v1 (one sealed value
//! per column, from before migration 0002) are rewritten even when already under the current
//! KEK. An import that is staging while the KEK changes keeps sealing its next chunks under the
//! KEK it started with; run rotation again after such an import finishes.
//! This module does not manage KEKs themselves: they come from configuration.

use sqlx::{Connection, PgPool};

use zeroize::{Zeroize, Zeroizing};

use crate::kek::{KekConfigError, KekRing, OpenError};
use crate::keys::{FetchError, SealedColumns};
use crate::secrets::SecretRecord;

/// Why rotation stopped.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// No current KEK.
    #[error(transparent)]
    Keys(#[from] KekConfigError),
    /// A row is under a KEK that is not configured, or did not open.
    #[error("{0}; configure the KEK in carddata.retired_keks and run rotate-kek again")]
    Open(#[from] OpenError),
    /// A row opened but its content is not well formed (a defect or altered data).
    #[error("the stored {0} of a card has the wrong size")]
    Malformed(&'static str),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// What a rotation did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RotationReport {
    /// The KEK every row is now under.
    pub current_kek_id: String,
    /// Rows re-encrypted by this run.
    pub rotated: u64,
    /// Rows still under another KEK or in format v1 (0 when finished).
    pub remaining: u64,
    /// Imports still staging (their rows are promoted under their staging KEK).
    pub imports_staging: u64,
}

#[derive(sqlx::FromRow)]
struct Row {
    iccid: String,
    import_key: i64,
    line: Option<i64>,
    #[sqlx(flatten)]
    sealed: SealedColumns,
}

/// Re-encrypts every row not under the current KEK (or not yet in format v2), `batch_size`
/// rows per transaction;
/// `on_batch` is told the running total after each batch.
pub async fn rotate_kek(
    pool: &PgPool,
    kek_ring: &KekRing,
    batch_size: u32,
    on_batch: &(dyn Fn(u64) + Send + Sync),
) -> Result<RotationReport, RotateError> {
    let current = kek_ring.current()?;
    let mut rotated = 0u64;
    let mut connection = pool.acquire().await?;
    loop {
        let mut transaction = connection.begin().await?;
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT iccid, import_key, line, kek_id, secrets, ki, opc, adm1, pin1, puk1, pin2, puk2 \
             FROM carddata.card_rows WHERE kek_id <> $1 OR secrets IS NULL \
             ORDER BY iccid LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(current.id())
        .bind(i64::from(batch_size.max(1)))
        .fetch_all(&mut *transaction)
        .await?;
        if rows.is_empty() {
            transaction.commit().await?;
            break;
        }
        let mut iccids = Vec::with_capacity(rows.len());
        let mut import_keys = Vec::with_capacity(rows.len());
        let mut lines = Vec::with_capacity(rows.len());
        let mut sealed = Vec::with_capacity(rows.len());
        let mut record = Zeroizing::new(Vec::with_capacity(64));
        for row in &rows {
            let (ki, opc, adm1, pins) =
                row.sealed
                    .open(kek_ring, &row.iccid)
                    .map_err(|error| match error {
                        FetchError::Open(error) => RotateError::Open(error),
                        FetchError::Malformed(what) => RotateError::Malformed(what),
                        FetchError::Database(error) => RotateError::Database(error),
                    })?;
            SecretRecord::encode_into(&mut record, &ki, &opc, &adm1, &pins);
            sealed.push(current.seal_record(&row.iccid, &record));
            record.zeroize();
            iccids.push(row.iccid.clone());
            import_keys.push(row.import_key);
            lines.push(row.line);
        }
        // A row is its import and line (an ICCID can be in a finished import and in one still
        // staging); rows from before migration 0002 have no line, but their ICCIDs were unique.
        sqlx::query(
            "UPDATE carddata.card_rows c SET kek_id = $1, secrets = u.secrets, ki = NULL, \
                    opc = NULL, adm1 = NULL, pin1 = NULL, puk1 = NULL, pin2 = NULL, puk2 = NULL \
             FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::bytea[]) \
                  AS u(iccid, import_key, line, secrets) \
             WHERE c.iccid = u.iccid AND c.import_key = u.import_key \
               AND c.line IS NOT DISTINCT FROM u.line",
        )
        .bind(current.id())
        .bind(&iccids)
        .bind(&import_keys)
        .bind(&lines)
        .bind(&sealed)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        rotated += rows.len() as u64;
        on_batch(rotated);
    }
    let remaining: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM carddata.card_rows WHERE kek_id <> $1 OR secrets IS NULL",
    )
    .bind(current.id())
    .fetch_one(&mut *connection)
    .await?;
    let imports_staging: i64 =
        sqlx::query_scalar("SELECT count(*) FROM carddata.imports WHERE state = 'staging'")
            .fetch_one(&mut *connection)
            .await?;
    Ok(RotationReport {
        current_kek_id: current.id().to_owned(),
        rotated,
        remaining: u64::try_from(remaining).unwrap_or_default(),
        imports_staging: u64::try_from(imports_staging).unwrap_or_default(),
    })
}
