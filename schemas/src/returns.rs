//! Batch return from an agent (批量退卡), by text import of ICCIDs or by a start/end range.
//!
//! A return takes back every card that is issued to the named agent and reports each card that
//! is not, with its reason (卡库位不一致 when the card sits with another agent or in a warehouse).
//! The range mode has a query step first. Money is integer fen, never floating point.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::common::{CardProblem, ClerkMessage, ReturnSelection, iccid_schema, same_length_ends};

/// The fee block of a return: what the clerk entered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReturnFee {
    /// The return amount the clerk entered (退卡金额), in fen; zero or more.
    #[schemars(range(min = 0))]
    pub return_amount_fen: i64,
}

/// `return.by_list.v1`: return the cards of an ICCID list or uploaded text file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReturnByList {
    /// The return's id, chosen by the caller.
    pub return_id: Uuid,
    /// The acting ESS staff ID; bound to the warehouse with the ESS batch permission.
    pub staff_id: String,
    /// The on-site-writing target warehouse the cards come back to.
    pub warehouse: String,
    /// The agent returning the cards, by ESS department code.
    pub agent_ess_code: String,
    /// The cards: `iccids` or `text_file` (ranges use `return.by_range.v1`).
    pub cards: ReturnSelection,
    /// The fee block.
    pub fee: ReturnFee,
}

/// `return.query.v1`: the query step of a range return: what would come back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("anyOf" = same_length_ends()))]
pub struct ReturnQuery {
    /// The query's id, chosen by the caller.
    pub query_id: Uuid,
    /// The acting ESS staff ID.
    pub staff_id: String,
    /// The warehouse the cards would come back to.
    pub warehouse: String,
    /// The agent, by ESS department code.
    pub agent_ess_code: String,
    /// First ICCID of the range (号段起始).
    #[schemars(schema_with = "iccid_schema")]
    pub first: String,
    /// Last ICCID of the range (号段终止): the same length as the first, not before it.
    #[schemars(schema_with = "iccid_schema")]
    pub last: String,
}

/// `return.by_range.v1`: return every card of a start/end range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("anyOf" = same_length_ends()))]
pub struct ReturnByRange {
    /// The return's id, chosen by the caller.
    pub return_id: Uuid,
    /// The acting ESS staff ID.
    pub staff_id: String,
    /// The warehouse the cards come back to.
    pub warehouse: String,
    /// The agent, by ESS department code.
    pub agent_ess_code: String,
    /// First ICCID of the range.
    #[schemars(schema_with = "iccid_schema")]
    pub first: String,
    /// Last ICCID of the range: the same length as the first, not before it.
    #[schemars(schema_with = "iccid_schema")]
    pub last: String,
    /// The fee block.
    pub fee: ReturnFee,
}

/// `return.queried.v1` (routing key `return.queried`): the answer to the query step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReturnQueried {
    /// The query's id.
    pub query_id: Uuid,
    /// The agent, by ESS department code.
    pub agent_ess_code: String,
    /// Cards in the range that would come back.
    pub returnable_count: u64,
    /// Cards in the range that would not, with reasons (at most `problem_limit` listed).
    pub problems: Vec<CardProblem>,
    /// How many cards would not come back in all (may exceed `problems.len()`).
    pub problem_count: u64,
}

/// How the amount actually paid was computed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReturnFeeOutcome {
    /// The return amount the clerk entered, in fen.
    pub return_amount_fen: i64,
    /// The amount actually paid (实收金额), in fen.
    pub paid_amount_fen: i64,
    /// The rule that produced it, in words.
    pub rule: String,
}

/// `return.committed.v1` (routing key `return.committed`): the valid cards are back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReturnCommitted {
    /// The return's id.
    pub return_id: Uuid,
    /// The agent, by ESS department code.
    pub agent_ess_code: String,
    /// Cards that came back (成功数).
    pub success_count: u64,
    /// Cards that did not, in all.
    pub failed_count: u64,
    /// The failed cards with their reasons (at most a bounded number listed).
    pub failed: Vec<CardProblem>,
    /// The fee outcome.
    pub fee: ReturnFeeOutcome,
    /// When the return took effect.
    pub committed_at: DateTime<Utc>,
    /// A short summary for the clerk in both languages.
    pub summary: ClerkMessage,
}
