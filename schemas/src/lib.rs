//! The wire contract of simflow.
//!
//! Every message that crosses the broker has one serde type here, one JSON Schema file in
//! `schemas/json/`, at least one example in `schemas/examples/`, and an entry in the AsyncAPI
//! document `schemas/asyncapi.json`; tests keep the four in step.
//! The broker topology (exchanges, queues, routing keys, queue arguments) is described here too,
//! as plain data, because where a message goes is part of the contract.
//!
//! This crate does no I/O: it never opens a socket, a file or a database.
//! Workers turn these wire types into their own domain types at the edge and never pass them
//! deeper than their handler.

pub mod asyncapi;
pub mod card;
pub mod cardfile;
pub mod common;
pub mod definitions;
pub mod events;
pub mod issue;
pub mod outlet;
pub mod reason;
pub mod registry;
pub mod returns;
pub mod topology;
pub mod transfer;
pub mod writecard;
pub mod writers;

pub use common::{CardSelection, ClerkMessage, ReturnSelection};
pub use reason::Reason;
pub use registry::{DecodeError, Event, JobSet, Message, MessageInfo, MessageRole};

#[cfg(test)]
mod contract_tests;
