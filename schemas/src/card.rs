//! Reading the inserted card at an outlet (读卡): the request, the outlet's raw answer, and the
//! central answer to the counter app.
//!
//! The outlet node only knows what the card says (ICCID, written or not); the central side adds
//! what inventory knows (card type, state, which agent holds it).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::common::{ClerkMessage, outlet_code_schema};

/// `card.read_request.v1`: ask an outlet's writer to read the inserted card.
/// Upstream publishes it to the jobs exchange (routing key `writecard`); the centre forwards it,
/// unchanged, to the outlet's queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CardReadRequest {
    /// The request's id, chosen by the caller; the answer carries it.
    pub request_id: Uuid,
    /// The outlet whose reader should read.
    #[schemars(schema_with = "outlet_code_schema")]
    pub outlet_code: String,
    /// The acting clerk's staff ID.
    pub staff_id: String,
}

/// What the reader found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "result", rename_all = "snake_case", deny_unknown_fields)]
pub enum ReaderOutcome {
    /// A card answered.
    Read {
        /// The card's ICCID (read from EF.ICCID).
        iccid: String,
        /// True when the card holds no subscriber data yet (a blank card, 白卡).
        blank: bool,
        /// The card family the outlet recognised, e.g. `sysmoISIM-SJA2`.
        family: String,
    },
    /// The reader or card failed, with the clerk's message from the deck.
    Error {
        /// The message.
        error: ClerkMessage,
    },
}

/// `outlet.card_read.v1`: an outlet's raw answer, published to the results exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutletCardRead {
    /// The request this answers.
    pub request_id: Uuid,
    /// The answering outlet.
    pub outlet_code: String,
    /// What the reader found.
    pub outcome: ReaderOutcome,
}

/// `card.read.v1` (routing key `card.read`): the answer to the counter app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CardRead {
    /// The request this answers.
    pub request_id: Uuid,
    /// The outlet.
    pub outlet_code: String,
    /// The card's ICCID, when a card answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iccid: Option<String>,
    /// The card type code from inventory, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_type: Option<String>,
    /// True when the card is blank on the card and in inventory, and may be written here.
    pub writable: bool,
    /// Why the card may not be written, or the reader error (zh + en).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<ClerkMessage>,
}
