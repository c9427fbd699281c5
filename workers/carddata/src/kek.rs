//! Encryption at rest: a card's secrets are sealed with AES-256-GCM under a key-encryption key
//! (KEK), with a random 96-bit nonce and associated data that binds the ciphertext to its ICCID
//! (and, in format v1, its column), so a ciphertext copied to another row fails to open instead
//! of yielding a key for the wrong card.
//!
//! Format v2 (what import and rotation write): all secrets of a card as one record
//! ([`crate::secrets::SecretRecord`]) sealed once, in the `secrets` column. Format v1 (rows
//! written before migration 0002): each secret column sealed on its own; still opened, and
//! rewritten as v2 by rotation.
//!
//! A [`KekRing`] holds the current KEK (which seals new values) and retired ones (which only
//! open values not yet rotated, see [`crate::rotate`]). Every row stores the id of the KEK it
//! is under. The stored form is `nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes)`.
//! This module does no I/O and never logs; KEK bytes print as `<redacted>`.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use zeroize::Zeroizing;

/// Version tag of the associated data of one sealed column (format v1, migration 0001);
/// change it only with a migration of every row.
const AAD_TAG: &[u8] = b"simflow.carddata.v1";
/// Version tag of the associated data of a sealed card record (format v2, migration 0002).
const AAD_TAG_RECORD: &[u8] = b"simflow.carddata.v2.record";
/// Nonce length of AES-GCM.
const NONCE_LEN: usize = 12;

/// The columns that hold sealed values (part of the associated data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedColumn {
    /// Ki.
    Ki,
    /// OPc.
    Opc,
    /// ADM1.
    Adm1,
    /// PIN1.
    Pin1,
    /// PUK1.
    Puk1,
    /// PIN2.
    Pin2,
    /// PUK2.
    Puk2,
}

impl SealedColumn {
    /// The column's name in the table and in the associated data.
    pub fn name(self) -> &'static str {
        match self {
            SealedColumn::Ki => "ki",
            SealedColumn::Opc => "opc",
            SealedColumn::Adm1 => "adm1",
            SealedColumn::Pin1 => "pin1",
            SealedColumn::Puk1 => "puk1",
            SealedColumn::Pin2 => "pin2",
            SealedColumn::Puk2 => "puk2",
        }
    }

    /// Every sealed column, in table order.
    pub const ALL: [SealedColumn; 7] = [
        SealedColumn::Ki,
        SealedColumn::Opc,
        SealedColumn::Adm1,
        SealedColumn::Pin1,
        SealedColumn::Puk1,
        SealedColumn::Pin2,
        SealedColumn::Puk2,
    ];
}

/// Why a sealed value did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The row names a KEK this process does not have.
    #[error("the row is under key-encryption key {0:?}, which is not configured")]
    UnknownKek(String),
    /// Wrong key, or the value was altered or moved to another row or column.
    #[error("a sealed {column} value of a card does not open (altered, moved, or wrong key)")]
    Tampered {
        /// The column.
        column: &'static str,
    },
}

/// Why a KEK setting is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KekConfigError {
    /// No current KEK: importing would have to store keys in plain text, which it never does.
    #[error(
        "no key-encryption key is configured: set SIMFLOW__CARDDATA__KEK (64 hex digits) and \
         SIMFLOW__CARDDATA__KEK_ID; card data is never stored unencrypted"
    )]
    Missing,
    /// A KEK is not 64 hex digits.
    #[error("key-encryption key {id:?} must be 64 hex digits (AES-256)")]
    BadKey {
        /// The KEK's id.
        id: String,
    },
    /// A KEK id is empty or has characters other than letters, digits, `.`, `_`, `-`.
    #[error("key-encryption key ids are 1 to 64 letters, digits, '.', '_' or '-'")]
    BadId,
    /// Two KEKs share an id.
    #[error("key-encryption key id {0:?} is configured twice")]
    DuplicateId(String),
    /// An entry of a `id:hex` list has no colon.
    #[error("{0} entries are written as name:hex, separated by commas")]
    BadList(&'static str),
}

/// One key-encryption key.
pub struct Kek {
    id: String,
    cipher: Aes256Gcm,
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kek")
            .field("id", &self.id)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Whether a key id is acceptable (it is stored in every row and printed in reports).
pub(crate) fn is_valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

fn associated_data(iccid: &str, column: SealedColumn) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_TAG.len() + iccid.len() + 8);
    aad.extend_from_slice(AAD_TAG);
    aad.push(0);
    aad.extend_from_slice(iccid.as_bytes());
    aad.push(0);
    aad.extend_from_slice(column.name().as_bytes());
    aad
}

