//! [`CardImage`]: a card as the vendor ships it, in JSON, and the fault modes a test can give it.
//!
//! An image says what the card is (its family, ICCID, ADM1, the [`FactoryState`] it ships with,
//! optionally a pre-written subscription for a "finished card") and nothing about how it is
//! connected.
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
    /// The ATR in hex; the family's when absent.
    #[serde(default)]
    pub atr: Option<String>,
    /// The card family (`sysmoISIM-SJA2` when absent, or `sysmoUSIM-SJS1`).
    #[serde(default)]
    pub family: Option<String>,
    /// What the vendor left on the card; the family's defaults where absent.
    #[serde(default)]
    pub factory: FactoryState,
}

/// A blank as the vendor ships it, beyond its ICCID and ADM1. Every field left out takes the
/// family's default (see the layout tables): real blanks are not all FF.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactoryState {
    /// PLMNs preset in EF.EHPLMN, as MCC and MNC digits (`"00101"`). SJA2 default: 001-01.
    #[serde(default)]
    pub ehplmn: Option<Vec<String>>,
    /// PLMNs preset in EF.FPLMN. SJS1 default: the four a real one shipped with.
    #[serde(default)]
    pub fplmn: Option<Vec<String>>,
    /// The key files' configuration byte (SJA2: cfg, default 14 = Milenage with OPc;
    /// SJS1: EF.OPc's flag, default 01 = OPc).
    #[serde(default)]
    pub key_config: Option<u8>,
    /// DF.GSM files that are separate copies rather than links to ADF.USIM's (SJA2 only;
    /// default `["EF.AD"]`).
    #[serde(default)]
    pub separate_gsm_files: Option<Vec<String>>,
    /// PIN1 is enabled: the card asks for it before files whose rules name PIN1.
    #[serde(default)]
    pub pin1_enabled: bool,
    /// PIN1, PUK1, PIN2, PUK2 and ADM2 as digits; random (and so unknown) when absent.
    #[serde(default)]
    pub pin1: Option<String>,
    #[serde(default)]
    pub puk1: Option<String>,
    #[serde(default)]
    pub pin2: Option<String>,
    #[serde(default)]
    pub puk2: Option<String>,
    #[serde(default)]
    pub adm2: Option<String>,
}

impl fmt::Debug for FactoryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FactoryState")
            .field("ehplmn", &self.ehplmn)
            .field("fplmn", &self.fplmn)
            .field("key_config", &self.key_config)
            .field("separate_gsm_files", &self.separate_gsm_files)
            .field("pin1_enabled", &self.pin1_enabled)
            .field("codes", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for CardImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CardImage")
            .field("iccid", &self.iccid)
            .field("family", &self.family_name())
            .field("adm1", &"<redacted>")
            .field("imsi", &self.imsi)
            .field("keys", &self.ki.as_ref().map(|_| "<redacted>"))
            .field("factory", &self.factory)
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
    /// The family is not one the software SIM can be.
    #[error("unknown card family {0:?}")]
    UnknownFamily(String),
    /// A factory PLMN is not 5 or 6 digits.
    #[error("a factory {0} entry is not MCC and MNC digits")]
    BadPlmn(&'static str),
    /// A factory PIN or PUK is not 4 to 8 digits.
    #[error("the factory {0} is not 4 to 8 digits")]
    BadCode(&'static str),
    /// The card table has no file the image needs (a family without that file).
    #[error("the card has no file {0}")]
    NoSuchFile(String),
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
            family: None,
            factory: FactoryState::default(),
        }
    }

    /// A blank card of another family.
    pub fn blank_of(family: &str, iccid: &str, adm1: &str) -> Self {
        CardImage {
            family: Some(family.to_string()),
            ..CardImage::blank(iccid, adm1)
        }
    }

    /// The card family.
    pub fn family_name(&self) -> &str {
        self.family
            .as_deref()
            .unwrap_or(simflow_card::profile::SysmoIsimSja2::NAME)
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
        let family_atr = if self.family_name() == simflow_card::profile::SysmoUsimSjs1::NAME {
            simflow_card::profile::SJS1_ATR
        } else {
            simflow_card::profile::SJA2_ATR
        };
        let text = self.atr.as_deref().unwrap_or(family_atr);
        hex::decode(text).map_err(|_| ImageError::BadAtr)
    }

    /// A factory code as the 8 bytes VERIFY compares (ASCII digits padded with FF), or random
    /// digits when the image leaves it out.
    pub(crate) fn factory_code(&self, which: &'static str) -> Result<[u8; 8], ImageError> {
        let given = match which {
            "pin1" => &self.factory.pin1,
            "puk1" => &self.factory.puk1,
            "pin2" => &self.factory.pin2,
            "puk2" => &self.factory.puk2,
            _ => &self.factory.adm2,
        };
        let digits = match given {
            Some(digits) if (4..=8).contains(&digits.len()) => digits.clone(),
            Some(_) => return Err(ImageError::BadCode(which)),
            None => format!("{:08}", rand::random::<u32>() % 100_000_000),
        };
        Adm1::from_digits(&digits)
            .map(|code| *code.bytes())
            .map_err(|_| ImageError::BadCode(which))
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
    /// Answer the APDU with this number (counted over all insertions, from 1) with one byte, no
    /// status word, after carrying it out: a malformed answer, once.
    #[serde(default)]
    pub garble_apdu: Option<u64>,
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
