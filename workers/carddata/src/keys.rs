//! What the write-card worker asks of the card data: whether a card's keys are loaded, the
//! keys themselves (decrypted into zeroizing, redacting types), and a reference string for
//! events that must name a card's keys without carrying them.
//!
//! This module reads `carddata.cards` only; it never writes and never logs a value.

use simflow_card::encoding::Adm1;
use sqlx::PgExecutor;

use crate::kek::{KekRing, OpenError, SealedColumn};
use crate::secrets::{CardExtras, CardSecrets, Key128, Pin};

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
    kek_id: String,
    ki: Vec<u8>,
    opc: Vec<u8>,
    adm1: Vec<u8>,
    pin1: Option<Vec<u8>>,
    puk1: Option<Vec<u8>>,
    pin2: Option<Vec<u8>>,
    puk2: Option<Vec<u8>>,
    acc: Option<String>,
    msisdn: Option<String>,
    mcc: Option<String>,
    mnc: Option<String>,
    smsp: Option<String>,
    name: Option<String>,
}

/// Fetches and decrypts the keys of one card; `None` when its card data is not loaded.
pub async fn fetch<'e>(
    db: impl PgExecutor<'e>,
    kek_ring: &KekRing,
    iccid: &str,
) -> Result<Option<CardSecrets>, FetchError> {
    let row: Option<SealedRow> = sqlx::query_as(
        "SELECT imsi, card_type, kek_id, ki, opc, adm1, pin1, puk1, pin2, puk2, \
                acc, msisdn, mcc, mnc, smsp, name \
         FROM carddata.cards WHERE iccid = $1",
    )
    .bind(iccid)
    .fetch_optional(db)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let kek = kek_ring.get(&row.kek_id)?;
    let key128 = |column: SealedColumn, sealed: &[u8]| -> Result<Key128, FetchError> {
        let opened = kek.open(iccid, column, sealed)?;
        Key128::from_slice(&opened).ok_or(FetchError::Malformed(column.name()))
    };
    let pin = |column: SealedColumn, sealed: &Option<Vec<u8>>| -> Result<Option<Pin>, FetchError> {
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let opened = kek.open(iccid, column, sealed)?;
        let digits =
            std::str::from_utf8(&opened).map_err(|_| FetchError::Malformed(column.name()))?;
        Ok(Some(Pin::new(digits)))
    };
    let adm1 = {
        let opened = kek.open(iccid, SealedColumn::Adm1, &row.adm1)?;
        let bytes: [u8; 8] = opened
            .as_slice()
            .try_into()
            .map_err(|_| FetchError::Malformed("adm1"))?;
        Adm1::from_bytes(bytes)
    };
    Ok(Some(CardSecrets {
        iccid: iccid.to_owned(),
        imsi: row.imsi.clone(),
        card_type: row.card_type.clone(),
        ki: key128(SealedColumn::Ki, &row.ki)?,
        opc: key128(SealedColumn::Opc, &row.opc)?,
        adm1,
        pin1: pin(SealedColumn::Pin1, &row.pin1)?,
        puk1: pin(SealedColumn::Puk1, &row.puk1)?,
        pin2: pin(SealedColumn::Pin2, &row.pin2)?,
        puk2: pin(SealedColumn::Puk2, &row.puk2)?,
        extras: CardExtras {
            acc: row.acc.clone(),
            msisdn: row.msisdn.clone(),
            mcc: row.mcc.clone(),
            mnc: row.mnc.clone(),
            smsp: row.smsp.clone(),
            name: row.name.clone(),
        },
        kek_id: row.kek_id.clone(),
    }))
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
