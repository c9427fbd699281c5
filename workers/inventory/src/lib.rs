//! Blank-card inventory: the organisation (units, warehouses, staff IDs, agents, card types),
//! the cards with their append-only ledger, and the workers that move them: transfers with two
//! approvals, batch issue to agents, batch return from agents; and the branches' card writers
//! (the writer ledger, `writers`).
//!
//! Every table lives in the `inventory` PostgreSQL schema and only this crate touches it; other
//! crates (write-card) call the functions here. Cards move by set-based SQL over ICCID lists and
//! ranges, and every movement appends to `inventory.card_ledger` in the same transaction.
//!
//! This crate does not talk to the broker: its handlers get a decoded job and a transaction
//! from `simflow-runtime` and answer with an outcome or a rejection.

pub mod cards;
pub mod fee;
pub mod iccid;
pub mod issue;
pub mod movement;
pub mod org;
pub mod queries;
pub mod raw;
pub mod reasons;
pub mod returns;
pub mod selection;
pub mod slip;
pub mod staff;
pub mod states;
pub mod transfer;
pub mod writers;
pub mod writing;

pub use issue::{InventorySettings, IssueHandler};
pub use returns::ReturnHandler;
pub use transfer::TransferHandler;

/// Applies the inventory migrations (schema `inventory`).
pub async fn migrate(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    simflow_runtime::db::migrate(pool, "inventory", sqlx::migrate!("./migrations")).await
}
