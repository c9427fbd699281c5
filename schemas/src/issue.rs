//! Batch issue to an agent (批量领卡): prepare, then commit (批量领卡成功，确认正式提交？).
//!
//! Prepare checks every rule and reserves the cards for a limited time; commit makes the issue
//! final. A prepared batch that is not committed in time expires and reserves nothing after that.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::common::CardSelection;

/// `issue.prepare.v1`: check a batch issue and hold its cards until commit or expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IssuePrepare {
    /// The batch's id, chosen by the caller; the commit refers to it.
    pub batch_id: Uuid,
    /// The acting ESS staff ID; bound to the target warehouse with the ESS batch permission.
    pub staff_id: String,
    /// The on-site-writing target warehouse the cards leave, e.g. `13ZDF16`.
    pub warehouse: String,
    /// The agent (social channel), chosen by its ESS department code.
    pub agent_ess_code: String,
    /// The card type code the clerk chose.
    pub card_type: String,
    /// Which cards: an ICCID list, an uploaded text file, a range or a quantity.
    pub cards: CardSelection,
}

/// `issue.commit.v1`: make a prepared batch final (正式提交).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueCommit {
    /// The prepared batch.
    pub batch_id: Uuid,
    /// The acting ESS staff ID (the same rules as for prepare apply).
    pub staff_id: String,
}

/// `issue.prepared.v1` (routing key `issue.prepared`): every card passed; they are held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IssuePrepared {
    /// The batch's id.
    pub batch_id: Uuid,
    /// The agent's ESS department code.
    pub agent_ess_code: String,
    /// How many cards are held for the agent.
    pub card_count: u64,
    /// The hold ends at this time unless the batch is committed.
    pub expires_at: DateTime<Utc>,
    /// The acceptance slip (免填单) as plain text, ready to print.
    pub acceptance_slip: String,
}

/// `issue.committed.v1` (routing key `issue.committed`): the cards now belong to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueCommitted {
    /// The batch's id.
    pub batch_id: Uuid,
    /// The agent's ESS department code.
    pub agent_ess_code: String,
    /// How many cards were issued.
    pub card_count: u64,
    /// When the issue took effect.
    pub committed_at: DateTime<Utc>,
    /// True when the batch had already been committed: a success with no second effect.
    pub already_committed: bool,
}
