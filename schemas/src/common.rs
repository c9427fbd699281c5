//! Small types that many messages share: how a set of cards is named, the clerk-facing text,
//! and the shapes of the identifiers messages carry.
//!
//! The schema pins every check the workers make on a single message before they touch the
//! database (an ICCID's digits and check digit, a range's ends, a list's size, a fee's sign);
//! what only the database can answer (does the card exist, is the staff ID bound to the
//! warehouse) stays with the workers.
//! Two checks JSON Schema cannot state are named by a `format` of our own, described in
//! [`formats`]: the ICCID's Luhn check digit, and a text file's ICCIDs being distinct.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// At most this many cards in one job (a city batch is 100,000; this leaves room).
/// The inventory worker refuses a larger selection (`SELECTION_TOO_LARGE`); with the broker's
/// message size limit no list this long fits in one message anyway.
pub const MAX_CARDS_PER_JOB: u32 = 1_000_000;

/// An ICCID as the contract writes it: 19 or 20 decimal digits starting with the telecom
/// prefix 89 (ITU-T E.118); the last digit is a Luhn check digit (`format: iccid`).
pub const ICCID_PATTERN: &str = "^89[0-9]{17,18}$";

/// A text file of ICCIDs, one per line: blank lines and spaces, tabs or carriage returns around
/// an ICCID are ignored; at least one line holds an ICCID (`format: iccid-lines` adds the check
/// digits and that no ICCID appears twice).
pub const ICCID_LINES_PATTERN: &str = "^(?:[ \\t\\r]*\\n)*[ \\t\\r]*89[0-9]{17,18}[ \\t\\r]*(?:\\n[ \\t\\r]*(?:89[0-9]{17,18}[ \\t\\r]*)?)*$";

/// An outlet code: 1 to 32 ASCII letters, digits, `-` or `_` (what provisioning accepts; it
/// names the outlet's queue and broker user).
pub const OUTLET_CODE_PATTERN: &str = "^[A-Za-z0-9_-]{1,32}$";

/// An MSISDN as the number pool keeps it: decimal digits only, at most 15 (E.164), no `+`.
pub const MSISDN_PATTERN: &str = "^[0-9]{1,15}$";

/// Something that is not only whitespace.
const NOT_BLANK_PATTERN: &str = "\\S";

/// The two formats of our own, as checks any validator can register (the contract tests do).
pub mod formats {
    /// The format name of one ICCID with a correct Luhn check digit.
    pub const ICCID: &str = "iccid";
    /// The format name of a text file of distinct ICCIDs, one per line.
    pub const ICCID_LINES: &str = "iccid-lines";

    /// The Luhn check digit of a string of decimal digits (`None` for anything else).
    pub fn luhn_check_digit(body: &str) -> Option<u8> {
        let mut sum = 0u32;
        for (position, character) in body.chars().rev().enumerate() {
            let mut digit = character.to_digit(10)?;
            if position % 2 == 0 {
                digit *= 2;
                if digit > 9 {
                    digit -= 9;
                }
            }
            sum += digit;
        }
        u8::try_from((10 - sum % 10) % 10).ok()
    }

    /// `format: iccid`: 19 or 20 digits, starting with 89, the last a Luhn check digit.
    pub fn is_iccid(text: &str) -> bool {
        if !(19..=20).contains(&text.len())
            || !text.bytes().all(|byte| byte.is_ascii_digit())
            || !text.starts_with("89")
        {
            return false;
        }
        let (body, check) = text.split_at(text.len() - 1);
        luhn_check_digit(body) == check.parse::<u8>().ok()
    }

    /// `format: iccid-lines`: every line that is not blank holds one ICCID (spaces, tabs and
    /// carriage returns around it allowed), at least one does, and no ICCID appears twice.
    pub fn is_iccid_lines(text: &str) -> bool {
        let mut seen = std::collections::BTreeSet::new();
        for line in text.split('\n') {
            let line = line.trim_matches([' ', '\t', '\r']);
            if line.is_empty() {
                continue;
            }
            if !is_iccid(line) || !seen.insert(line) {
                return false;
            }
        }
        !seen.is_empty()
    }
}

/// The schema of one ICCID.
pub(crate) fn iccid_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": ICCID_PATTERN,
        "format": formats::ICCID,
    })
}

/// The schema of a strict ICCID list: 1 to [`MAX_CARDS_PER_JOB`] distinct ICCIDs.
fn iccid_list_schema(generator: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": iccid_schema(generator),
        "minItems": 1,
        "maxItems": MAX_CARDS_PER_JOB,
        "uniqueItems": true,
    })
}

/// The schema of a strict text file of ICCIDs.
fn iccid_lines_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": ICCID_LINES_PATTERN,
        "format": formats::ICCID_LINES,
    })
}

/// The schema of an outlet code.
pub(crate) fn outlet_code_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "pattern": OUTLET_CODE_PATTERN })
}

/// The schema of an MSISDN.
pub(crate) fn msisdn_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "pattern": MSISDN_PATTERN })
}

/// The schema of a list of lines as a clerk entered them: at least one not blank.
fn entered_lines_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": { "type": "string" },
        "minItems": 1,
        "maxItems": MAX_CARDS_PER_JOB,
        "contains": { "type": "string", "pattern": NOT_BLANK_PATTERN },
    })
}

