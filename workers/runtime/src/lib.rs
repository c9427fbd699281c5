//! The AMQP plumbing every simflow worker shares, and the only crate that depends on `lapin`.
//!
//! A worker implements [`Handler`]: it gets a decoded job and a database transaction and returns
//! an [`Outcome`] (events and messages to publish) or a [`JobError`] that says what should happen
//! next (rejection, needs ops, transient). Everything else lives here: connecting and
//! reconnecting with backoff, declaring the topology, consuming with per-consumer prefetch,
//! the inbox that makes redeliveries harmless, publishing with confirms, settling each delivery
//! in exactly one place (ack, retry through TTL queues, or dead-letter with reason headers),
//! Prometheus metrics and `/healthz`, and graceful shutdown.
//!
//! This crate holds no business rules and no business tables: it knows message types only
//! through `simflow-schemas`, and its one table is `runtime.inbox`.

pub mod amqp;
pub mod bench;
pub mod brokers;
pub mod create_once;
pub mod db;
pub mod deadletter;
pub mod fault;
pub mod handler;
pub mod http;
pub mod inbox;
pub mod management;
pub mod metrics;
pub mod multihost;
pub mod outcome;
pub mod outlet;
pub mod outlet_load;
pub mod outlet_tls;
pub mod readiness;
pub mod reasons;
mod retry;
mod session;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
pub mod testing;
pub mod uri;
pub mod worker;

pub use handler::{Handler, JobContext, JobError, Rejection};
pub use outcome::{Outcome, Outgoing};
pub use settings::Settings;
pub use shutdown::Shutdown;
pub use worker::{BatchJob, Verdict, Worker};