fn record_associated_data(iccid: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_TAG_RECORD.len() + iccid.len() + 1);
    aad.extend_from_slice(AAD_TAG_RECORD);
    aad.push(0);
    aad.extend_from_slice(iccid.as_bytes());
    aad
}

impl Kek {
    /// A KEK from its id and 32 key bytes.
    pub fn new(id: &str, key: &[u8; 32]) -> Result<Kek, KekConfigError> {
        if !is_valid_key_id(id) {
            return Err(KekConfigError::BadId);
        }
        Ok(Kek {
            id: id.to_owned(),
            cipher: Aes256Gcm::new(key.into()),
        })
    }

    /// A KEK from its id and 64 hex digits.
    pub fn from_hex(id: &str, hex_key: &str) -> Result<Kek, KekConfigError> {
        let mut key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(hex_key.trim(), key.as_mut())
            .map_err(|_| KekConfigError::BadKey { id: id.to_owned() })?;
        Kek::new(id, &key)
    }

    /// The KEK's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals one value of one card (format v1: one sealed value per column).
    pub fn seal(&self, iccid: &str, column: SealedColumn, plaintext: &[u8]) -> Vec<u8> {
        self.seal_with(&associated_data(iccid, column), plaintext)
    }

    /// Seals the whole secret record of one card (format v2: one nonce and one tag for all of
    /// a card's secrets, see [`crate::secrets::SecretRecord`]), bound to its ICCID.
    pub fn seal_record(&self, iccid: &str, record: &[u8]) -> Vec<u8> {
        self.seal_with(&record_associated_data(iccid), record)
    }

    /// Opens the secret record of one card.
    pub fn open_record(&self, iccid: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        self.open_with(&record_associated_data(iccid), "secrets", sealed)
    }

    fn seal_with(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self.cipher.encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        );
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
        out.extend_from_slice(&nonce);
        // AES-GCM encryption fails only for inputs over 64 GiB; a card value is a few bytes.
        if let Ok(ciphertext) = sealed {
            out.extend_from_slice(&ciphertext);
        }
        out
    }

    /// Opens one value of one card (format v1).
    pub fn open(
        &self,
        iccid: &str,
        column: SealedColumn,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        self.open_with(&associated_data(iccid, column), column.name(), sealed)
    }

    fn open_with(
        &self,
        aad: &[u8],
        column: &'static str,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        let tampered = OpenError::Tampered { column };
        if sealed.len() < NONCE_LEN + 16 {
            return Err(tampered);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| tampered.clone())?;
        self.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| tampered)
    }
}

/// The current KEK and the retired ones.
#[derive(Debug, Default)]
pub struct KekRing {
    current: Option<Kek>,
    retired: Vec<Kek>,
}

/// Splits a `name:hex,name:hex` list (whitespace around entries is ignored).
pub(crate) fn parse_named_list<'a>(
    text: &'a str,
    what: &'static str,
) -> Result<Vec<(&'a str, &'a str)>, KekConfigError> {
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry
                .split_once(':')
                .map(|(name, value)| (name.trim(), value.trim()))
                .ok_or(KekConfigError::BadList(what))
        })
        .collect()
}

