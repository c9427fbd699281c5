//! Sealing write scripts so that only one outlet can open them.
//!
//! Every outlet node holds an X25519 key pair it generated itself; the central side knows only
//! the public key (registered when the outlet is provisioned). A write script is sealed with a
//! libsodium-compatible sealed box (`crypto_box_seal`: an ephemeral key pair per message,
//! XSalsa20-Poly1305), so the central side cannot even open what it sealed, and a node of another
//! outlet cannot open it either. Keys are identified by a fingerprint (the first 16 hex digits of
//! the SHA-256 of the public key) that travels with the sealed script.
//!
//! This crate does no I/O: callers read and write key files.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use crypto_box::aead::OsRng;
use crypto_box::{PublicKey, SecretKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Why sealing or opening failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// A key is not 32 bytes of base64.
    #[error("not an outlet key (32 bytes, base64)")]
    BadKey,
    /// The sealed text is not base64.
    #[error("the sealed script is not base64")]
    BadEncoding,
    /// The box was sealed for another key, or was altered.
    #[error(
        "the script cannot be opened with this outlet's key (sealed for another outlet, or altered)"
    )]
    CannotOpen,
    /// Sealing failed (no randomness).
    #[error("sealing failed")]
    Seal,
}

/// An outlet's public key.
#[derive(Clone, PartialEq, Eq)]
pub struct OutletPublicKey(PublicKey);

impl std::fmt::Debug for OutletPublicKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "OutletPublicKey({})", self.fingerprint())
    }
}

impl OutletPublicKey {
    /// Parses the base64 form.
    pub fn from_base64(text: &str) -> Result<OutletPublicKey, SealError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| SealError::BadKey)?;
        let key = PublicKey::from_slice(&bytes).map_err(|_| SealError::BadKey)?;
        Ok(OutletPublicKey(key))
    }

    /// The base64 form.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.as_bytes())
    }

    /// The first 16 hex digits of the key's SHA-256: names the key in envelopes and logs.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        hex::encode(&digest[..8])
    }

    /// Seals `plaintext` for this key; the result is base64.
    pub fn seal(&self, plaintext: &[u8]) -> Result<String, SealError> {
        let sealed = self
            .0
            .seal(&mut OsRng, plaintext)
            .map_err(|_| SealError::Seal)?;
        Ok(STANDARD.encode(sealed))
    }
}

/// An outlet's key pair. Its `Debug` shows only the public fingerprint.
#[derive(Clone)]
pub struct OutletKeyPair(SecretKey);

impl std::fmt::Debug for OutletKeyPair {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "OutletKeyPair({})",
            self.public_key().fingerprint()
        )
    }
}

impl OutletKeyPair {
    /// A fresh key pair from the operating system's randomness.
    pub fn generate() -> OutletKeyPair {
        OutletKeyPair(SecretKey::generate(&mut OsRng))
    }

    /// Parses the base64 form of the secret key (as a key file holds it).
    pub fn from_base64(text: &str) -> Result<OutletKeyPair, SealError> {
        let bytes = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|_| SealError::BadKey)?,
        );
        let key = SecretKey::from_slice(&bytes).map_err(|_| SealError::BadKey)?;
        Ok(OutletKeyPair(key))
    }

    /// The base64 form of the secret key, for the node's key file.
    pub fn secret_to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0.to_bytes()))
    }

    /// The public half.
    pub fn public_key(&self) -> OutletPublicKey {
        OutletPublicKey(self.0.public_key())
    }

    /// Opens a sealed script (base64) that was sealed for this key.
    pub fn open(&self, sealed: &str) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let bytes = STANDARD
            .decode(sealed.trim())
            .map_err(|_| SealError::BadEncoding)?;
        self.0
            .unseal(&bytes)
            .map(Zeroizing::new)
            .map_err(|_| SealError::CannotOpen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_outlet_the_script_is_sealed_for_can_open_it() {
        let outlet = OutletKeyPair::generate();
        let other = OutletKeyPair::generate();
        let sealed = outlet
            .public_key()
            .seal(b"VERIFY ADM1 ...")
            .expect("sealed");
        assert_eq!(
            outlet.open(&sealed).expect("opens").as_slice(),
            b"VERIFY ADM1 ..."
        );
        assert_eq!(other.open(&sealed), Err(SealError::CannotOpen));
    }

    #[test]
    fn a_tampered_box_does_not_open() {
        let outlet = OutletKeyPair::generate();
        let sealed = outlet.public_key().seal(b"script").expect("sealed");
        let mut bytes = STANDARD.decode(&sealed).expect("base64");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(
            outlet.open(&STANDARD.encode(bytes)),
            Err(SealError::CannotOpen)
        );
        assert_eq!(outlet.open("not base64!"), Err(SealError::BadEncoding));
    }

    #[test]
    fn keys_round_trip_through_base64_and_debug_shows_no_secret() {
        let outlet = OutletKeyPair::generate();
        let again = OutletKeyPair::from_base64(&outlet.secret_to_base64()).expect("parses");
        assert_eq!(again.public_key(), outlet.public_key());
        let public =
            OutletPublicKey::from_base64(&outlet.public_key().to_base64()).expect("parses");
        assert_eq!(public.fingerprint().len(), 16);
        let printed = format!("{outlet:?}");
        assert!(!printed.contains(outlet.secret_to_base64().as_str()));
        assert!(printed.contains(&public.fingerprint()));
        assert_eq!(OutletPublicKey::from_base64("abc"), Err(SealError::BadKey));
    }
}
