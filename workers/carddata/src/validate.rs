//! Validating one card row into typed values, or into the list of its problems.
//!
//! ICCID: 19 or 20 digits with a correct Luhn digit. IMSI: 6 to 15 digits. Ki and OPc: 32 hex
//! digits. ADM1: 8 ASCII digits or 16 hex digits (`pin_adm_hex`: 16 hex digits). PIN: 4 to 8
//! digits; PUK: 8 digits, when present. With a transport key, Ki, OPc and ADM1 are decrypted
//! first (see [`crate::transport`]).
//! Problems name a line, a column and a code, never the value.
//! This module does not look at other rows or the database: duplicates are found set-based in
//! SQL when the staged rows are promoted.

use sha2::{Digest, Sha256};
use simflow_card::encoding::{Adm1, luhn_is_valid};
use simflow_schemas::cardfile::RowProblem;
use zeroize::Zeroizing;

use crate::csvfile::{Column, Header};
use crate::reasons::{self, Reason, RowReason};
use crate::secrets::{CardExtras, Key128, Pin};
use crate::transport::TransportKey;

/// One valid card row, with its secrets in plain text (in memory only, wiped on drop).
#[derive(Debug)]
pub struct CardRow {
    /// Line in the file.
    pub line: u64,
    /// ICCID.
    pub iccid: String,
    /// IMSI.
    pub imsi: String,
    /// Ki.
    pub ki: Key128,
    /// OPc.
    pub opc: Key128,
    /// ADM1.
    pub adm1: Adm1,
    /// PIN1, PUK1, PIN2, PUK2.
    pub pins: [Option<Pin>; 4],
    /// Non-secret columns.
    pub extras: CardExtras,
}

/// The PIN/PUK columns in `CardRow::pins` order.
pub const PIN_COLUMNS: [Column; 4] = [Column::Pin1, Column::Puk1, Column::Pin2, Column::Puk2];

struct Problems<'a> {
    line: u64,
    list: &'a mut Vec<RowProblem>,
}

impl Problems<'_> {
    fn add(&mut self, reason: Reason, column: Column) {
        self.list
            .push(reason.for_row(self.line, Some(column.label())));
    }
}

fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit())
}

fn is_hex(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_hexdigit())
}

fn field<'a>(header: &Header, fields: &[&'a str], column: Column) -> Option<&'a str> {
    header
        .position(column)
        .and_then(|position| fields.get(position).copied())
        .filter(|value| !value.is_empty())
}

fn check_iccid(value: &str, problems: &mut Problems<'_>) -> bool {
    let reason = if !is_digits(value) {
        Some(reasons::ICCID_NOT_DIGITS)
    } else if !(19..=20).contains(&value.len()) {
        Some(reasons::ICCID_BAD_LENGTH)
    } else if !luhn_is_valid(value).unwrap_or(false) {
        Some(reasons::ICCID_BAD_LUHN)
    } else {
        None
    };
    if let Some(reason) = reason {
        problems.add(reason, Column::Iccid);
    }
    reason.is_none()
}

fn key128(
    value: &str,
    column: Column,
    transport: Option<&TransportKey>,
    problems: &mut Problems<'_>,
) -> Option<Key128> {
    if value.len() != 32 {
        problems.add(reasons::KEY_BAD_LENGTH, column);
        return None;
    }
    if !is_hex(value) {
        problems.add(reasons::KEY_NOT_HEX, column);
        return None;
    }
    let bytes = match transport {
        Some(key) => key.decrypt_field(value).ok(),
        None => hex::decode(value).ok().map(Zeroizing::new),
    };
    match bytes.as_deref().and_then(|bytes| Key128::from_slice(bytes)) {
        Some(key) => Some(key),
        None => {
            problems.add(reasons::DECRYPT_FAILED, column);
            None
        }
    }
}

