//! Card data files (号卡文件): the vendor's per-card keys, imported, stored encrypted, and
//! handed to the write-card worker.
//!
//! - [`import`]: streaming, validated, resumable import of a vendor CSV (both pySim spellings),
//!   all-or-nothing for readers; [`handler::CardFileHandler`] runs it as the `cardfile` queue job.
//! - [`keys`]: what the write-card worker calls: [`keys::fetch`], [`keys::exists`],
//!   [`keys::key_ref`].
//! - [`kek`]: AES-256-GCM sealing at rest under a key-encryption key; [`rotate`] moves rows to
//!   a new KEK.
//! - [`transport`]: the vendor's transport-key column encryption (pySim / GSMA FS.28 style).
//!
//! Every table lives in the `carddata` PostgreSQL schema and only this crate touches it.
//! No key value ever reaches a log, an error, an event or a report: refusals carry a line, a
//! column and a code. This crate does not talk to the broker: its handler gets a decoded job and
//! a transaction from `simflow-runtime`.

pub mod csvfile;
pub mod handler;
pub mod import;
pub mod kek;
pub mod keys;
pub mod reasons;
pub mod rotate;
pub mod secrets;
pub mod transport;
pub mod validate;

pub use handler::CardFileHandler;
pub use import::{CardFile, ImportError, ImportReport, ImportRequest, Importer};
pub use kek::KekRing;
pub use secrets::{CardSecrets, Key128, Pin};

/// Applies the carddata migrations (schema `carddata`).
pub async fn migrate(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    simflow_runtime::db::migrate(pool, "carddata", sqlx::migrate!("./migrations")).await
}
