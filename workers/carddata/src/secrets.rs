//! The secret values of one card (Ki, OPc, ADM1, PIN and PUK) as types that wipe their bytes
//! on drop and print as `<redacted>` in `Debug`.
//!
//! These types only hold values; they do not know where values come from (the import parses
//! them, [`crate::keys`] decrypts them) and they offer no `Display` and no serde, so a key
//! cannot reach a log line or a message by accident.

use std::fmt;

use simflow_card::encoding::Adm1;
use zeroize::{Zeroize, Zeroizing};

/// A 128-bit subscriber key (Ki or OPc).
#[derive(Clone, PartialEq, Eq)]
pub struct Key128([u8; 16]);

impl Key128 {
    /// From the 16 bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Key128 {
        Key128(bytes)
    }

    /// From a slice of exactly 16 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Key128> {
        let array: [u8; 16] = bytes.try_into().ok()?;
        Some(Key128(array))
    }

    /// The 16 bytes.
    pub fn bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl Drop for Key128 {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Key128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key128(<redacted>)")
    }
}

/// A PIN or PUK: decimal digits, wiped on drop, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Pin(Zeroizing<String>);

impl Pin {
    /// From its digits (the caller has checked them).
    pub fn new(digits: &str) -> Pin {
        Pin(Zeroizing::new(digits.to_owned()))
    }

    /// The digits.
    pub fn digits(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(<redacted>)")
    }
}

/// Everything the card data file holds about one card, decrypted, for the write-card worker.
///
/// The identifiers (ICCID, IMSI) and the plain personalisation data print; the keys do not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardSecrets {
    /// The card's ICCID.
    pub iccid: String,
    /// The IMSI the card is to be written with.
    pub imsi: String,
    /// The card type code the file was imported for.
    pub card_type: String,
    /// The subscriber key K (Ki).
    pub ki: Key128,
    /// The operator-variant key OPc.
    pub opc: Key128,
    /// The ADM1 key, as the 8 bytes VERIFY sends.
    pub adm1: Adm1,
    /// PIN1, if the file had it.
    pub pin1: Option<Pin>,
    /// PUK1, if the file had it.
    pub puk1: Option<Pin>,
    /// PIN2, if the file had it.
    pub pin2: Option<Pin>,
    /// PUK2, if the file had it.
    pub puk2: Option<Pin>,
    /// Personalisation data that is not secret (pySim-prog columns), if the file had it.
    pub extras: CardExtras,
    /// The id of the key-encryption key the row is stored under.
    pub kek_id: String,
}

/// The pySim-prog columns that are not secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CardExtras {
    /// Access control class, 4 hex digits.
    pub acc: Option<String>,
    /// A pre-assigned MSISDN.
    pub msisdn: Option<String>,
    /// Mobile country code, 3 digits.
    pub mcc: Option<String>,
    /// Mobile network code, 2 or 3 digits.
    pub mnc: Option<String>,
    /// SMS service centre (number or record hex).
    pub smsp: Option<String>,
    /// Service provider name.
    pub name: Option<String>,
}

impl CardExtras {
    /// The values in their stored column order (acc, msisdn, mcc, mnc, smsp, name): what the
    /// import writes and what a row's fingerprint covers.
    pub fn in_column_order(&self) -> [Option<&str>; 6] {
        [
            self.acc.as_deref(),
            self.msisdn.as_deref(),
            self.mcc.as_deref(),
            self.mnc.as_deref(),
            self.smsp.as_deref(),
            self.name.as_deref(),
        ]
    }
}

/// The plaintext layout of a card's sealed secret record (format v2): Ki (16 bytes), OPc (16),
/// ADM1 (8), then PIN1, PUK1, PIN2, PUK2, each as a length byte and its ASCII digits (length 0:
/// absent). Sealed as one AES-GCM value by [`crate::kek::Kek::seal_record`].
#[derive(Debug)]
pub struct SecretRecord;

/// The secrets a [`SecretRecord`] holds.
pub type OpenedRecord = (Key128, Key128, Adm1, [Option<Pin>; 4]);

impl SecretRecord {
    /// Appends the record of one card to `out` (which the caller wipes).
    pub fn encode_into(
        out: &mut Vec<u8>,
        ki: &Key128,
        opc: &Key128,
        adm1: &Adm1,
        pins: &[Option<Pin>; 4],
    ) {
        out.extend_from_slice(ki.bytes());
        out.extend_from_slice(opc.bytes());
        out.extend_from_slice(adm1.bytes());
        for pin in pins {
            match pin {
                Some(pin) => {
                    let digits = pin.digits().as_bytes();
                    out.push(u8::try_from(digits.len()).unwrap_or(0));
                    out.extend_from_slice(digits);
                }
                None => out.push(0),
            }
        }
    }

    /// Reads a record back; `None` when it is not well formed.
    pub fn decode(bytes: &[u8]) -> Option<OpenedRecord> {
        let ki = Key128::from_slice(bytes.get(..16)?)?;
        let opc = Key128::from_slice(bytes.get(16..32)?)?;
        let adm1: [u8; 8] = bytes.get(32..40)?.try_into().ok()?;
        let mut rest = bytes.get(40..)?;
        let mut pins: [Option<Pin>; 4] = Default::default();
        for pin in &mut pins {
            let (&length, tail) = rest.split_first()?;
            let digits = tail.get(..usize::from(length))?;
            if length > 0 {
                *pin = Some(Pin::new(std::str::from_utf8(digits).ok()?));
            }
            rest = &tail[usize::from(length)..];
        }
        if !rest.is_empty() {
            return None;
        }
        Some((ki, opc, Adm1::from_bytes(adm1), pins))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_record_reads_back() {
        let mut bytes = Vec::new();
        let pins = [
            Some(Pin::new("1234")),
            None,
            None,
            Some(Pin::new("87654321")),
        ];
        SecretRecord::encode_into(
            &mut bytes,
            &Key128::from_bytes([1; 16]),
            &Key128::from_bytes([2; 16]),
            &Adm1::from_bytes(*b"55538407"),
            &pins,
        );
        assert_eq!(bytes.len(), 40 + 5 + 1 + 1 + 9);
        let (ki, opc, adm1, read) = SecretRecord::decode(&bytes).expect("well formed");
        assert_eq!(ki.bytes(), &[1; 16]);
        assert_eq!(opc.bytes(), &[2; 16]);
        assert_eq!(adm1.bytes(), b"55538407");
        assert_eq!(read, pins);
        assert!(SecretRecord::decode(&bytes[..bytes.len() - 1]).is_none());
        bytes.push(0);
        assert!(SecretRecord::decode(&bytes).is_none());
    }

    #[test]
    fn secrets_do_not_print() {
        let secrets = CardSecrets {
            iccid: "8986011000000000001".into(),
            imsi: "460001234567890".into(),
            card_type: "USIM".into(),
            ki: Key128::from_bytes([0xAB; 16]),
            opc: Key128::from_bytes([0xCD; 16]),
            adm1: Adm1::from_bytes(*b"55538407"),
            pin1: Some(Pin::new("1234")),
            puk1: Some(Pin::new("87654321")),
            pin2: None,
            puk2: None,
            extras: CardExtras::default(),
            kek_id: "k1".into(),
        };
        let printed = format!("{secrets:?}");
        for secret in [
            "abab", "ABAB", "cdcd", "CDCD", "55538407", "1234)", "87654321", "171",
        ] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        assert!(printed.contains("8986011000000000001"));
    }
}
