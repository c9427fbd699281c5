//! The write-card path (现场写卡) and the order around it: write request, the sealed write
//! script for one outlet, the outlet's result, and the order's pre-submit, submit and cancel.
//!
//! A write script carries card secrets: on the wire it is only ever sealed for the one outlet
//! that writes it, and no message here carries a key in clear.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::common::{ClerkMessage, iccid_schema, msisdn_schema, outlet_code_schema};

/// `writecard.request.v1`: write the chosen number onto the card in an outlet's reader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteRequest {
    /// The account-opening order (开户订单) this write belongs to, chosen by the counter app.
    pub order_id: Uuid,
    /// The outlet whose reader holds the card.
    #[schemars(schema_with = "outlet_code_schema")]
    pub outlet_code: String,
    /// The acting clerk's staff ID; its department must equal the agent's.
    pub staff_id: String,
    /// The inserted card's ICCID, as the read step returned it.
    #[schemars(schema_with = "iccid_schema")]
    pub iccid: String,
    /// The number the customer chose (选号), an MSISDN from the number pool.
    #[schemars(schema_with = "msisdn_schema")]
    pub msisdn: String,
    /// The customer's name as entered (shown masked on documents).
    pub customer_name: String,
    /// The package (套餐) code.
    pub package_code: String,
}

/// `writecard.script.v1`: a write script sealed for one outlet, on that outlet's queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteScriptEnvelope {
    /// The script's id; the result refers to it.
    pub script_id: Uuid,
    /// The order.
    pub order_id: Uuid,
    /// The outlet that may open it.
    #[schemars(schema_with = "outlet_code_schema")]
    pub outlet_code: String,
    /// The card it is for; the outlet checks the inserted card against it.
    #[schemars(schema_with = "iccid_schema")]
    pub iccid: String,
    /// The outlet must not start writing after this time.
    pub not_after: DateTime<Utc>,
    /// Fingerprint of the outlet public key the script is sealed to.
    pub sealed_for: String,
    /// The script, sealed (X25519 sealed box) to the outlet's public key, base64.
    pub sealed_script: String,
}

/// What the outlet did with a script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "result", rename_all = "snake_case", deny_unknown_fields)]
pub enum WriteOutcome {
    /// The card was written, read back and answered the authentication challenge.
    Written {
        /// The card's answer to the challenge (the AUTHENTICATE response data), hex.
        auth_answer: String,
        /// APDUs sent for this write.
        apdu_count: u32,
    },
    /// The write did not happen or did not finish.
    Failed {
        /// What the card is now.
        card_state: CardWriteState,
        /// The reason, in the clerk's words.
        reason: ClerkMessage,
    },
}

/// The state a failed write left the card in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CardWriteState {
    /// Nothing was written; the card is still blank.
    Untouched,
    /// Some data was written; the card must not be sold or written again (marked damaged).
    Damaged,
}

/// `writecard.result.v1`: an outlet's result, published to the results exchange with a
/// validated `user_id` equal to the outlet's broker user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteResult {
    /// The script this answers.
    pub script_id: Uuid,
    /// The order.
    pub order_id: Uuid,
    /// The outlet that ran it.
    pub outlet_code: String,
    /// The card's ICCID as read from the card.
    pub iccid: String,
    /// What happened.
    pub outcome: WriteOutcome,
    /// The reader that ran it (absent from nodes older than the writer ledger).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reader: Option<crate::writers::ReaderIdentity>,
}

/// `card.written.v1` (routing key `card.written`): the card holds the number and proved its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CardWritten {
    /// The order.
    pub order_id: Uuid,
    /// The outlet.
    pub outlet_code: String,
    /// The card.
    pub iccid: String,
    /// The number written.
    pub msisdn: String,
}

/// `card.write_failed.v1` (routing key `card.write_failed`): the write did not complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CardWriteFailed {
    /// The order.
    pub order_id: Uuid,
    /// The outlet.
    pub outlet_code: String,
    /// The card.
    pub iccid: String,
    /// What the card is now.
    pub card_state: CardWriteState,
    /// Why, in the clerk's words.
    pub reason: ClerkMessage,
}

/// `order.presubmit.v1`: compute fees and produce the acceptance form (预提交).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderPresubmit {
    /// The order.
    pub order_id: Uuid,
    /// The acting clerk's staff ID.
    pub staff_id: String,
}

/// `order.submit.v1`: final submit (正式提交): the line is opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderSubmit {
    /// The order.
    pub order_id: Uuid,
    /// The acting clerk's staff ID.
    pub staff_id: String,
}

/// `order.cancel.v1`: cancel an order before final submit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderCancel {
    /// The order.
    pub order_id: Uuid,
    /// The acting clerk's staff ID.
    pub staff_id: String,
    /// Why, as the clerk entered it.
    pub reason: String,
}

/// One fee line of an order, in fen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FeeLine {
    /// Stable code, e.g. `CARD_FEE`.
    pub code: String,
    /// Label in Chinese.
    pub label_zh: String,
    /// Label in English.
    pub label_en: String,
    /// Amount in fen.
    pub amount_fen: i64,
}

/// `order.presubmitted.v1` (routing key `order.presubmitted`): fees and acceptance form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderPresubmitted {
    /// The order.
    pub order_id: Uuid,
    /// Fee lines.
    pub fees: Vec<FeeLine>,
    /// Total in fen.
    pub total_fen: i64,
    /// The acceptance form (受理单) as plain text, ready to print.
    pub acceptance_form: String,
}

/// `order.activated.v1` (routing key `order.activated`): for the provisioning system.
/// Keys travel only by reference: the provisioning system fetches them from the key store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderActivated {
    /// The order.
    pub order_id: Uuid,
    /// The card.
    pub iccid: String,
    /// The subscriber identity written on the card.
    pub imsi: String,
    /// The number.
    pub msisdn: String,
    /// The package code.
    pub package_code: String,
    /// Reference to the card's keys in the key store (never the keys).
    pub key_reference: String,
    /// When the line was opened.
    pub activated_at: DateTime<Utc>,
}

/// `order.cancelled.v1` (routing key `order.cancelled`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderCancelled {
    /// The order.
    pub order_id: Uuid,
    /// The number, back in the pool.
    pub msisdn_released: Option<String>,
    /// What became of the card, e.g. `damaged` when it had been written.
    pub card_disposition: String,
}