fn adm1(
    value: &str,
    hex_only: bool,
    transport: Option<&TransportKey>,
    problems: &mut Problems<'_>,
) -> Option<Adm1> {
    let column = if hex_only {
        Column::Adm1Hex
    } else {
        Column::Adm1
    };
    if let Some(key) = transport {
        if value.len() != 32 || !is_hex(value) {
            problems.add(reasons::ADM1_INVALID, column);
            return None;
        }
        let Ok(bytes) = key.decrypt_adm1(value) else {
            problems.add(reasons::DECRYPT_FAILED, column);
            return None;
        };
        if !hex_only && !bytes.iter().all(u8::is_ascii_digit) {
            problems.add(reasons::ADM1_INVALID, column);
            return None;
        }
        return Some(Adm1::from_bytes(*bytes));
    }
    let parsed = match (value.len(), hex_only) {
        (16, _) if is_hex(value) => Adm1::from_hex(value).ok(),
        (8, false) if is_digits(value) => Adm1::from_digits(value).ok(),
        _ => None,
    };
    if parsed.is_none() {
        problems.add(reasons::ADM1_INVALID, column);
    }
    parsed
}

fn pin(value: &str, column: Column, problems: &mut Problems<'_>) -> Option<Pin> {
    let (valid, reason) = match column {
        Column::Puk1 | Column::Puk2 => (value.len() == 8, reasons::PUK_INVALID),
        _ => ((4..=8).contains(&value.len()), reasons::PIN_INVALID),
    };
    if valid && is_digits(value) {
        Some(Pin::new(value))
    } else {
        problems.add(reason, column);
        None
    }
}

fn extra(value: Option<&str>, column: Column, problems: &mut Problems<'_>) -> Option<String> {
    let value = value?;
    let valid = match column {
        Column::Acc => value.len() == 4 && is_hex(value),
        Column::Mcc => value.len() == 3 && is_digits(value),
        Column::Mnc => (2..=3).contains(&value.len()) && is_digits(value),
        Column::Msisdn => {
            let digits = value.strip_prefix('+').unwrap_or(value);
            (1..=15).contains(&digits.len()) && is_digits(digits)
        }
        Column::Smsp => {
            value.len() <= 128
                && value
                    .bytes()
                    .all(|byte| byte.is_ascii_hexdigit() || byte == b'+')
        }
        _ => value.chars().count() <= 64 && !value.chars().any(char::is_control),
    };
    if valid {
        Some(value.to_owned())
    } else {
        problems.add(reasons::FIELD_INVALID, column);
        None
    }
}

/// Validates one row; on failure, appends every problem of the row to `problems`.
pub fn validate_row(
    header: &Header,
    fields: &[&str],
    line: u64,
    transport: Option<&TransportKey>,
    problems: &mut Vec<RowProblem>,
) -> Option<CardRow> {
    let before = problems.len();
    let mut sink = Problems {
        line,
        list: problems,
    };
    let required = |column: Column, sink: &mut Problems<'_>| {
        let value = field(header, fields, column);
        if value.is_none() {
            sink.add(reasons::VALUE_MISSING, column);
        }
        value
    };
    let iccid = required(Column::Iccid, &mut sink).filter(|value| check_iccid(value, &mut sink));
    let imsi = required(Column::Imsi, &mut sink).filter(|value| {
        let valid = (6..=15).contains(&value.len()) && is_digits(value);
        if !valid {
            sink.add(reasons::IMSI_INVALID, Column::Imsi);
        }
        valid
    });
    let ki = required(Column::Ki, &mut sink)
        .and_then(|value| key128(value, Column::Ki, transport, &mut sink));
    let opc = required(Column::Opc, &mut sink)
        .and_then(|value| key128(value, Column::Opc, transport, &mut sink));
    let adm = required(Column::Adm1, &mut sink)
        .and_then(|value| adm1(value, header.adm_is_hex(), transport, &mut sink));
    let pins = PIN_COLUMNS.map(|column| {
        field(header, fields, column).and_then(|value| pin(value, column, &mut sink))
    });
    let extras = CardExtras {
        acc: extra(field(header, fields, Column::Acc), Column::Acc, &mut sink),
        msisdn: extra(
            field(header, fields, Column::Msisdn),
            Column::Msisdn,
            &mut sink,
        ),
        mcc: extra(field(header, fields, Column::Mcc), Column::Mcc, &mut sink),
        mnc: extra(field(header, fields, Column::Mnc), Column::Mnc, &mut sink),
        smsp: extra(field(header, fields, Column::Smsp), Column::Smsp, &mut sink),
        name: extra(field(header, fields, Column::Name), Column::Name, &mut sink),
    };
    if sink.list.len() != before {
        return None;
    }
    Some(CardRow {
        line,
        iccid: iccid?.to_owned(),
        imsi: imsi?.to_owned(),
        ki: ki?,
        opc: opc?,
        adm1: adm?,
        pins,
        extras,
    })
}

