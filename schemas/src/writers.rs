//! The writer ledger (写卡器发放明细): card writers as assets, and the reader identity outlet
//! nodes report.
//!
//! The market department records a purchase for a branch; the branch issues the writer to an
//! agent's outlet, takes it back, sends it for repair and gets it back, or writes it off (final).
//! Every step is a job on `simflow.issue` (branch work, like batch issue) answered by one
//! `writer.moved.v1` event, or by `issue.rejected`.
//! A writer is named by the serial its reader reports over PC/SC (`SCARD_ATTR_VENDOR_IFD_SERIAL_NO`,
//! or the serial the outlet's configuration gives a reader whose driver reports none), so the
//! centre can tell from a write result whether the reader that wrote was issued to that outlet.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::common::outlet_code_schema;

/// The longest writer serial, in characters (what `SCARD_ATTR_VENDOR_IFD_SERIAL_NO` gives is short).
pub const MAX_WRITER_SERIAL_CHARS: u32 = 64;

/// `writer.purchase.v1`: the market department records a writer bought for a branch; it is in
/// stock at that branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriterPurchase {
    /// The writer's serial, as its reader reports it.
    #[schemars(length(min = 1, max = MAX_WRITER_SERIAL_CHARS))]
    pub writer_serial: String,
    /// The writer's model, e.g. `ACR39U`.
    pub model: String,
    /// The purchase reference (order or invoice number).
    pub purchase_ref: String,
    /// The branch that gets it, by its secondary warehouse code (二级库在用仓库编码), e.g. `130041`.
    pub branch: String,
    /// The acting staff ID (`writer_purchase` on that warehouse).
    pub staff_id: String,
}

/// `writer.issue.v1`: a branch issues a writer in its stock to an agent's outlet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriterIssue {
    /// The writer.
    #[schemars(length(min = 1, max = MAX_WRITER_SERIAL_CHARS))]
    pub writer_serial: String,
    /// The branch, by its secondary warehouse code; the writer must be in stock there.
    pub branch: String,
    /// The outlet that gets it; its agent must be of this branch.
    #[schemars(schema_with = "outlet_code_schema")]
    pub outlet_code: String,
    /// The acting staff ID (`writers` on the branch's secondary warehouse).
    pub staff_id: String,
}

/// `writer.return.v1`: an outlet gives its writer back to the branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriterReturn {
    /// The writer.
    #[schemars(length(min = 1, max = MAX_WRITER_SERIAL_CHARS))]
    pub writer_serial: String,
    /// The branch it was issued by.
    pub branch: String,
    /// The acting staff ID (`writers` on the branch's secondary warehouse).
    pub staff_id: String,
}

/// Which way a repair step goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RepairDirection {
    /// From the branch's stock to the repairer.
    Out,
    /// From the repairer back into the branch's stock.
    Back,
}

/// `writer.repair.v1`: a branch sends a writer in its stock for repair, or gets it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriterRepair {
    /// The writer.
    #[schemars(length(min = 1, max = MAX_WRITER_SERIAL_CHARS))]
    pub writer_serial: String,
    /// The branch.
    pub branch: String,
    /// Out to the repairer or back from it.
    pub direction: RepairDirection,
    /// The acting staff ID (`writers` on the branch's secondary warehouse).
    pub staff_id: String,
}

/// `writer.write_off.v1`: a branch writes off a writer in its stock or at the repairer (final).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriterWriteOff {
    /// The writer.
    #[schemars(length(min = 1, max = MAX_WRITER_SERIAL_CHARS))]
    pub writer_serial: String,
    /// The branch.
    pub branch: String,
    /// Why, as the clerk entered it.
    pub reason: String,
    /// The acting staff ID (`writers` on the branch's secondary warehouse).
    pub staff_id: String,
}

/// Where a writer is after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WriterState {
    /// In the branch's stock.
    InStock,
    /// With an agent's outlet.
    Issued,
    /// At the repairer.
    InRepair,
    /// Written off; nothing happens to it any more.
    WrittenOff,
}

/// What a step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WriterMovement {
    /// Purchase recorded.
    Purchased,
    /// Issued to an outlet.
    Issued,
    /// Back from an outlet.
    Returned,
    /// Sent for repair.
    RepairOut,
    /// Back from repair.
    RepairBack,
    /// Written off.
    WrittenOff,
}

/// `writer.moved.v1` (routing key `writer.<movement>`, e.g. `writer.issued`): a step took effect,
/// or had already (`already: true`, no second effect).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriterMoved {
    /// The writer.
    pub writer_serial: String,
    /// Its model.
    pub model: String,
    /// What the step did.
    pub movement: WriterMovement,
    /// Where the writer is now.
    pub state: WriterState,
    /// The branch that holds it (its secondary warehouse code).
    pub branch: String,
    /// The outlet that has it, while issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlet_code: Option<String>,
    /// That outlet's agent (ESS department code), while issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_ess_code: Option<String>,
    /// When the step took effect.
    pub moved_at: DateTime<Utc>,
    /// True when the writer was already where the step puts it: a success with no second effect.
    pub already: bool,
}

/// The identity of a card reader as PC/SC reports it. A driver that offers no attribute
/// leaves it out; `serial` may come from the outlet's configuration instead (`serial_source`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReaderIdentity {
    /// The PC/SC reader name, e.g. `Virtual PCD 00 00`.
    pub name: String,
    /// `SCARD_ATTR_VENDOR_NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// `SCARD_ATTR_VENDOR_IFD_TYPE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifd_type: Option<String>,
    /// The writer's serial: `SCARD_ATTR_VENDOR_IFD_SERIAL_NO`, or the configured one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Where `serial` came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_source: Option<SerialSource>,
}

/// Where a reader's serial came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SerialSource {
    /// The driver answered `SCARD_ATTR_VENDOR_IFD_SERIAL_NO`.
    Driver,
    /// The outlet's configuration (`[[outlet.reader_serials]]`), for a driver that reports none.
    Configured,
}

/// `outlet.reader_report.v1`: an outlet node reports its reader when it connects (on the
/// results exchange, with its validated `user_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutletReaderReport {
    /// The report's id (the node draws one per connection).
    pub report_id: Uuid,
    /// The outlet.
    pub outlet_code: String,
    /// The reader it writes with; absent when no reader is attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reader: Option<ReaderIdentity>,
}

/// What the centre did about a reader that is not issued to its outlet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ForeignReaderAction {
    /// Recorded and reported; the work went on (a card already written is always recorded).
    Flagged,
    /// Write requests from the outlet are refused until an issued reader reports.
    Refused,
}

/// Where the centre saw a foreign reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ForeignReaderSeen {
    /// In the node's report when it connected.
    Connect,
    /// In a write result.
    WriteResult,
}

/// `writer.foreign_reader.v1` (routing key `writer.foreign_reader`): an outlet reported, or
/// wrote with, a reader whose serial is not issued to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForeignReader {
    /// The outlet.
    pub outlet_code: String,
    /// The reader it reported (absent when it reported none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reader: Option<ReaderIdentity>,
    /// Where it was seen.
    pub seen_in: ForeignReaderSeen,
    /// The write's script, for a write result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script_id: Option<Uuid>,
    /// The outlet the ledger has this writer with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_to: Option<String>,
    /// What the centre did.
    pub action: ForeignReaderAction,
}
