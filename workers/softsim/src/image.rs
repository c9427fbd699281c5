//! [`CardImage`]: a card as the vendor ships it, in JSON, and the fault modes a test can give it.
//!
//! An image says what the card is (ICCID, ADM1, optionally a pre-written subscription for a
//! "finished card") and nothing about how it is connected.
//! It does not validate against a card data file: a test that wants a wrong ADM says so with
//! [`Faults::wrong_adm`].

use serde::{Deserialize, Serialize};
use simflow_card::encoding::{self, Adm1, EncodingError};
use std::fmt;
use std::time::Duration;

/// A card as shipped: what the software SIM starts from.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardImage {
    /// The factory ICCID (EF.ICCID, read-only).
    pub iccid: String,
    /// The ADM1 key as the vendor's card data file spells it (digits or 16 hex characters).
    pub adm1: String,
    /// A pre-written IMSI: makes this a finished (not blank) card.
    #[serde(default)]
    pub imsi: Option<String>,
    /// Pre-written Ki and OPc (hex) for a finished card.
    #[serde(default)]
    pub ki: Option<String>,
    #[serde(default)]
    pub opc: Option<String>,
    /// The ATR in hex; the sysmoISIM-SJA2 one when absent.
    #[serde(default)]
    pub atr: Option<String>,
}

impl fmt::Debug for CardImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CardImage")
            .field("iccid", &self.iccid)
            .field("adm1", &"<redacted>")
            .field("imsi", &self.imsi)
            .field("keys", &self.ki.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why an image cannot become a card.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Encoding(#[from] EncodingError),
    #[error("{0} is not 16 bytes of hex")]
    BadKey(&'static str),
    #[error("the ATR is not hex")]
    BadAtr,
}

impl CardImage {
    /// A blank card: only the ICCID and the ADM1 key are set.
    pub fn blank(iccid: &str, adm1: &str) -> Self {
        CardImage {
            iccid: iccid.to_string(),
            adm1: adm1.to_string(),
            imsi: None,
            ki: None,
            opc: None,
            atr: None,
        }
    }

    /// A finished card: already written with an IMSI (keys left unset unless given).
    pub fn finished(iccid: &str, adm1: &str, imsi: &str) -> Self {
        CardImage {
            imsi: Some(imsi.to_string()),
            ..CardImage::blank(iccid, adm1)
        }
    }

    pub(crate) fn checked_iccid(&self) -> Result<[u8; 10], ImageError> {
        encoding::validate_iccid(&self.iccid)?;
        Ok(encoding::encode_iccid(&self.iccid)?)
    }

    pub(crate) fn checked_adm1(&self) -> Result<Adm1, ImageError> {
        Ok(Adm1::parse(&self.adm1)?)
    }

    pub(crate) fn key(&self, which: &'static str) -> Result<Option<[u8; 16]>, ImageError> {
        let text = if which == "ki" { &self.ki } else { &self.opc };
        text.as_deref()
            .map(|text| {
                let mut key = [0u8; 16];
                hex::decode_to_slice(text, &mut key).map_err(|_| ImageError::BadKey(which))?;
                Ok(key)
            })
            .transpose()
    }

    pub(crate) fn atr_bytes(&self) -> Result<Vec<u8>, ImageError> {
        let text = self
            .atr
            .as_deref()
            .unwrap_or(simflow_card::profile::SJA2_ATR);
        hex::decode(text).map_err(|_| ImageError::BadAtr)
    }
}

/// How a software SIM misbehaves, for tests of the unhappy paths. All off by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Faults {
    /// Pull the card (close the socket) right after answering this many APDUs in one insertion.
    #[serde(default)]
    pub pull_after_apdus: Option<u64>,
    /// After such a pull, insert the same card again after this delay.
    #[serde(default, with = "optional_millis")]
    pub reinsert_after: Option<Duration>,
    /// The card's real ADM1 differs from the image's (the card data file is wrong).
    #[serde(default)]
    pub wrong_adm: bool,
    /// Delay before answering each UPDATE BINARY / UPDATE RECORD (a slow EEPROM).
    #[serde(default, with = "optional_millis")]
    pub update_delay: Option<Duration>,
    /// A card that is in the reader but cannot be powered up: its ATR is longer than the 33
    /// bytes ISO 7816-3 allows, which vpcd refuses at power-up, so pcscd reports the card as
    /// present but mute (reader state PRESENT | MUTE) and will not connect to it.
    /// (A card that never answers would hang pcscd's reader
    /// thread, because vpcd waits without a timeout, so we do not model that.)
    #[serde(default)]
    pub mute: bool,
}

mod optional_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => serializer.serialize_some(&(duration.as_millis() as u64)),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(deserializer)?.map(Duration::from_millis))
    }
}
