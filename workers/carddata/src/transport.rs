//! Transport keys: how vendors encrypt the key columns of a card data file on its way to us,
//! following GSMA FS.28 as pySim's `CardKeyFieldCryptor` does it.
//!
//! A field is the hex of AES-CBC ciphertext under the transport key, with the fixed IV
//! `23 23 … 23` (16 bytes) and no padding, so a 16-byte Ki or OPc stays 32 hex digits.
//! pySim cannot encrypt the 8-byte ADM1 (not a whole block); we take ADM1 as one block: its
//! 8 bytes (the ASCII digits, or the `pin_adm_hex` bytes) followed by eight `FF` bytes.
//! The fill lets a wrong transport key be told from a right one.
//! PIN and PUK columns and the non-secret columns travel in clear text.
//!
//! Keys are named in configuration (`SIMFLOW__CARDDATA__TRANSPORT_KEYS="name:hex,…"`); a job
//! names the one its file uses. This module only decrypts (and encrypts, for tests and for
//! tools that make files); it does no I/O.

use std::collections::BTreeMap;
use std::fmt;

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use zeroize::Zeroizing;

use crate::kek::{KekConfigError, is_valid_key_id, parse_named_list};

/// The IV pySim uses for column encryption.
const IV: [u8; 16] = [0x23; 16];

/// The AES key of one transport key, in its size.
#[derive(Clone)]
enum TransportCipher {
    Aes128(Zeroizing<[u8; 16]>),
    Aes192(Zeroizing<[u8; 24]>),
    Aes256(Zeroizing<[u8; 32]>),
}

/// Why a field did not decrypt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The field is not hex, or not whole 16-byte blocks.
    #[error("an encrypted field must be hex of whole 16-byte blocks")]
    NotBlocks,
}

/// One named transport key.
#[derive(Clone)]
pub struct TransportKey {
    name: String,
    cipher: TransportCipher,
}