impl KekRing {
    /// A ring from a current KEK (if any) and retired ones.
    pub fn new(current: Option<Kek>, retired: Vec<Kek>) -> Result<KekRing, KekConfigError> {
        let mut ids: Vec<&str> = current.iter().chain(retired.iter()).map(Kek::id).collect();
        ids.sort_unstable();
        if let Some(pair) = ids.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(KekConfigError::DuplicateId(pair[0].to_owned()));
        }
        Ok(KekRing { current, retired })
    }

    /// Builds the ring from the raw settings (`kek_id` + `kek`, `retired_keks`).
    pub fn from_settings(
        settings: &simflow_runtime::settings::CardDataSettings,
    ) -> Result<KekRing, KekConfigError> {
        use secrecy::ExposeSecret;
        let current = match settings.kek.as_ref().map(|kek| kek.expose_secret().trim()) {
            Some(hex_key) if !hex_key.is_empty() => {
                Some(Kek::from_hex(settings.kek_id.trim(), hex_key)?)
            }
            _ => None,
        };
        let mut retired = Vec::new();
        if let Some(list) = settings.retired_keks.as_ref() {
            for (id, hex_key) in parse_named_list(list.expose_secret(), "carddata.retired_keks")? {
                retired.push(Kek::from_hex(id, hex_key)?);
            }
        }
        KekRing::new(current, retired)
    }

    /// The KEK that seals new values.
    pub fn current(&self) -> Result<&Kek, KekConfigError> {
        self.current.as_ref().ok_or(KekConfigError::Missing)
    }

    /// The KEK with this id, current or retired.
    pub fn get(&self, id: &str) -> Result<&Kek, OpenError> {
        self.current
            .iter()
            .chain(self.retired.iter())
            .find(|kek| kek.id == id)
            .ok_or_else(|| OpenError::UnknownKek(id.to_owned()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_for_its_card_and_column() {
        let kek = Kek::new("k1", &[7u8; 32]).unwrap();
        let sealed = kek.seal("8986011000000000009", SealedColumn::Ki, &[0xAA; 16]);
        assert_eq!(sealed.len(), 12 + 16 + 16);
        assert!(!sealed.windows(16).any(|window| window == [0xAA; 16]));
        let opened = kek
            .open("8986011000000000009", SealedColumn::Ki, &sealed)
            .unwrap();
        assert_eq!(opened.as_slice(), &[0xAA; 16]);
        assert!(
            kek.open("8986011000000000017", SealedColumn::Ki, &sealed)
                .is_err()
        );
        assert!(
            kek.open("8986011000000000009", SealedColumn::Opc, &sealed)
                .is_err()
        );
        let other = Kek::new("k2", &[8u8; 32]).unwrap();
        assert!(
            other
                .open("8986011000000000009", SealedColumn::Ki, &sealed)
                .is_err()
        );
    }

    #[test]
    fn a_sealed_record_opens_only_for_its_card() {
        let kek = Kek::new("k1", &[7u8; 32]).unwrap();
        let sealed = kek.seal_record("8986011000000000009", &[0xAA; 40]);
        assert_eq!(sealed.len(), 12 + 40 + 16);
        assert!(!sealed.windows(16).any(|window| window == [0xAA; 16]));
        let opened = kek.open_record("8986011000000000009", &sealed).unwrap();
        assert_eq!(opened.as_slice(), &[0xAA; 40]);
        assert!(kek.open_record("8986011000000000017", &sealed).is_err());
        assert!(
            kek.open("8986011000000000009", SealedColumn::Ki, &sealed)
                .is_err()
        );
        let other = Kek::new("k2", &[8u8; 32]).unwrap();
        assert!(other.open_record("8986011000000000009", &sealed).is_err());
    }

    #[test]
    fn two_seals_of_one_value_differ() {
        let kek = Kek::new("k1", &[7u8; 32]).unwrap();
        let first = kek.seal("8986011000000000009", SealedColumn::Adm1, b"12345678");
        let second = kek.seal("8986011000000000009", SealedColumn::Adm1, b"12345678");
        assert_ne!(first, second);
    }

    #[test]
    fn the_ring_finds_retired_keys_and_refuses_without_a_current_one() {
        let ring = KekRing::new(None, vec![Kek::new("old", &[1u8; 32]).unwrap()]).unwrap();
        assert_eq!(ring.current().unwrap_err(), KekConfigError::Missing);
        assert!(ring.get("old").is_ok());
        assert_eq!(
            ring.get("nope").unwrap_err(),
            OpenError::UnknownKek("nope".into())
        );
        assert!(
            KekRing::new(
                Some(Kek::new("a", &[1u8; 32]).unwrap()),
                vec![Kek::new("a", &[2u8; 32]).unwrap()]
            )
            .is_err()
        );
        assert!(Kek::from_hex("a", "00").is_err());
        assert!(Kek::new("bad id", &[0u8; 32]).is_err());
    }

    #[test]
    fn a_kek_does_not_print_its_key() {
        let kek = Kek::from_hex("k1", &"ab".repeat(32)).unwrap();
        let alone = format!("{kek:?}");
        let printed = format!("{alone} {:?}", KekRing::new(Some(kek), vec![]).unwrap());
        assert!(!printed.contains("abab"), "{printed}");
    }
}
