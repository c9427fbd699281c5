//! The states the write-card worker stores, as enums: an order's and a write script's. Each
//! maps to the `text` value its table's `CHECK` constraint allows (snake case), so SQL and Rust
//! name a state the same way and every `match` on one is exhaustive.

/// An account opening's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum OrderState {
    /// A write was requested; the card is not written yet.
    Requested,
    /// The card holds the order's data and proved its key.
    Written,
    /// Fees and the acceptance form were computed.
    Presubmitted,
    /// The line was opened.
    Submitted,
    /// Cancelled before submit.
    Cancelled,
}

/// A write script's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum ScriptState {
    /// Routed to the outlet; no answer yet.
    Sent,
    /// No writer took it in time.
    Expired,
    /// The card was written and proved its key.
    Written,
    /// The write failed and the card is untouched.
    Failed,
    /// The card was withdrawn.
    Damaged,
}

impl ScriptState {
    /// Whether the outlet's answer settled the script for good.
    pub fn is_answered(self) -> bool {
        match self {
            ScriptState::Written | ScriptState::Failed | ScriptState::Damaged => true,
            ScriptState::Sent | ScriptState::Expired => false,
        }
    }
}
