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
//! Staged rows of an unfinished import stay under the KEK they were staged with and are
//! promoted as they are; run rotation again after such an import finishes.
//! This module does not manage KEKs themselves: they come from configuration.

use sqlx::{Connection, PgPool};

use crate::kek::{KekConfigError, KekRing, OpenError, SealedColumn};

/// Why rotation stopped.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// No current KEK.
    #[error(transparent)]
    Keys(#[from] KekConfigError),
    /// A row is under a KEK that is not configured, or did not open.
    #[error("{0}; configure the KEK in carddata.retired_keks and run rotate-kek again")]
    Open(#[from] OpenError),
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
    /// Rows still under another KEK (0 when finished).
    pub remaining: u64,
    /// Imports still staging (their rows are promoted under their staging KEK).
    pub imports_staging: u64,
}

#[derive(sqlx::FromRow)]
struct Row {
    iccid: String,
    kek_id: String,
    ki: Vec<u8>,
    opc: Vec<u8>,
    adm1: Vec<u8>,
    pin1: Option<Vec<u8>>,
    puk1: Option<Vec<u8>>,
    pin2: Option<Vec<u8>>,
    puk2: Option<Vec<u8>>,
}

/// Re-encrypts every row not under the current KEK, `batch_size` rows per transaction;
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
            "SELECT iccid, kek_id, ki, opc, adm1, pin1, puk1, pin2, puk2 FROM carddata.cards \
             WHERE kek_id <> $1 ORDER BY iccid LIMIT $2 FOR UPDATE SKIP LOCKED",
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
        let mut sealed: [Vec<Option<Vec<u8>>>; 7] = Default::default();
        for row in &rows {
            let old = kek_ring.get(&row.kek_id)?;
            let values = [
                Some(&row.ki),
                Some(&row.opc),
                Some(&row.adm1),
                row.pin1.as_ref(),
                row.puk1.as_ref(),
                row.pin2.as_ref(),
                row.puk2.as_ref(),
            ];
            for ((column, value), out) in SealedColumn::ALL
                .into_iter()
                .zip(values)
                .zip(sealed.iter_mut())
            {
                out.push(match value {
                    Some(value) => {
                        let plain = old.open(&row.iccid, column, value)?;
                        Some(current.seal(&row.iccid, column, &plain))
                    }
                    None => None,
                });
            }
            iccids.push(row.iccid.clone());
        }
        let [ki, opc, adm1, pin1, puk1, pin2, puk2] = sealed;
        sqlx::query(
            "UPDATE carddata.cards c SET kek_id = $1, ki = u.ki, opc = u.opc, adm1 = u.adm1, \
                    pin1 = u.pin1, puk1 = u.puk1, pin2 = u.pin2, puk2 = u.puk2 \
             FROM unnest($2::text[], $3::bytea[], $4::bytea[], $5::bytea[], $6::bytea[], $7::bytea[], \
                         $8::bytea[], $9::bytea[]) AS u(iccid, ki, opc, adm1, pin1, puk1, pin2, puk2) \
             WHERE c.iccid = u.iccid",
        )
        .bind(current.id())
        .bind(&iccids)
        .bind(ki)
        .bind(opc)
        .bind(adm1)
        .bind(pin1)
        .bind(puk1)
        .bind(pin2)
        .bind(puk2)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        rotated += rows.len() as u64;
        on_batch(rotated);
    }
    let remaining: i64 =
        sqlx::query_scalar("SELECT count(*) FROM carddata.cards WHERE kek_id <> $1")
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
