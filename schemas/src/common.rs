//! Small types that many messages share: how a set of cards is named, and the clerk-facing text.
//!
//! Nothing here validates business rules (a Luhn digit, a warehouse that exists):
//! the schema only pins the shape, and workers check the meaning.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How a job names the cards it moves.
///
/// A range is inclusive at both ends and compares ICCIDs of equal length digit by digit,
/// which is numeric order; both ends must have the same length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "by", rename_all = "snake_case", deny_unknown_fields)]
pub enum CardSelection {
    /// An explicit list of ICCIDs.
    Iccids {
        /// ICCIDs (19 or 20 digits, Luhn check digit included).
        iccids: Vec<String>,
    },
    /// Every card whose ICCID lies between `first` and `last`, both included.
    Range {
        /// The first ICCID of the range.
        first: String,
        /// The last ICCID of the range.
        last: String,
    },
    /// Any `quantity` cards that match the job (lowest ICCIDs first).
    Quantity {
        /// How many cards.
        quantity: u32,
    },
    /// An uploaded text file with one ICCID per line (blank lines and surrounding spaces ignored).
    TextFile {
        /// The file's name as the clerk uploaded it, for the answer.
        file_name: String,
        /// The file's text.
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
