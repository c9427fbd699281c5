//! Encodings of the SIM files a card writer personalises, and their decoders.
//!
//! ICCID, IMSI, PLMN, EF.AD, EF.SPN, EF.ACC, EF.MSISDN and EF.SMSP records, alpha identifiers
//! and the ADM1 key, following TS 31.102 / TS 51.011 and matching pySim's encoders
//! (the unit tests use pySim's vectors).
//! Functions validate their input and return typed errors; they never guess.
//! This module does not know where the files live or which card family writes them: see
//! [`crate::profile`].

use std::fmt;
use zeroize::Zeroize;

/// Why a value cannot be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodingError {
    /// The value has characters other than decimal digits where only digits are allowed.
    #[error("{field} must contain only decimal digits")]
    NotDigits { field: &'static str },
    /// The value has the wrong number of digits, characters or bytes.
    #[error("{field} has length {got}, expected {expected}")]
    WrongLength {
        field: &'static str,
        expected: &'static str,
        got: usize,
    },
    /// The last digit is not the Luhn check digit of the others.
    #[error("{field} fails the Luhn check (expected check digit {expected})")]
    BadLuhn { field: &'static str, expected: u8 },
    /// A text has a character the card's alphabet cannot hold.
    #[error("{field} contains a character that cannot be encoded: {character:?}")]
    UnsupportedCharacter {
        field: &'static str,
        character: char,
    },
    /// Hex text that does not decode.
    #[error("{field} is not valid hex")]
    NotHex { field: &'static str },
    /// Bytes that do not decode to a value.
    #[error("{field} bytes are malformed: {reason}")]
    Malformed {
        field: &'static str,
        reason: &'static str,
    },
}

type Result<T> = std::result::Result<T, EncodingError>;

fn require_digits(field: &'static str, value: &str) -> Result<()> {
    if value.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(EncodingError::NotDigits { field })
    }
}

fn digit(b: u8) -> u8 {
    b - b'0'
}

/// Pack decimal digits as swapped BCD (first digit in the low nibble), padding with F.
fn swapped_bcd(digits: &str) -> Vec<u8> {
    let nibbles: Vec<u8> = digits.bytes().map(digit).collect();
    nibbles
        .chunks(2)
        .map(|pair| pair[0] | (pair.get(1).copied().unwrap_or(0x0F) << 4))
        .collect()
}

/// Unpack swapped BCD until the first F filler nibble; errors on other non-digit nibbles.
fn unswap_bcd(field: &'static str, bytes: &[u8]) -> Result<String> {
    let mut out = String::new();
    for &byte in bytes {
        for nibble in [byte & 0x0F, byte >> 4] {
            match nibble {
                0..=9 => out.push(char::from(b'0' + nibble)),
                0x0F => return Ok(out),
                _ => {
                    return Err(EncodingError::Malformed {
                        field,
                        reason: "non-BCD nibble",
                    });
                }
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Luhn and ICCID

/// The Luhn check digit of `digits` (the digits without their check digit).
pub fn luhn_check_digit(digits: &str) -> Result<u8> {
    require_digits("Luhn input", digits)?;
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(position, b)| {
            let d = u32::from(digit(b));
            if position % 2 == 0 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    Ok(((10 - sum % 10) % 10) as u8)
}

/// Whether the last digit of `number` is the Luhn check digit of the others.
pub fn luhn_is_valid(number: &str) -> Result<bool> {
    if number.len() < 2 {
        return Err(EncodingError::WrongLength {
            field: "Luhn number",
            expected: "2 or more",
            got: number.len(),
        });
    }
    let (body, check) = number.split_at(number.len() - 1);
    require_digits("Luhn number", check)?;
    Ok(luhn_check_digit(body)? == digit(check.as_bytes()[0]))
}

/// Check that an ICCID has 18 to 20 digits. The Luhn digit is not checked here, because
/// the ICCID is read from the card itself and some operators' 20-digit ICCIDs do not carry one:
/// use [`validate_iccid_luhn`] where a Luhn-valid ICCID is required (e.g. card data import).
pub fn validate_iccid(iccid: &str) -> Result<()> {
    require_digits("ICCID", iccid)?;
    if !(18..=20).contains(&iccid.len()) {
        return Err(EncodingError::WrongLength {
            field: "ICCID",
            expected: "18 to 20 digits",
            got: iccid.len(),
        });
    }
    Ok(())
}

/// [`validate_iccid`] plus the Luhn check on the last digit.
pub fn validate_iccid_luhn(iccid: &str) -> Result<()> {
    validate_iccid(iccid)?;
    if luhn_is_valid(iccid)? {
        Ok(())
    } else {
        let expected = luhn_check_digit(&iccid[..iccid.len() - 1])?;
        Err(EncodingError::BadLuhn {
            field: "ICCID",
            expected,
        })
    }
}

/// EF.ICCID content: digits padded with F to 20 nibbles, nibble-swapped (10 bytes).
pub fn encode_iccid(iccid: &str) -> Result<[u8; 10]> {
    require_digits("ICCID", iccid)?;
    if iccid.is_empty() || iccid.len() > 20 {
        return Err(EncodingError::WrongLength {
            field: "ICCID",
            expected: "1 to 20 digits",
            got: iccid.len(),
        });
    }
    let mut out = [0xFF; 10];
    let packed = swapped_bcd(iccid);
    out[..packed.len()].copy_from_slice(&packed);
    Ok(out)
}

/// Decode EF.ICCID content back to its digits.
pub fn decode_iccid(bytes: &[u8]) -> Result<String> {
    if bytes.len() != 10 {
        return Err(EncodingError::WrongLength {
            field: "EF.ICCID",
            expected: "10 bytes",
            got: bytes.len(),
        });
    }
    let iccid = unswap_bcd("EF.ICCID", bytes)?;
    if iccid.is_empty() {
        return Err(EncodingError::Malformed {
            field: "EF.ICCID",
            reason: "empty",
        });
    }
    Ok(iccid)
}

// ---------------------------------------------------------------------------------------------
// IMSI, PLMN, AD, ACC

/// Size of EF.IMSI.
pub const IMSI_FILE_LEN: usize = 9;

/// EF.IMSI content (9 bytes): length byte, then the first digit with the parity nibble
/// (9 for an odd number of digits, 1 for even) and the other digits as swapped BCD, F-padded.
pub fn encode_imsi(imsi: &str) -> Result<[u8; IMSI_FILE_LEN]> {
    require_digits("IMSI", imsi)?;
    if !(6..=15).contains(&imsi.len()) {
        return Err(EncodingError::WrongLength {
            field: "IMSI",
            expected: "6 to 15 digits",
            got: imsi.len(),
        });
    }
    let parity = if imsi.len() % 2 == 1 { 0x9 } else { 0x1 };
    let mut nibbles = vec![parity];
    nibbles.extend(imsi.bytes().map(digit));
    let packed: Vec<u8> = nibbles
        .chunks(2)
        .map(|pair| pair[0] | (pair.get(1).copied().unwrap_or(0x0F) << 4))
        .collect();
    let mut out = [0xFF; IMSI_FILE_LEN];
    out[0] = packed.len() as u8;
    out[1..=packed.len()].copy_from_slice(&packed);
    Ok(out)
}

/// Decode EF.IMSI; `Ok(None)` for an unwritten file (all FF), which is how a blank card looks.
pub fn decode_imsi(bytes: &[u8]) -> Result<Option<String>> {
    if bytes.len() != IMSI_FILE_LEN {
        return Err(EncodingError::WrongLength {
            field: "EF.IMSI",
            expected: "9 bytes",
            got: bytes.len(),
        });
    }
    if bytes.iter().all(|&b| b == 0xFF) {
        return Ok(None);
    }
    let len = bytes[0] as usize;
    if !(1..=8).contains(&len) {
        return Err(EncodingError::Malformed {
            field: "EF.IMSI",
            reason: "bad length byte",
        });
    }
    let body = &bytes[1..=len];
    let mut nibbles = Vec::with_capacity(len * 2);
    for &b in body {
        nibbles.push(b & 0x0F);
        nibbles.push(b >> 4);
    }
    let parity = nibbles[0];
    let digits: Vec<u8> = nibbles[1..]
        .iter()
        .copied()
        .take_while(|&n| n != 0x0F)
        .collect();
    if digits.iter().any(|&n| n > 9) {
        return Err(EncodingError::Malformed {
            field: "EF.IMSI",
            reason: "non-BCD nibble",
        });
    }
    let expected_parity = if digits.len() % 2 == 1 { 0x9 } else { 0x1 };
    if parity & 0x7 != expected_parity & 0x7 {
        return Err(EncodingError::Malformed {
            field: "EF.IMSI",
            reason: "parity nibble does not match",
        });
    }
    Ok(Some(digits.iter().map(|&d| char::from(b'0' + d)).collect()))
}

fn check_mcc_mnc(mcc: &str, mnc: &str) -> Result<()> {
    require_digits("MCC", mcc)?;
    require_digits("MNC", mnc)?;
    if mcc.len() != 3 {
        return Err(EncodingError::WrongLength {
            field: "MCC",
            expected: "3 digits",
            got: mcc.len(),
        });
    }
    if !(2..=3).contains(&mnc.len()) {
        return Err(EncodingError::WrongLength {
            field: "MNC",
            expected: "2 or 3 digits",
            got: mnc.len(),
        });
    }
    Ok(())
}

/// A PLMN identity (3 bytes, TS 24.008): MCC digits 2|1, MNC digit 3 (or F)|MCC digit 3,
/// MNC digits 2|1.
pub fn encode_plmn(mcc: &str, mnc: &str) -> Result<[u8; 3]> {
    check_mcc_mnc(mcc, mnc)?;
    let m: Vec<u8> = mcc.bytes().map(digit).collect();
    let n: Vec<u8> = mnc.bytes().map(digit).collect();
    let mnc3 = n.get(2).copied().unwrap_or(0x0F);
    Ok([m[1] << 4 | m[0], mnc3 << 4 | m[2], n[1] << 4 | n[0]])
}

/// Decode a PLMN identity; `None` for an unused entry (FFFFFF).
pub fn decode_plmn(bytes: [u8; 3]) -> Option<(String, String)> {
    if bytes == [0xFF; 3] {
        return None;
    }
    let nibble = |n: u8| char::from(b'0' + n);
    let mcc: String = [bytes[0] & 0x0F, bytes[0] >> 4, bytes[1] & 0x0F]
        .into_iter()
        .map(nibble)
        .collect();
    let mut mnc: String = [bytes[2] & 0x0F, bytes[2] >> 4]
        .into_iter()
        .map(nibble)
        .collect();
    if bytes[1] >> 4 != 0x0F {
        mnc.push(nibble(bytes[1] >> 4));
    }
    Some((mcc, mnc))
}

/// The IMSI's MCC and MNC when the MNC length is known.
pub fn split_imsi(imsi: &str, mnc_len: usize) -> Result<(String, String)> {
    require_digits("IMSI", imsi)?;
    if imsi.len() < 3 + mnc_len {
        return Err(EncodingError::WrongLength {
            field: "IMSI",
            expected: "MCC + MNC digits at least",
            got: imsi.len(),
        });
    }
    Ok((imsi[..3].to_string(), imsi[3..3 + mnc_len].to_string()))
}

/// One HPLMNwAcT / PLMNwAcT entry (5 bytes): the PLMN and the access technology bits.
/// `FFFF` selects every technology, as pySim writes it.
pub fn encode_plmn_with_act(mcc: &str, mnc: &str, access_technologies: u16) -> Result<[u8; 5]> {
    let plmn = encode_plmn(mcc, mnc)?;
    let [act1, act2] = access_technologies.to_be_bytes();
    Ok([plmn[0], plmn[1], plmn[2], act1, act2])
}

/// Size of one PLMN identity in a PLMN list file.
pub const PLMN_LEN: usize = 3;

/// Size of one entry of a PLMN-with-access-technology file (PLMN + 2 bytes of AcT).
pub const PLMN_WITH_ACT_LEN: usize = 5;

fn check_list_fits(
    field: &'static str,
    entries: usize,
    entry_len: usize,
    file_len: usize,
) -> Result<()> {
    if !file_len.is_multiple_of(entry_len) || entries * entry_len > file_len {
        return Err(EncodingError::WrongLength {
            field,
            expected: "whole entries that fit the file",
            got: entries * entry_len,
        });
    }
    Ok(())
}

/// A PLMN list file of `file_len` bytes (EF.EHPLMN, EF.FPLMN, EF.PLMNsel): the PLMN identities in
/// order, unused entries FFFFFF. An empty list clears the file.
pub fn encode_plmn_list(plmns: &[(&str, &str)], file_len: usize) -> Result<Vec<u8>> {
    check_list_fits("PLMN list", plmns.len(), PLMN_LEN, file_len)?;
    let mut out = Vec::with_capacity(file_len);
    for (mcc, mnc) in plmns {
        out.extend(encode_plmn(mcc, mnc)?);
    }
    out.resize(file_len, 0xFF);
    Ok(out)
}

/// The PLMNs of a PLMN list file, skipping unused entries.
pub fn decode_plmn_list(bytes: &[u8]) -> Result<Vec<(String, String)>> {
    if !bytes.len().is_multiple_of(PLMN_LEN) {
        return Err(EncodingError::Malformed {
            field: "PLMN list",
            reason: "not whole 3-byte entries",
        });
    }
    Ok(bytes
        .chunks(PLMN_LEN)
        .filter_map(|entry| decode_plmn([entry[0], entry[1], entry[2]]))
        .collect())
}

/// A PLMN-with-access-technology file of `file_len` bytes (EF.HPLMNwAcT, EF.PLMNwAcT,
/// EF.OPLMNwAcT): the given entries, then unused entries FFFFFF0000 as cards ship them
/// (60 bytes, twelve entries, on a sysmoISIM-SJA2).
pub fn encode_plmn_with_act_list(
    entries: &[[u8; PLMN_WITH_ACT_LEN]],
    file_len: usize,
) -> Result<Vec<u8>> {
    check_list_fits("PLMNwAcT list", entries.len(), PLMN_WITH_ACT_LEN, file_len)?;
    let mut out = Vec::with_capacity(file_len);
    for entry in entries {
        out.extend_from_slice(entry);
    }
    while out.len() < file_len {
        out.extend([0xFF, 0xFF, 0xFF, 0x00, 0x00]);
    }
    Ok(out)
}

/// Check that an MNC has 2 or 3 digits.
pub fn check_mnc_len(mnc_len: usize) -> Result<()> {
    if (2..=3).contains(&mnc_len) {
        Ok(())
    } else {
        Err(EncodingError::WrongLength {
            field: "MNC",
            expected: "2 or 3 digits",
            got: mnc_len,
        })
    }
}

/// EF.AD (4 bytes): normal operation, no additional information, the MNC length.
pub fn encode_ad(mnc_len: usize) -> Result<[u8; 4]> {
    check_mnc_len(mnc_len)?;
    Ok([0x00, 0x00, 0x00, mnc_len as u8])
}

/// The MNC length stored in EF.AD, if the file has one.
pub fn decode_ad_mnc_len(bytes: &[u8]) -> Option<u8> {
    bytes
        .get(3)
        .map(|b| b & 0x0F)
        .filter(|len| (2..=3).contains(len))
}

/// EF.ACC (2 bytes): the access control class is the IMSI's last digit (0..9), one bit per
/// class, as pySim derives it when the card data has no explicit ACC.
pub fn encode_acc_for_imsi(imsi: &str) -> Result<[u8; 2]> {
    require_digits("IMSI", imsi)?;
    let last = imsi.bytes().last().ok_or(EncodingError::WrongLength {
        field: "IMSI",
        expected: "6 to 15 digits",
        got: 0,
    })?;
    Ok((1u16 << digit(last)).to_be_bytes())
}

// ---------------------------------------------------------------------------------------------
// Alpha identifiers, SPN, MSISDN, SMSP

/// Characters whose GSM 7-bit default alphabet code equals their ASCII code.
fn gsm_default_same_as_ascii(c: char) -> bool {
    c.is_ascii_alphanumeric() || " !\"#%&'()*+,-./:;<=>?".contains(c)
}

/// An alpha identifier of exactly `len` bytes (TS 102 221 Annex A): the GSM default alphabet
/// (unpacked, bit 8 zero) when every character allows it, otherwise UCS2 with the 0x80 prefix
/// (so Chinese names fit, 7 characters in 16 bytes). Padded with FF.
pub fn encode_alpha(field: &'static str, text: &str, len: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    if text.chars().all(gsm_default_same_as_ascii) {
        out.extend(text.bytes());
    } else {
        out.push(0x80);
        for unit in text.encode_utf16() {
            if (0xD800..0xE000).contains(&unit) {
                let character = text.chars().find(|c| c.len_utf16() > 1).unwrap_or('?');
                return Err(EncodingError::UnsupportedCharacter { field, character });
            }
            out.extend(unit.to_be_bytes());
        }
    }
    if out.len() > len {
        return Err(EncodingError::WrongLength {
            field,
            expected: "fits the alpha identifier",
            got: out.len(),
        });
    }
    out.resize(len, 0xFF);
    Ok(out)
}

/// Decode an alpha identifier written by [`encode_alpha`] (GSM-as-ASCII or 0x80 UCS2).
pub fn decode_alpha(bytes: &[u8]) -> Result<String> {
    if bytes.first() == Some(&0x80) {
        let units: Vec<u16> = bytes[1..]
            .chunks(2)
            .take_while(|pair| pair.len() == 2 && pair != &[0xFF, 0xFF])
            .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
            .collect();
        return String::from_utf16(&units).map_err(|_| EncodingError::Malformed {
            field: "alpha identifier",
            reason: "bad UCS2",
        });
    }
    let text: Vec<u8> = bytes.iter().copied().take_while(|&b| b != 0xFF).collect();
    String::from_utf8(text).map_err(|_| EncodingError::Malformed {
        field: "alpha identifier",
        reason: "not text",
    })
}

/// Size of EF.SPN.
pub const SPN_FILE_LEN: usize = 17;

/// EF.SPN (17 bytes): the display condition byte, then the name as a 16-byte alpha identifier.
/// Display condition bit 1: show the registered PLMN name in the home network;
/// bit 2: do not require the SPN when roaming.
pub fn encode_spn(name: &str, display_condition: u8) -> Result<[u8; SPN_FILE_LEN]> {
    let alpha = encode_alpha("SPN", name, SPN_FILE_LEN - 1)?;
    let mut out = [0xFF; SPN_FILE_LEN];
    out[0] = display_condition;
    out[1..].copy_from_slice(&alpha);
    Ok(out)
}

/// Decode EF.SPN to (display condition, name); `None` for an unwritten file.
pub fn decode_spn(bytes: &[u8]) -> Result<Option<(u8, String)>> {
    if bytes.iter().all(|&b| b == 0xFF) {
        return Ok(None);
    }
    let (&condition, name) = bytes.split_first().ok_or(EncodingError::WrongLength {
        field: "EF.SPN",
        expected: "17 bytes",
        got: 0,
    })?;
    Ok(Some((condition, decode_alpha(name)?)))
}

/// Type of number / numbering plan byte: international number, ISDN/telephony plan.
pub const TON_NPI_INTERNATIONAL: u8 = 0x91;
/// Type of number / numbering plan byte: unknown type, ISDN/telephony plan.
pub const TON_NPI_UNKNOWN: u8 = 0x81;

/// The 14 bytes after the alpha identifier of an EF.MSISDN (or EF.ADN) record:
/// length of BCD number + TON/NPI, TON/NPI, 10 bytes of swapped BCD, capability id FF,
/// extension id FF. A leading `+` forces the international type of number; otherwise TON/NPI
/// is `0x80 | ton << 4 | npi`. An empty number gives an all-FF (unused) block, as in pySim.
pub fn encode_dialling_number(number: &str, ton: u8, npi: u8) -> Result<[u8; 14]> {
    let (digits, ton) = match number.strip_prefix('+') {
        Some(rest) => (rest, 0x01),
        None => (number, ton),
    };
    let mut out = [0xFF; 14];
    if digits.is_empty() {
        return Ok(out);
    }
    require_digits("dialling number", digits)?;
    if digits.len() > 20 {
        return Err(EncodingError::WrongLength {
            field: "dialling number",
            expected: "up to 20 digits",
            got: digits.len(),
        });
    }
    let bcd = swapped_bcd(digits);
    out[0] = (bcd.len() + 1) as u8;
    out[1] = 0x80 | (ton & 0x07) << 4 | (npi & 0x0F);
    out[2..2 + bcd.len()].copy_from_slice(&bcd);
    Ok(out)
}

/// Decode the 14-byte dialling number block; `None` when unused. International numbers get `+`.
pub fn decode_dialling_number(bytes: &[u8]) -> Result<Option<String>> {
    if bytes.len() != 14 {
        return Err(EncodingError::WrongLength {
            field: "dialling number",
            expected: "14 bytes",
            got: bytes.len(),
        });
    }
    if bytes[0] == 0xFF || bytes[0] == 0 {
        return Ok(None);
    }
    let len = bytes[0] as usize;
    if !(2..=11).contains(&len) {
        return Err(EncodingError::Malformed {
            field: "dialling number",
            reason: "bad length byte",
        });
    }
    let digits = unswap_bcd("dialling number", &bytes[2..1 + len])?;
    let international = (bytes[1] >> 4) & 0x07 == 0x01;
    Ok(Some(if international {
        format!("+{digits}")
    } else {
        digits
    }))
}

/// One EF.MSISDN record of `record_len` bytes: alpha identifier (record_len − 14 bytes) and
/// the dialling number. Numbers without `+` are coded with unknown type of number.
pub fn encode_msisdn_record(alpha: &str, msisdn: &str, record_len: usize) -> Result<Vec<u8>> {
    if record_len < 14 {
        return Err(EncodingError::WrongLength {
            field: "EF.MSISDN record",
            expected: "14 bytes or more",
            got: record_len,
        });
    }
    let mut out = encode_alpha("MSISDN alpha identifier", alpha, record_len - 14)?;
    out.extend(encode_dialling_number(msisdn, 0x00, 0x01)?);
    Ok(out)
}

/// Decode the number of an EF.MSISDN record (the last 14 bytes).
pub fn decode_msisdn_record(record: &[u8]) -> Result<Option<String>> {
    if record.len() < 14 {
        return Err(EncodingError::WrongLength {
            field: "EF.MSISDN record",
            expected: "14 bytes or more",
            got: record.len(),
        });
    }
    decode_dialling_number(&record[record.len() - 14..])
}

/// Parameter indicators of an SMSP record with only the service centre address present
/// (bit = 0 means present; bit 2 is the TS-Service Centre Address).
const SMSP_ONLY_SERVICE_CENTRE: u8 = 0xFD;

/// One EF.SMSP record of `record_len` bytes (TS 31.102 §4.2.27): empty alpha identifier
/// (record_len − 28 bytes of FF), parameter indicators (only the service centre present),
/// TP-Destination Address unused (12 × FF), the service centre address (12 bytes: length of
/// TON/NPI + BCD, TON/NPI, BCD, FF padding), TP-PID, TP-DCS and TP-VP unused (FF).
pub fn encode_smsp_record(service_centre: &str, record_len: usize) -> Result<Vec<u8>> {
    if record_len < 28 {
        return Err(EncodingError::WrongLength {
            field: "EF.SMSP record",
            expected: "28 bytes or more",
            got: record_len,
        });
    }
    let (digits, ton_npi) = match service_centre.strip_prefix('+') {
        Some(rest) => (rest, TON_NPI_INTERNATIONAL),
        None => (service_centre, TON_NPI_UNKNOWN),
    };
    require_digits("SMS service centre", digits)?;
    if digits.is_empty() || digits.len() > 20 {
        return Err(EncodingError::WrongLength {
            field: "SMS service centre",
            expected: "1 to 20 digits",
            got: digits.len(),
        });
    }
    let mut out = vec![0xFF; record_len - 28];
    out.push(SMSP_ONLY_SERVICE_CENTRE);
    out.extend([0xFF; 12]);
    let bcd = swapped_bcd(digits);
    let mut address = [0xFF; 12];
    address[0] = (bcd.len() + 1) as u8;
    address[1] = ton_npi;
    address[2..2 + bcd.len()].copy_from_slice(&bcd);
    out.extend(address);
    out.extend([0xFF; 3]);
    Ok(out)
}

/// Decode the service centre number of an EF.SMSP record, if present.
pub fn decode_smsp_service_centre(record: &[u8]) -> Result<Option<String>> {
    if record.len() < 28 {
        return Err(EncodingError::WrongLength {
            field: "EF.SMSP record",
            expected: "28 bytes or more",
            got: record.len(),
        });
    }
    let params = &record[record.len() - 28..];
    if params[0] & 0x02 != 0 {
        return Ok(None);
    }
    let address = &params[13..25];
    let len = address[0] as usize;
    if !(2..=11).contains(&len) {
        return Err(EncodingError::Malformed {
            field: "EF.SMSP service centre",
            reason: "bad length byte",
        });
    }
    let digits = unswap_bcd("EF.SMSP service centre", &address[2..1 + len])?;
    Ok(Some(if address[1] == TON_NPI_INTERNATIONAL {
        format!("+{digits}")
    } else {
        digits
    }))
}

// ---------------------------------------------------------------------------------------------
// ADM1

/// The ADM1 key of a card, encoded as the 8 bytes VERIFY sends.
///
/// Vendors ship it as ASCII digits (`55538407` → `3535353338343037`, shorter values padded
/// with FF) or as 16 hex characters. The bytes are wiped on drop and never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Adm1([u8; 8]);

impl Drop for Adm1 {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl Adm1 {
    /// From ASCII digits (1 to 8), padded with FF.
    pub fn from_digits(digits: &str) -> Result<Self> {
        require_digits("ADM1", digits)?;
        if digits.is_empty() || digits.len() > 8 {
            return Err(EncodingError::WrongLength {
                field: "ADM1",
                expected: "1 to 8 digits",
                got: digits.len(),
            });
        }
        let mut bytes = [0xFF; 8];
        bytes[..digits.len()].copy_from_slice(digits.as_bytes());
        Ok(Adm1(bytes))
    }

    /// From 16 hex characters (the `pin_adm_hex` spelling).
    pub fn from_hex(text: &str) -> Result<Self> {
        if text.len() != 16 {
            return Err(EncodingError::WrongLength {
                field: "ADM1 hex",
                expected: "16 hex characters",
                got: text.len(),
            });
        }
        let mut bytes = [0u8; 8];
        hex::decode_to_slice(text, &mut bytes)
            .map_err(|_| EncodingError::NotHex { field: "ADM1 hex" })?;
        Ok(Adm1(bytes))
    }

    /// Either spelling: 16 characters are hex, anything shorter is ASCII digits.
    pub fn parse(text: &str) -> Result<Self> {
        if text.len() == 16 {
            Adm1::from_hex(text)
        } else {
            Adm1::from_digits(text)
        }
    }

    /// From the 8 encoded bytes.
    pub fn from_bytes(bytes: [u8; 8]) -> Self {
        Adm1(bytes)
    }

    /// The 8 bytes VERIFY sends.
    pub fn bytes(&self) -> &[u8; 8] {
        &self.0
    }
}

impl fmt::Debug for Adm1 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Adm1(<redacted>)")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Test vectors: a panic is the failure report.
mod tests {
    use super::*;

    fn hexs(bytes: &[u8]) -> String {
        hex::encode(bytes)
    }

    #[test]
    fn imsi_matches_the_pysim_vectors() {
        assert_eq!(
            hexs(&encode_imsi("001010000123456").unwrap()),
            "080910100000214365"
        );
        assert_eq!(
            hexs(&encode_imsi("22806280000028").unwrap()),
            "0821826082000020f8"
        );
        assert_eq!(
            hexs(&encode_imsi("0010100001234").unwrap()),
            "0709101000002143ff"
        );
    }

    #[test]
    fn imsi_round_trips_and_blank_decodes_to_none() {
        for imsi in [
            "001010000123456",
            "22806280000028",
            "0010100001234",
            "460001234567890",
            "123456",
        ] {
            assert_eq!(
                decode_imsi(&encode_imsi(imsi).unwrap()).unwrap().as_deref(),
                Some(imsi)
            );
        }
        assert_eq!(decode_imsi(&[0xFF; 9]), Ok(None));
        assert!(decode_imsi(&[0x09, 0x10]).is_err());
    }

    #[test]
    fn imsi_rejects_bad_input() {
        assert_eq!(
            encode_imsi("00101a"),
            Err(EncodingError::NotDigits { field: "IMSI" })
        );
        assert!(matches!(
            encode_imsi("0010100001234567"),
            Err(EncodingError::WrongLength { .. })
        ));
        assert!(matches!(
            encode_imsi("12345"),
            Err(EncodingError::WrongLength { .. })
        ));
    }

    #[test]
    fn iccid_matches_the_pysim_vector_and_round_trips() {
        assert_eq!(
            hexs(&encode_iccid("8988211000000430010").unwrap()),
            "988812010000400310f0"
        );
        assert_eq!(
            decode_iccid(&encode_iccid("8988211000000430010").unwrap()).unwrap(),
            "8988211000000430010"
        );
        assert_eq!(
            decode_iccid(&encode_iccid("89860012345678901234").unwrap()).unwrap(),
            "89860012345678901234"
        );
        assert!(decode_iccid(&[0xFF; 10]).is_err());
        assert!(encode_iccid("898821100000043001012").is_err());
    }

    #[test]
    fn luhn_matches_the_pysim_vectors() {
        assert_eq!(luhn_check_digit("898821100000053008"), Ok(2));
        assert_eq!(luhn_is_valid("8988211000000530082"), Ok(true));
        assert_eq!(luhn_is_valid("8988211000000530081"), Ok(false));
        assert_eq!(validate_iccid_luhn("89882110000005300811"), Ok(()));
        assert_eq!(
            validate_iccid_luhn("8988211000000530081"),
            Err(EncodingError::BadLuhn {
                field: "ICCID",
                expected: 2
            })
        );
        assert!(matches!(
            validate_iccid("12345"),
            Err(EncodingError::WrongLength { .. })
        ));
        assert_eq!(
            validate_iccid("89882110000005300x1"),
            Err(EncodingError::NotDigits { field: "ICCID" })
        );
    }

    #[test]
    fn plmn_matches_the_pysim_vectors() {
        assert_eq!(hexs(&encode_plmn("001", "01").unwrap()), "00f110");
        assert_eq!(hexs(&encode_plmn("295", "10").unwrap()), "92f501");
        assert_eq!(hexs(&encode_plmn("001", "001").unwrap()), "001100");
        assert_eq!(hexs(&encode_plmn("302", "361").unwrap()), "031263");
        assert_eq!(
            decode_plmn([0x92, 0xF5, 0x01]),
            Some(("295".into(), "10".into()))
        );
        assert_eq!(
            decode_plmn([0x03, 0x12, 0x63]),
            Some(("302".into(), "361".into()))
        );
        assert_eq!(decode_plmn([0xFF; 3]), None);
        assert!(encode_plmn("00", "01").is_err());
        assert!(encode_plmn("001", "1").is_err());
        assert_eq!(
            hexs(&encode_plmn_with_act("460", "00", 0xFFFF).unwrap()),
            "64f000ffff"
        );
    }

    #[test]
    fn plmn_lists_pad_with_ff_and_an_empty_list_clears_the_file() {
        let ehplmn = encode_plmn_list(&[("460", "00")], 12).unwrap();
        assert_eq!(hexs(&ehplmn), "64f000ffffffffffffffffff");
        assert_eq!(
            decode_plmn_list(&ehplmn).unwrap(),
            vec![("460".to_string(), "00".to_string())]
        );
        let cleared = encode_plmn_list(&[], 12).unwrap();
        assert_eq!(cleared, vec![0xFF; 12]);
        assert_eq!(decode_plmn_list(&cleared).unwrap(), vec![]);
        // The FPLMN a real sysmoUSIM-SJS1 ships with, as pySim-read shows it.
        let factory = hex::decode("62f20162f20262f20362f207").unwrap();
        assert_eq!(decode_plmn_list(&factory).unwrap().len(), 4);
        assert!(encode_plmn_list(&[("001", "01"); 5], 12).is_err());
        assert!(decode_plmn_list(&[0xFF; 4]).is_err());
    }

    #[test]
    fn plmn_with_act_files_are_60_bytes_with_unused_entries_ffffff0000() {
        let home = encode_plmn_with_act("001", "01", 0xFFFF).unwrap();
        let file = encode_plmn_with_act_list(&[home], 60).unwrap();
        assert_eq!(file.len(), 60);
        // As a real sysmoISIM-SJA2 shows its EF.HPLMNwAcT after pySim-prog.
        assert_eq!(
            hexs(&file),
            "00f110ffffffffff0000ffffff0000ffffff0000ffffff0000ffffff0000ffffff0000\
             ffffff0000ffffff0000ffffff0000ffffff0000ffffff0000"
        );
        assert!(encode_plmn_with_act_list(&[home], 42).is_err());
    }

    #[test]
    fn ad_and_acc_follow_pysim() {
        assert_eq!(hexs(&encode_ad(2).unwrap()), "00000002");
        assert_eq!(hexs(&encode_ad(3).unwrap()), "00000003");
        assert_eq!(decode_ad_mnc_len(&[0, 0, 0, 2]), Some(2));
        assert!(encode_ad(4).is_err());
        assert_eq!(
            hexs(&encode_acc_for_imsi("001010000123456").unwrap()),
            "0040"
        );
        assert_eq!(
            hexs(&encode_acc_for_imsi("001010000123450").unwrap()),
            "0001"
        );
        assert_eq!(
            hexs(&encode_acc_for_imsi("001010000123459").unwrap()),
            "0200"
        );
    }

    #[test]
    fn msisdn_matches_the_pysim_vectors() {
        let enc = |number: &str| hexs(&encode_dialling_number(number, 0x03, 0x01).unwrap());
        assert_eq!(enc("+4916012345678"), "0891946110325476f8ffffffffff");
        assert_eq!(enc("123456"), "04b1214365ffffffffffffffffff");
        assert_eq!(enc("12345678901234567890"), "0bb121436587092143658709ffff");
        assert_eq!(enc("+12345678901234567890"), "0b9121436587092143658709ffff");
        assert_eq!(enc(""), "ffffffffffffffffffffffffffff");
        assert_eq!(enc("+"), "ffffffffffffffffffffffffffff");
        let dec = |text: &str| decode_dialling_number(&hex::decode(text).unwrap()).unwrap();
        assert_eq!(
            dec("0891946110325476f8ffffffffff").as_deref(),
            Some("+4916012345678")
        );
        assert_eq!(
            dec("0bb121436587092143658709ffff").as_deref(),
            Some("12345678901234567890")
        );
        assert_eq!(dec("ffffffffffffffffffffffffffff"), None);
    }

    #[test]
    fn msisdn_records_pad_the_alpha_identifier() {
        let record = encode_msisdn_record("", "+8613800138000", 34).unwrap();
        assert_eq!(record.len(), 34);
        assert!(record[..20].iter().all(|&b| b == 0xFF));
        assert_eq!(
            decode_msisdn_record(&record).unwrap().as_deref(),
            Some("+8613800138000")
        );
        let record = encode_msisdn_record("Me", "13800138000", 34).unwrap();
        assert_eq!(&record[..3], &[b'M', b'e', 0xFF]);
        assert_eq!(
            decode_msisdn_record(&record).unwrap().as_deref(),
            Some("13800138000")
        );
        assert!(encode_msisdn_record("", "1380013800x", 34).is_err());
    }

    #[test]
    fn smsp_records_carry_only_the_service_centre() {
        let record = encode_smsp_record("+8613800100500", 52).unwrap();
        assert_eq!(record.len(), 52);
        assert_eq!(record[24], 0xFD);
        assert_eq!(hexs(&record[37..49]), "0891683108100005f0ffffff");
        assert_eq!(
            decode_smsp_service_centre(&record).unwrap().as_deref(),
            Some("+8613800100500")
        );
        assert!(encode_smsp_record("", 52).is_err());
    }

    #[test]
    fn spn_uses_gsm_or_ucs2() {
        let spn = encode_spn("simflow", 0x01).unwrap();
        assert_eq!(hexs(&spn), "0173696d666c6f77ffffffffffffffffff");
        assert_eq!(
            decode_spn(&spn).unwrap(),
            Some((0x01, "simflow".to_string()))
        );
        let spn = encode_spn("中国移动", 0x01).unwrap();
        assert_eq!(hexs(&spn[..10]), "01804e2d56fd79fb52a8");
        assert_eq!(
            decode_spn(&spn).unwrap(),
            Some((0x01, "中国移动".to_string()))
        );
        assert!(encode_spn("a name far too long for it", 0).is_err());
        assert_eq!(decode_spn(&[0xFF; 17]), Ok(None));
    }

    #[test]
    fn adm1_accepts_both_spellings_and_never_prints() {
        assert_eq!(
            hexs(Adm1::from_digits("55538407").unwrap().bytes()),
            "3535353338343037"
        );
        assert_eq!(
            hexs(Adm1::from_digits("1234").unwrap().bytes()),
            "31323334ffffffff"
        );
        assert_eq!(
            hexs(Adm1::parse("3535353338343037").unwrap().bytes()),
            "3535353338343037"
        );
        assert_eq!(Adm1::parse("55538407"), Adm1::from_digits("55538407"));
        assert!(Adm1::from_digits("123456789").is_err());
        assert!(Adm1::from_hex("zz35353338343037").is_err());
        assert_eq!(
            format!("{:?}", Adm1::from_digits("55538407").unwrap()),
            "Adm1(<redacted>)"
        );
    }
}