fn absorb(hasher: &mut Sha256, value: Option<&[u8]>) {
    match value {
        Some(bytes) => {
            hasher.update([1u8]);
            hasher.update((bytes.len() as u64).to_be_bytes());
            hasher.update(bytes);
        }
        None => hasher.update([0u8]),
    }
}

/// A digest of everything a row says about its card (and the card type), so a re-import can
/// tell "the same card again" from "different data for this ICCID" without decrypting.
///
/// Ki and OPc are 128-bit random values and are part of the input, so the digest cannot be
/// inverted or confirmed by guessing; it is stored next to the sealed values.
pub fn fingerprint(card_type: &str, row: &CardRow) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"simflow.carddata.fingerprint.v1");
    absorb(&mut hasher, Some(card_type.as_bytes()));
    absorb(&mut hasher, Some(row.iccid.as_bytes()));
    absorb(&mut hasher, Some(row.imsi.as_bytes()));
    absorb(&mut hasher, Some(row.ki.bytes()));
    absorb(&mut hasher, Some(row.opc.bytes()));
    absorb(&mut hasher, Some(row.adm1.bytes()));
    for pin in &row.pins {
        absorb(&mut hasher, pin.as_ref().map(|pin| pin.digits().as_bytes()));
    }
    for value in row.extras.in_column_order() {
        absorb(&mut hasher, value.map(str::as_bytes));
    }
    hasher.finalize().into()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A panic is the failure report.
mod tests {
    use super::*;

    const KI: &str = "465b5ce8b199b49faa5f0a2ee238a6bc";
    const OPC: &str = "cd63cb71954a9f4e48a5994e37a02baf";

    fn header(names: &[&str]) -> Header {
        Header::parse(names).unwrap()
    }

    fn codes(header: &Header, fields: &[&str]) -> Vec<(String, Option<String>)> {
        let mut problems = Vec::new();
        let row = validate_row(header, fields, 7, None, &mut problems);
        assert_eq!(row.is_some(), problems.is_empty());
        assert!(problems.iter().all(|problem| problem.line == 7));
        problems
            .into_iter()
            .map(|problem| (problem.code, problem.column))
            .collect()
    }

    #[test]
    fn a_good_row_validates() {
        let shell = header(&[
            "ICCID", "IMSI", "KI", "OPC", "ADM1", "PIN1", "PUK1", "PIN2", "PUK2",
        ]);
        let fields = [
            "8986011000000000009",
            "460001234567890",
            KI,
            OPC,
            "12345678",
            "1234",
            "12345678",
            "",
            "",
        ];
        let mut problems = Vec::new();
        let row = validate_row(&shell, &fields, 2, None, &mut problems).unwrap();
        assert_eq!(row.adm1.bytes(), b"12345678");
        assert_eq!(row.ki.bytes().to_vec(), hex::decode(KI).unwrap());
        assert!(row.pins[0].is_some() && row.pins[2].is_none());
    }

