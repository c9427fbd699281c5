//! The states the inventory stores, as enums: a card's state, a transfer's, a batch issue's,
//! and the events of the card ledger. Each maps to the `text` value its table's `CHECK`
//! constraint allows (snake case), so SQL and Rust name a state the same way and every `match`
//! on one is exhaustive.

use serde::Serialize;

/// A card's state (orthogonal to where it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum CardState {
    /// Never written; the only state that may be held, moved between places or written.
    Blank,
    /// Written on site and proven by its authentication answer.
    Written,
    /// Its line was opened (final submit).
    Sold,
    /// Withdrawn: a write broke it, or it holds data nobody will activate.
    Damaged,
}

/// A transfer's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum TransferState {
    /// Created; its cards are held in the source warehouse.
    Created,
    /// Approved out; its cards are in transit.
    ApprovedOut,
    /// Approved in; its cards are in the target warehouse.
    ApprovedIn,
}

/// A batch issue's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum BatchState {
    /// Prepared; its cards are held until the hold lapses.
    Prepared,
    /// Committed; its cards are with the agent.
    Committed,
    /// Given up; its cards were released.
    Expired,
}

/// What a card ledger entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum LedgerEvent {
    /// Received into a warehouse from the vendor.
    Received,
    /// Left its warehouse on a transfer.
    TransferOut,
    /// Arrived in the transfer's target warehouse.
    TransferIn,
    /// Issued to an agent.
    Issued,
    /// Returned by an agent.
    Returned,
    /// Written on site.
    Written,
    /// Withdrawn as damaged.
    Damaged,
    /// Sold (line opened).
    Sold,
}

/// Where a card writer is (`inventory.writers.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum WriterState {
    /// In its branch's stock: may be issued, sent for repair or written off.
    InStock,
    /// With an agent's outlet: may only come back.
    Issued,
    /// At the repairer: may come back or be written off.
    InRepair,
    /// Written off: final.
    WrittenOff,
}

/// What a writer ledger entry records (`inventory.writer_ledger.event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum WriterEvent {
    /// Bought by the market department for a branch.
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
