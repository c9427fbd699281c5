//! Masking secrets in dead-letter bodies before a page shows them.
//!
//! Dead letters keep the original body, and some bodies carry secrets: a card data import job
//! may carry the vendor file inline (columns `KI`, `OPC`, `ADM1`, PINs and PUKs) and names a
//! `transport_key`; a write script envelope carries the sealed script. The console shows
//! bodies only through [`mask_body`], which hides:
//! - the value of every field whose name is key-like (see [`is_secret_name`]), at any depth;
//! - in text values that are card data files (a header line of column names), every cell of a
//!   key-like column;
//! - anywhere else, every run of 32 or more hexadecimal digits (128-bit keys and longer; an
//!   ICCID has at most 20 digits, an IMSI 15).
//!
//! What stays is what ops need to decide: ids, types, ICCIDs, codes, counts.

use serde_json::Value;

/// What a masked value reads as.
pub const MASKED: &str = "•••• (masked)";

/// Whether a field or column name names a secret: keys (`ki`, `opc`, `op`, `k`, `kic`, `kid`,
/// `kik`, anything with `key`), access codes (`adm…`, `pin…`, `puk…`), passwords, secrets,
/// sealed scripts and the card's authentication answer.
pub fn is_secret_name(name: &str) -> bool {
    let name: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase();
    // `KIC1`, `KID2`, `OPc`: the name without its key-set number.
    let base = name.trim_end_matches(|character: char| character.is_ascii_digit());
    matches!(
        base,
        "ki" | "k" | "op" | "opc" | "kic" | "kid" | "kik" | "kek" | "acc" | "authanswer"
    ) || ["key", "secret", "password", "passwd", "sealed", "token"]
        .iter()
        .any(|word| name.contains(word))
        || ["adm", "pin", "puk"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
}

/// The body as a page may show it: JSON pretty-printed with secrets masked, or, when the body
/// is not JSON, the text with long hex runs and key-like CSV columns masked.
pub fn mask_body(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(mut value) => {
            mask_value(&mut value);
            serde_json::to_string_pretty(&value).unwrap_or_else(|_| MASKED.to_owned())
        }
        Err(_) => mask_text(body),
    }
}

fn mask_value(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            for (name, field) in fields.iter_mut() {
                if is_secret_name(name) && !field.is_null() {
                    *field = Value::String(MASKED.to_owned());
                } else {
                    mask_value(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_value),
        Value::String(text) => *text = mask_text(text),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Masks free text: a card data file's key-like columns, and long hex runs anywhere.
pub fn mask_text(text: &str) -> String {
    mask_hex_runs(&mask_key_columns(text))
}

/// If the text is a delimited file whose first line names columns, masks the cells of every
/// key-like column.
fn mask_key_columns(text: &str) -> String {
    let mut lines = text.split_inclusive('\n');
    let Some(header) = lines.next() else {
        return text.to_owned();
    };
    let Some(delimiter) = [',', ';', '\t', '|']
        .into_iter()
        .find(|delimiter| header.contains(*delimiter))
    else {
        return text.to_owned();
    };
    let secret_columns: Vec<bool> = header
        .trim_end()
        .split(delimiter)
        .map(is_secret_name)
        .collect();
    if !secret_columns.contains(&true) {
        return text.to_owned();
    }
    let mut masked = header.to_owned();
    for line in lines {
        let (content, ending) = match line.strip_suffix('\n') {
            Some(content) => (content, "\n"),
            None => (line, ""),
        };
        let cells: Vec<&str> = content.split(delimiter).collect();
        let row: Vec<&str> = cells
            .iter()
            .enumerate()
            .map(|(index, cell)| {
                if secret_columns.get(index).copied().unwrap_or(false) && !cell.trim().is_empty() {
                    "••••"
                } else {
                    cell
                }
            })
            .collect();
        masked.push_str(&row.join(&delimiter.to_string()));
        masked.push_str(ending);
    }
    masked
}

/// Replaces every run of 32 or more hex digits.
fn mask_hex_runs(text: &str) -> String {
    let mut masked = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, masked: &mut String| {
        if run.len() >= 32 {
            masked.push_str(MASKED);
        } else {
            masked.push_str(run);
        }
        run.clear();
    };
    for character in text.chars() {
        if character.is_ascii_hexdigit() {
            run.push(character);
        } else {
            flush(&mut run, &mut masked);
            masked.push(character);
        }
    }
    flush(&mut run, &mut masked);
    masked
}

#[cfg(test)]
mod tests {
    use super::*;

    const KI: &str = "000102030405060708090A0B0C0D0E0F";
    const OPC: &str = "00112233445566778899AABBCCDDEEFF";

    #[test]
    fn an_inline_card_data_file_keeps_iccids_and_loses_every_key_column() {
        let body = serde_json::json!({
            "import_id": "c0ffee00-1234-4abc-9def-0123456789ab",
            "file_name": "small.csv",
            "source": {
                "from": "inline",
                "content": format!("ICCID,IMSI,KI,OPC,ADM1,PIN1,PUK1\n8986011000000000001,001010000000001,{KI},{OPC},31415926,1234,27182818\n")
            },
            "transport_key": "vendor-2026"
        })
        .to_string();
        let shown = mask_body(&body);
        for secret in [KI, OPC, "31415926", "27182818", "vendor-2026"] {
            assert!(!shown.contains(secret), "{secret} shown: {shown}");
        }
        assert!(shown.contains("8986011000000000001"));
        assert!(shown.contains("001010000000001"));
        assert!(shown.contains("ICCID,IMSI,KI,OPC,ADM1,PIN1,PUK1"));
        assert!(shown.contains("small.csv"));
    }

    #[test]
    fn key_like_fields_are_masked_at_any_depth_and_in_any_spelling() {
        let body = serde_json::json!({
            "cards": [{"iccid": "8986011000000000001", "Ki": "aa", "OPc": "bb", "adm_1": "cc"}],
            "sealed_script": "c2VhbGVk",
            "kek": {"id": "k1"},
            "auth_answer": "dd",
            "subscriber": {"password": "ee", "api_token": "ff"}
        })
        .to_string();
        let shown = mask_body(&body);
        for secret in [
            "\"aa\"", "\"bb\"", "\"cc\"", "c2VhbGVk", "\"dd\"", "\"ee\"", "\"ff\"", "k1",
        ] {
            assert!(!shown.contains(secret), "{secret} shown: {shown}");
        }
        assert!(shown.contains("8986011000000000001"));
    }

    #[test]
    fn long_hex_runs_are_masked_in_any_text_and_short_numbers_are_not() {
        let shown = mask_text(&format!("key material {KI} for 8986011000000000001"));
        assert!(!shown.contains(KI));
        assert!(shown.contains("8986011000000000001"));
        let broken = format!("not json {OPC}");
        assert!(!mask_body(&broken).contains(OPC));
    }

    #[test]
    fn ordinary_names_are_not_taken_for_secrets() {
        for name in [
            "iccid",
            "imsi",
            "msisdn",
            "order_id",
            "outlet_code",
            "import_id",
            "file_name",
        ] {
            assert!(!is_secret_name(name), "{name}");
        }
        for name in [
            "KI",
            "OPc",
            "ADM1",
            "PIN2",
            "PUK1",
            "transport_key",
            "KIC1",
            "sealed_script",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
    }
}