    #[test]
    fn every_problem_of_a_row_is_listed_without_values() {
        let shell = header(&["ICCID", "IMSI", "KI", "OPC", "ADM1", "PUK1"]);
        let found = codes(
            &shell,
            &[
                "8986011000000000018",
                "46000",
                &KI[..30],
                "zz63cb71954a9f4e48a5994e37a02baf",
                "1234567",
                "123",
            ],
        );
        let codes: Vec<&str> = found.iter().map(|(code, _)| code.as_str()).collect();
        assert_eq!(
            codes,
            [
                "ICCID_BAD_LUHN",
                "IMSI_INVALID",
                "KEY_BAD_LENGTH",
                "KEY_NOT_HEX",
                "ADM1_INVALID",
                "PUK_INVALID"
            ]
        );
        assert_eq!(found[2].1.as_deref(), Some("KI"));
        let missing = codes.len();
        assert_eq!(missing, 6);
        let empty = self::codes(&shell, &["", "460001234567890", KI, OPC, "12345678", ""]);
        assert_eq!(
            empty,
            [("VALUE_MISSING".to_owned(), Some("ICCID".to_owned()))]
        );
    }

    #[test]
    fn pin_adm_hex_takes_hex_only() {
        let prog = header(&[
            "iccid",
            "imsi",
            "ki",
            "opc",
            "pin_adm_hex",
            "mcc",
            "mnc",
            "acc",
        ]);
        assert!(
            codes(
                &prog,
                &[
                    "8986011000000000009",
                    "460001234567890",
                    KI,
                    OPC,
                    "3132333435363738",
                    "460",
                    "00",
                    "0001"
                ]
            )
            .is_empty()
        );
        assert_eq!(
            codes(
                &prog,
                &[
                    "8986011000000000009",
                    "460001234567890",
                    KI,
                    OPC,
                    "12345678",
                    "46",
                    "00",
                    "0001"
                ]
            )
            .into_iter()
            .map(|(code, _)| code)
            .collect::<Vec<_>>(),
            ["ADM1_INVALID", "FIELD_INVALID"]
        );
    }

    #[test]
    fn transport_encrypted_keys_are_decrypted() {
        let key = TransportKey::from_hex("t", &"5a".repeat(16)).unwrap();
        let ki = key.encrypt_field(&hex::decode(KI).unwrap()).unwrap();
        let opc = key.encrypt_field(&hex::decode(OPC).unwrap()).unwrap();
        let adm = key.encrypt_adm1(b"87654321").unwrap();
        let shell = header(&["ICCID", "IMSI", "KI", "OPC", "ADM1"]);
        let mut problems = Vec::new();
        let row = validate_row(
            &shell,
            &["8986011000000000009", "460001234567890", &ki, &opc, &adm],
            2,
            Some(&key),
            &mut problems,
        )
        .unwrap();
        assert_eq!(row.ki.bytes().to_vec(), hex::decode(KI).unwrap());
        assert_eq!(row.opc.bytes().to_vec(), hex::decode(OPC).unwrap());
        assert_eq!(row.adm1.bytes(), b"87654321");
    }

    #[test]
    fn fingerprints_tell_content_apart() {
        let shell = header(&["ICCID", "IMSI", "KI", "OPC", "ADM1"]);
        let mut problems = Vec::new();
        let one = validate_row(
            &shell,
            &[
                "8986011000000000009",
                "460001234567890",
                KI,
                OPC,
                "12345678",
            ],
            2,
            None,
            &mut problems,
        )
        .unwrap();
        let same = validate_row(
            &shell,
            &[
                "8986011000000000009",
                "460001234567890",
                KI,
                OPC,
                "12345678",
            ],
            9,
            None,
            &mut problems,
        )
        .unwrap();
        let other = validate_row(
            &shell,
            &[
                "8986011000000000009",
                "460001234567890",
                KI,
                OPC,
                "12345679",
            ],
            3,
            None,
            &mut problems,
        )
        .unwrap();
        assert_eq!(fingerprint("A", &one), fingerprint("A", &same));
        assert_ne!(fingerprint("A", &one), fingerprint("A", &other));
        assert_ne!(fingerprint("A", &one), fingerprint("B", &one));
    }
}
