//! The central write-card worker (现场写卡): from a clerk's write request to a card that holds
//! the customer's number and has proved its key, and the account-opening order around it.
//!
//! A write request is checked against the inventory (the card is issued to the outlet's agent
//! and still blank; the clerk's department is the agent's), reserves the chosen number and an
//! IMSI from the pools, builds the write script from the card data file's keys with the card
//! family's profile, seals it for the one outlet that writes it and routes it to that outlet's
//! queue, expiring. A missing card data file is dead-lettered as `WRITE_SCRIPT_MISSING` so that
//! ops can load the file and replay. The outlet's result is checked (the sender is the outlet's
//! broker user; the card's answer to the challenge matches its keys) before the card counts as
//! written. Pre-submit computes fees and the acceptance form; final submit marks the card sold
//! and tells the provisioning system; cancel releases what the order held.
//! The outlet's reader is checked against the writer ledger (`foreign_reader`): flagged, or
//! under `refuse` its write requests refused before anything is reserved.
//!
//! Tables live in the `writecard` PostgreSQL schema. Cards and org data are the inventory's,
//! reached through `simflow_inventory::writing`; keys are the card data's, reached through
//! `simflow_carddata::keys`. No key leaves this crate except sealed in a write script.

pub mod fees;
pub mod foreign_reader;
pub mod handlers;
pub mod numbers;
pub mod orders;
pub mod outlets;
pub mod reasons;
pub mod request;
pub mod results;
pub mod settings;
pub mod states;

pub use handlers::{OutletExpiredHandler, OutletResultsHandler, WriteCardHandler};
pub use settings::WritecardSettings;

/// Applies the write-card migrations (schema `writecard`).
pub async fn migrate(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    simflow_runtime::db::migrate(pool, "writecard", sqlx::migrate!("./migrations")).await
}
