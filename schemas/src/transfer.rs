//! Warehouse transfers (调拨, type 下拨): create, approve out (调出审核), approve in (调入审核).
//!
//! A transfer moves blank cards of one card type from a unit's secondary warehouse (二级库) to
//! the same unit's on-site-writing target warehouse. The caller chooses `transfer_id`; the two
//! approvals name it. Approving twice is answered as a success with no second effect.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::common::CardSelection;

/// `transfer.create.v1`: ask to move cards from a secondary warehouse to its unit's target
/// warehouse. Nothing moves until both approvals are given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferCreate {
    /// The transfer's id, chosen by the caller; the approvals refer to it.
    pub transfer_id: Uuid,
    /// The acting staff ID (工号); it must be bound to the source warehouse.
    pub staff_id: String,
    /// The secondary warehouse in-use code (二级库在用仓库编码), e.g. `130041`.
    pub source_warehouse: String,
    /// The on-site-writing target warehouse code (现场写卡目标仓库编码), e.g. `13ZDF16`.
    pub target_warehouse: String,
    /// The card type (卡品) code, e.g. `USIM128K_NORMAL`.
    pub card_type: String,
    /// Which cards: a list, a range or a quantity.
    pub cards: CardSelection,
}

/// `transfer.approve_out.v1`: the source side approves the transfer out (调出审核).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferApproveOut {
    /// The transfer to approve.
    pub transfer_id: Uuid,
    /// The acting staff ID; bound to the source warehouse with the approval permission.
    pub staff_id: String,
}

/// `transfer.approve_in.v1`: the target side approves the transfer in (调入审核).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferApproveIn {
    /// The transfer to approve.
    pub transfer_id: Uuid,
    /// The acting staff ID; bound to the target warehouse with the approval permission.
    pub staff_id: String,
}

/// `transfer.created.v1` (routing key `transfer.created`): the transfer exists and holds its cards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferCreated {
    /// The transfer's id.
    pub transfer_id: Uuid,
    /// Source warehouse code.
    pub source_warehouse: String,
    /// Target warehouse code.
    pub target_warehouse: String,
    /// Card type code.
    pub card_type: String,
    /// How many cards the transfer holds.
    pub card_count: u64,
    /// The lowest ICCID in the transfer.
    pub first_iccid: String,
    /// The highest ICCID in the transfer.
    pub last_iccid: String,
    /// Who created it.
    pub created_by: String,
}

/// Which of the two approvals an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStage {
    /// 调出审核: the cards left the source warehouse and are in transit.
    Out,
    /// 调入审核: the cards arrived in the target warehouse.
    In,
}

/// `transfer.approved.v1` (routing keys `transfer.approved_out`, `transfer.approved_in`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferApproved {
    /// The transfer's id.
    pub transfer_id: Uuid,
    /// Which approval this is.
    pub stage: ApprovalStage,
    /// How many cards moved with this approval.
    pub card_count: u64,
    /// The staff ID whose approval took effect (on a repeated approval: the first approver).
    pub approved_by: String,
    /// When the approval took effect.
    pub approved_at: DateTime<Utc>,
    /// True when this approval had already been given: a success with no second effect.
    pub already_approved: bool,
}
