//! What the write-card worker asks of the card data: whether a card's keys are loaded, the
//! keys themselves (decrypted into zeroizing, redacting types), and a reference string for
//! events that must name a card's keys without carrying them.
//!
//! This module reads `carddata.cards` (the rows of finished imports) only; it never writes and
//! never logs a value. It opens both storage formats: v2 (one sealed record per card) and v1
//! (one sealed value per column, rows from before migration 0002 not yet rotated).

use simflow_card::encoding::Adm1;
use sqlx::PgExecutor;

use crate::kek::{Kek, KekRing, OpenError, SealedColumn};
use crate::secrets::{CardExtras, CardSecrets, Key128, OpenedRecord, Pin, SecretRecord};

/// Why a card's keys could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A sealed value did not open (unknown KEK id, or altered data).
    #[error(transparent)]
    Open(#[from] OpenError),
    /// A value opened but is not the size it must be (a defect or altered data).
    #[error("the stored {0} of a card has the wrong size")]
    Malformed(&'static str),
}

/// The reference events carry instead of keys: `carddata:<iccid>`.
pub fn key_ref(iccid: &str) -> String {
    format!("carddata:{iccid}")
}

/// Whether the card data file for this ICCID has been imported.
pub async fn exists<'e>(db: impl PgExecutor<'e>, iccid: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM carddata.cards WHERE iccid = $1)")
        .bind(iccid)
        .fetch_one(db)
        .await
}

#[derive(sqlx::FromRow)]
struct SealedRow {
    imsi: String,
    card_type: String,
    #[sqlx(flatten)]
    sealed: SealedColumns,
    acc: Option<String>,
    msisdn: Option<String>,
    mcc: Option<String>,
    mnc: Option<String>,
    smsp: Option<String>,
    name: Option<String>,
}

/// The sealed columns of a card row, in either storage format: v2 (`secrets`, one sealed
/// record) or v1 (a sealed value per column), under the KEK `kek_id` names.
#[derive(sqlx::FromRow)]
pub(crate) struct SealedColumns {
    pub(crate) kek_id: String,
    secrets: Option<Vec<u8>>,
    ki: Option<Vec<u8>>,
    opc: Option<Vec<u8>>,
    adm1: Option<Vec<u8>>,
    pin1: Option<Vec<u8>>,
    puk1: Option<Vec<u8>>,
    pin2: Option<Vec<u8>>,
    puk2: Option<Vec<u8>>,
}

impl SealedColumns {
    /// Opens the card's secrets with the KEK the row names (from `kek_ring`).
    pub(crate) fn open(&self, kek_ring: &KekRing, iccid: &str) -> Result<OpenedRecord, FetchError> {
        let kek = kek_ring.get(&self.kek_id)?;
        match &self.secrets {
            Some(sealed) => {
                let opened = kek.open_record(iccid, sealed)?;
                SecretRecord::decode(&opened).ok_or(FetchError::Malformed("secrets"))
            }
            None => open_v1_columns(
                kek,
                iccid,
                self.ki.as_deref(),
                self.opc.as_deref(),
                self.adm1.as_deref(),
                [
                    self.pin1.as_deref(),
                    self.puk1.as_deref(),
                    self.pin2.as_deref(),
                    self.puk2.as_deref(),
                ],
            ),
        }
    }
}

/// Fetches and decrypts the keys of one card; `None` when its card data is not loaded.
pub async fn fetch<'e>(
    db: impl PgExecutor<'e>,
    kek_ring: &KekRing,
    iccid: &str,
) -> Result<Option<CardSecrets>, FetchError> {
    let row: Option<SealedRow> = sqlx::query_as(
        "SELECT imsi, card_type, kek_id, secrets, ki, opc, adm1, pin1, puk1, pin2, puk2, \
                acc, msisdn, mcc, mnc, smsp, name \
         FROM carddata.cards WHERE iccid = $1",
    )
    .bind(iccid)
    .fetch_optional(db)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let (ki, opc, adm1, [pin1, puk1, pin2, puk2]) = row.sealed.open(kek_ring, iccid)?;
    Ok(Some(CardSecrets {
        iccid: iccid.to_owned(),
        imsi: row.imsi.clone(),
        card_type: row.card_type.clone(),
        ki,
        opc,
        adm1,
        pin1,
        puk1,
        pin2,
        puk2,
        extras: CardExtras {
            acc: row.acc.clone(),
            msisdn: row.msisdn.clone(),
            mcc: row.mcc.clone(),
            mnc: row.mnc.clone(),
            smsp: row.smsp.clone(),
            name: row.name.clone(),
        },
        kek_id: row.sealed.kek_id.clone(),
    }))
}

/// Opens a row of format v1: each secret column sealed on its own.
fn open_v1_columns(
    kek: &Kek,
    iccid: &str,
    ki: Option<&[u8]>,
    opc: Option<&[u8]>,
    adm1: Option<&[u8]>,
    pins: [Option<&[u8]>; 4],
) -> Result<OpenedRecord, FetchError> {
    let key128 = |column: SealedColumn, sealed: Option<&[u8]>| -> Result<Key128, FetchError> {
        let sealed = sealed.ok_or(FetchError::Malformed(column.name()))?;
        let opened = kek.open(iccid, column, sealed)?;
        Key128::from_slice(&opened).ok_or(FetchError::Malformed(column.name()))
    };
    let pin = |column: SealedColumn, sealed: Option<&[u8]>| -> Result<Option<Pin>, FetchError> {
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let opened = kek.open(iccid, column, sealed)?;
        let digits =
            std::str::from_utf8(&opened).map_err(|_| FetchError::Malformed(column.name()))?;
        Ok(Some(Pin::new(digits)))
    };
    let adm1 = {
        let sealed = adm1.ok_or(FetchError::Malformed("adm1"))?;
        let opened = kek.open(iccid, SealedColumn::Adm1, sealed)?;
        let bytes: [u8; 8] = opened
            .as_slice()
            .try_into()
            .map_err(|_| FetchError::Malformed("adm1"))?;
        Adm1::from_bytes(bytes)
    };
    let [pin1, puk1, pin2, puk2] = pins;
    Ok((
        key128(SealedColumn::Ki, ki)?,
        key128(SealedColumn::Opc, opc)?,
        adm1,
        [
            pin(SealedColumn::Pin1, pin1)?,
            pin(SealedColumn::Puk1, puk1)?,
            pin(SealedColumn::Pin2, pin2)?,
            pin(SealedColumn::Puk2, puk2)?,
        ],
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_key_reference_names_the_card_only() {
        assert_eq!(
            super::key_ref("8986011000000000009"),
            "carddata:8986011000000000009"
        );
    }
}