impl fmt::Debug for TransportKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportKey")
            .field("name", &self.name)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl TransportKey {
    /// A transport key from its name and 32, 48 or 64 hex digits.
    pub fn from_hex(name: &str, hex_key: &str) -> Result<TransportKey, KekConfigError> {
        if !is_valid_key_id(name) {
            return Err(KekConfigError::BadId);
        }
        let bytes =
            Zeroizing::new(
                hex::decode(hex_key.trim()).map_err(|_| KekConfigError::BadKey {
                    id: name.to_owned(),
                })?,
            );
        let bad = || KekConfigError::BadKey {
            id: name.to_owned(),
        };
        let cipher = match bytes.len() {
            16 => TransportCipher::Aes128(Zeroizing::new(
                bytes.as_slice().try_into().map_err(|_| bad())?,
            )),
            24 => TransportCipher::Aes192(Zeroizing::new(
                bytes.as_slice().try_into().map_err(|_| bad())?,
            )),
            32 => TransportCipher::Aes256(Zeroizing::new(
                bytes.as_slice().try_into().map_err(|_| bad())?,
            )),
            _ => return Err(bad()),
        };
        Ok(TransportKey {
            name: name.to_owned(),
            cipher,
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Decrypts one field (hex of whole blocks) into its plaintext bytes.
    pub fn decrypt_field(&self, field_hex: &str) -> Result<Zeroizing<Vec<u8>>, TransportError> {
        let mut buffer =
            Zeroizing::new(hex::decode(field_hex).map_err(|_| TransportError::NotBlocks)?);
        if buffer.is_empty() || !buffer.len().is_multiple_of(16) {
            return Err(TransportError::NotBlocks);
        }
        let result = match &self.cipher {
            TransportCipher::Aes128(key) => {
                cbc::Decryptor::<aes::Aes128>::new(key.as_ref().into(), &IV.into())
                    .decrypt_padded_mut::<NoPadding>(&mut buffer)
                    .map(<[u8]>::len)
            }
            TransportCipher::Aes192(key) => {
                cbc::Decryptor::<aes::Aes192>::new(key.as_ref().into(), &IV.into())
                    .decrypt_padded_mut::<NoPadding>(&mut buffer)
                    .map(<[u8]>::len)
            }
            TransportCipher::Aes256(key) => {
                cbc::Decryptor::<aes::Aes256>::new(key.as_ref().into(), &IV.into())
                    .decrypt_padded_mut::<NoPadding>(&mut buffer)
                    .map(<[u8]>::len)
            }
        };
        result.map_err(|_| TransportError::NotBlocks)?;
        Ok(buffer)
    }

    /// Encrypts plaintext (whole 16-byte blocks) into a field, as a vendor would.
    pub fn encrypt_field(&self, plaintext: &[u8]) -> Result<String, TransportError> {
        if plaintext.is_empty() || !plaintext.len().is_multiple_of(16) {
            return Err(TransportError::NotBlocks);
        }
        let mut buffer = Zeroizing::new(plaintext.to_vec());
        let length = buffer.len();
        let result = match &self.cipher {
            TransportCipher::Aes128(key) => {
                cbc::Encryptor::<aes::Aes128>::new(key.as_ref().into(), &IV.into())
                    .encrypt_padded_mut::<NoPadding>(&mut buffer, length)
                    .map(<[u8]>::len)
            }
            TransportCipher::Aes192(key) => {
                cbc::Encryptor::<aes::Aes192>::new(key.as_ref().into(), &IV.into())
                    .encrypt_padded_mut::<NoPadding>(&mut buffer, length)
                    .map(<[u8]>::len)
            }
            TransportCipher::Aes256(key) => {
                cbc::Encryptor::<aes::Aes256>::new(key.as_ref().into(), &IV.into())
                    .encrypt_padded_mut::<NoPadding>(&mut buffer, length)
                    .map(<[u8]>::len)
            }
        };
        result.map_err(|_| TransportError::NotBlocks)?;
        Ok(hex::encode(buffer.as_slice()))
    }

    /// Encrypts an 8-byte ADM1 as its one-block field (the bytes, then eight `FF`).
    pub fn encrypt_adm1(&self, adm1: &[u8; 8]) -> Result<String, TransportError> {
        let mut block = Zeroizing::new([0xFFu8; 16]);
        block[..8].copy_from_slice(adm1);
        self.encrypt_field(block.as_ref())
    }

    /// Decrypts an ADM1 field: one block whose last eight bytes must be `FF`.
    pub fn decrypt_adm1(&self, field_hex: &str) -> Result<Zeroizing<[u8; 8]>, TransportError> {
        let block = self.decrypt_field(field_hex)?;
        if block.len() != 16 || block[8..].iter().any(|byte| *byte != 0xFF) {
            return Err(TransportError::NotBlocks);
        }
        let mut adm1 = Zeroizing::new([0u8; 8]);
        adm1.copy_from_slice(&block[..8]);
        Ok(adm1)
    }
}

/// The transport keys this process knows, by name.
#[derive(Debug, Clone, Default)]
pub struct TransportKeys(BTreeMap<String, TransportKey>);

impl TransportKeys {
    /// From keys.
    pub fn new(keys: Vec<TransportKey>) -> Result<TransportKeys, KekConfigError> {
        let mut map = BTreeMap::new();
        for key in keys {
            let name = key.name.to_ascii_lowercase();
            if map.insert(name.clone(), key).is_some() {
                return Err(KekConfigError::DuplicateId(name));
            }
        }
        Ok(TransportKeys(map))
    }

    /// From the raw `name:hex,…` setting.
    pub fn from_settings(
        settings: &simflow_runtime::settings::CardDataSettings,
    ) -> Result<TransportKeys, KekConfigError> {
        use secrecy::ExposeSecret;
        let mut keys = Vec::new();
        if let Some(list) = settings.transport_keys.as_ref() {
            for (name, hex_key) in
                parse_named_list(list.expose_secret(), "carddata.transport_keys")?
            {
                keys.push(TransportKey::from_hex(name, hex_key)?);
            }
        }
        TransportKeys::new(keys)
    }

    /// The key with this name (names are case-insensitive, as environment variables fold them).
    pub fn get(&self, name: &str) -> Option<&TransportKey> {
        self.0.get(&name.trim().to_ascii_lowercase())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn matches_pysim_column_encryption() {
        // AES-128-CBC, IV 23…23: one block P encrypts to AES(K, P xor IV). With K = 00…0F and
        // P = 23…23 the block cipher input is all zeroes; FIPS-197 style check via ECB.
        let key = TransportKey::from_hex("t", "000102030405060708090a0b0c0d0e0f").unwrap();
        let field = key.encrypt_field(&[0x23; 16]).unwrap();
        use aes::cipher::{BlockEncrypt, KeyInit};
        let ecb = aes::Aes128::new(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15].into());
        let mut block = [0u8; 16].into();
        ecb.encrypt_block(&mut block);
        assert_eq!(field, hex::encode(block));
        assert_eq!(key.decrypt_field(&field).unwrap().as_slice(), &[0x23; 16]);
    }

    #[test]
    fn adm1_round_trips_and_a_wrong_key_is_noticed() {
        let key = TransportKey::from_hex("t", &"11".repeat(16)).unwrap();
        let wrong = TransportKey::from_hex("w", &"22".repeat(16)).unwrap();
        let field = key.encrypt_adm1(b"12345678").unwrap();
        assert_eq!(field.len(), 32);
        assert_eq!(key.decrypt_adm1(&field).unwrap().as_ref(), b"12345678");
        assert!(wrong.decrypt_adm1(&field).is_err());
        assert!(key.decrypt_field("abc").is_err());
        assert!(key.decrypt_field(&"00".repeat(8)).is_err());
    }

    #[test]
    fn names_are_case_insensitive_and_keys_do_not_print() {
        let keys = TransportKeys::new(vec![
            TransportKey::from_hex("Vendor-2026", &"ab".repeat(16)).unwrap(),
        ])
        .unwrap();
        assert!(keys.get("vendor-2026").is_some());
        assert!(!format!("{keys:?}").contains("abab"));
        assert!(TransportKey::from_hex("x", &"ab".repeat(15)).is_err());
    }
}