/// The schema of a text file as a clerk uploaded it: not blank.
fn entered_text_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "pattern": NOT_BLANK_PATTERN })
}

/// Bounds every integer schema by its Rust type: schemars bounds `u8` and `u16` but gives `u32`
/// and the 64-bit types only their `format`, which validators do not check, so a schema would
/// accept a number serde refuses. (A transform of every message's schema generator.)
pub fn integer_bounds(schema: &mut Schema) {
    let bounds: Option<(serde_json::Value, serde_json::Value)> =
        match schema.get("format").and_then(serde_json::Value::as_str) {
            Some("uint32") => Some((0.into(), u32::MAX.into())),
            Some("uint64") | Some("uint") => Some((0.into(), u64::MAX.into())),
            Some("int32") => Some((i32::MIN.into(), i32::MAX.into())),
            Some("int64") => Some((i64::MIN.into(), i64::MAX.into())),
            _ => None,
        };
    if let Some((minimum, maximum)) = bounds {
        if schema.get("minimum").is_none() {
            schema.insert("minimum".to_owned(), minimum);
        }
        if schema.get("maximum").is_none() {
            schema.insert("maximum".to_owned(), maximum);
        }
    }
}

/// The constraint that a range's two ends have the same length (both 19 or both 20 digits),
/// for an object whose ends are the properties `first` and `last`.
pub(crate) fn same_length_ends() -> serde_json::Value {
    serde_json::json!([
        { "properties": { "first": { "maxLength": 19 }, "last": { "maxLength": 19 } } },
        { "properties": { "first": { "minLength": 20 }, "last": { "minLength": 20 } } }
    ])
}

/// How a transfer or a batch issue names the cards it moves.
///
/// A range is inclusive at both ends and compares ICCIDs of equal length digit by digit,
/// which is numeric order; both ends must have the same length, and the first must not come
/// after the last (the one rule here JSON Schema cannot state: the worker answers `BAD_RANGE`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "by", rename_all = "snake_case", deny_unknown_fields)]
pub enum CardSelection {
    /// An explicit list of distinct ICCIDs.
    Iccids {
        /// ICCIDs (19 or 20 digits, Luhn check digit included), each once.
        #[schemars(schema_with = "iccid_list_schema")]
        iccids: Vec<String>,
    },
    /// Every card whose ICCID lies between `first` and `last`, both included.
    #[schemars(extend("anyOf" = same_length_ends()))]
    Range {
        /// The first ICCID of the range.
        #[schemars(schema_with = "iccid_schema")]
        first: String,
        /// The last ICCID of the range (the same length as the first, not before it).
        #[schemars(schema_with = "iccid_schema")]
        last: String,
    },
    /// Any `quantity` cards that match the job (lowest ICCIDs first).
    Quantity {
        /// How many cards.
        #[schemars(range(min = 1, max = MAX_CARDS_PER_JOB))]
        quantity: u32,
    },
    /// An uploaded text file with one ICCID per line (blank lines and surrounding spaces ignored).
    TextFile {
        /// The file's name as the clerk uploaded it, for the answer.
        file_name: String,
        /// The file's text: distinct ICCIDs, one per line.
        #[schemars(schema_with = "iccid_lines_schema")]
        content: String,
    },
}

/// How a batch return names the cards that come back: a list or an uploaded file, as the clerk
/// entered it. Ranges use `return.by_range.v1`.
///
/// Unlike a transfer's or an issue's selection, a line that is not a well-formed ICCID (or repeats one) does not
/// refuse the return: it is reported back as that card's problem (`ICCID_INVALID`,
/// `DUPLICATE_ICCID`) and the other cards come back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "by", rename_all = "snake_case", deny_unknown_fields)]
pub enum ReturnSelection {
    /// A list of ICCIDs as entered.
    Iccids {
        /// The ICCIDs; blank entries are ignored, at least one is not blank.
        #[schemars(schema_with = "entered_lines_schema")]
        iccids: Vec<String>,
    },
    /// An uploaded text file with one ICCID per line (blank lines and surrounding spaces ignored).
    TextFile {
        /// The file's name as the clerk uploaded it, for the answer.
        file_name: String,
        /// The file's text; at least one line is not blank.
        #[schemars(schema_with = "entered_text_schema")]
        content: String,
    },
}

/// A message for the clerk in both of the operator's languages, with a stable code for machines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClerkMessage {
    /// A stable upper-case code, e.g. `CARD_LOCATION_MISMATCH`.
    pub code: String,
    /// The text in Chinese, as the operator's clerks know it, e.g. `卡库位不一致`.
    pub message_zh: String,
    /// The same text in English.
    pub message_en: String,
}

impl ClerkMessage {
    /// Builds a clerk message from its three parts.
    pub fn new(code: &str, message_zh: &str, message_en: &str) -> Self {
        Self {
            code: code.to_owned(),
            message_zh: message_zh.to_owned(),
            message_en: message_en.to_owned(),
        }
    }
}

/// One card that a job could not take, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CardProblem {
    /// The ICCID as given (it may be malformed).
    pub iccid: String,
    /// Why this card failed.
    pub reason: ClerkMessage,
}
