//! Card data file import (号卡文件) as a queue job for upstream systems.
//!
//! The file is the vendor's CSV (one row per card: ICCID, IMSI, Ki, OPc, ADM1 …). Key columns
//! may arrive encrypted with a transport key; the answer never carries key values, only line
//! numbers and reasons.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Where the job's file is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "from", rename_all = "snake_case", deny_unknown_fields)]
pub enum CardFileSource {
    /// The file's text travels in the message (small files; the broker's frame limit applies).
    Inline {
        /// The CSV text.
        content: String,
    },
    /// A path on storage that the import worker can read (large files).
    Path {
        /// Absolute path as the worker sees it.
        path: String,
    },
}

/// `cardfile.import.v1`: import one vendor card data file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CardFileImport {
    /// The import's id, chosen by the caller.
    pub import_id: Uuid,
    /// The acting staff ID.
    pub staff_id: String,
    /// The file's name, as delivered by the vendor.
    pub file_name: String,
    /// The card type of every card in the file.
    pub card_type: String,
    /// The file.
    pub source: CardFileSource,
    /// The name of the transport key the sensitive columns are encrypted with, if they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_key: Option<String>,
}

/// One row that was not imported, and why (never with key values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RowProblem {
    /// 1-based line number in the file.
    pub line: u64,
    /// The column the problem is in, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// A stable code, e.g. `ICCID_BAD_LUHN`.
    pub code: String,
    /// The reason in Chinese.
    pub message_zh: String,
    /// The reason in English.
    pub message_en: String,
}

/// `cardfile.imported.v1` (routing key `cardfile.imported`): what the import took and left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CardFileImported {
    /// The import's id.
    pub import_id: Uuid,
    /// The file's name.
    pub file_name: String,
    /// Rows imported (new or already present with the same content).
    pub accepted: u64,
    /// Rows refused.
    pub rejected: u64,
    /// The refused rows (at most a bounded number listed).
    pub problems: Vec<RowProblem>,
}
