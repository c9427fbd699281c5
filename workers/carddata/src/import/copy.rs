//! A card row in PostgreSQL's binary `COPY` format (signature, then per row a field count and
//! length-prefixed fields): the sealed value and the fingerprint travel as bytes, so PostgreSQL
//! parses no hex.

use zeroize::{Zeroize, Zeroizing};

use crate::kek::Kek;
use crate::secrets::SecretRecord;
use crate::validate::{self, CardRow};

/// The columns of `carddata.card_rows` a chunk's `COPY` fills (see [`encode_row`]).
pub(super) const COLUMNS: &str = "import_key, line, iccid, imsi, fingerprint, kek_id, secrets, acc, msisdn, mcc, mnc, smsp, name";

/// The header of PostgreSQL's binary COPY format: signature, flags, header extension length.
pub(super) const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The trailer of PostgreSQL's binary COPY format.
pub(super) const TRAILER: &[u8] = &[0xff, 0xff];
/// Fields per staged row (see [`COLUMNS`]).
const FIELDS: i16 = 13;

/// Appends one field in binary COPY format: length, then the bytes (text and bytea alike).
fn push_field(out: &mut Vec<u8>, bytes: &[u8]) {
    let length = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(bytes);
}

fn push_null(out: &mut Vec<u8>) {
    out.extend_from_slice(&(-1i32).to_be_bytes());
}

fn push_optional(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => push_field(out, bytes),
        None => push_null(out),
    }
}

/// One row of `carddata.card_rows` in binary COPY format, its secrets sealed as one record.
/// Binary format saves PostgreSQL from parsing hex for the sealed value and the fingerprint.
/// `record` is a scratch buffer for the plain record, wiped after each row.
pub(super) fn encode_row(
    out: &mut Vec<u8>,
    import_key: i64,
    card_type: &str,
    row: &CardRow,
    kek: &Kek,
    record: &mut Zeroizing<Vec<u8>>,
) {
    let iccid = row.iccid.as_str();
    out.extend_from_slice(&FIELDS.to_be_bytes());
    push_field(out, &import_key.to_be_bytes());
    let line = i64::try_from(row.line).unwrap_or(i64::MAX);
    push_field(out, &line.to_be_bytes());
    push_field(out, iccid.as_bytes());
    push_field(out, row.imsi.as_bytes());
    push_field(out, &validate::fingerprint(card_type, row));
    push_field(out, kek.id().as_bytes());
    SecretRecord::encode_into(record, &row.ki, &row.opc, &row.adm1, &row.pins);
    push_field(out, &kek.seal_record(iccid, record));
    record.zeroize();
    for value in row.extras.in_column_order() {
        push_optional(out, value.map(str::as_bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_copy_fields_are_length_prefixed() {
        let mut out = Vec::new();
        push_field(&mut out, b"ab");
        push_null(&mut out);
        assert_eq!(out, [0, 0, 0, 2, b'a', b'b', 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(HEADER.len(), 19);
    }
}
