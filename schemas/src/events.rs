//! Outcome events every job kind shares: a rejection (a business answer) and a failure that
//! needs ops (the job went to a dead-letter queue).
//!
//! Kind-specific success events live with their kind (`transfer`, `issue`, …).
//! Both events here are published on the events exchange with the routing key
//! `<kind>.rejected` or `<kind>.failed`, e.g. `return.rejected`, `writecard.failed`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{CardProblem, ClerkMessage};

/// `job.rejected.v1` (routing key `<kind>.rejected`): the job was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRejected {
    /// The `message_id` of the job this answers (also its `correlation_id`).
    pub job_message_id: String,
    /// The job's `type`, e.g. `transfer.approve_in.v1`.
    pub job_type: String,
    /// The business id the job named (a transfer, batch, return, order id), when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_id: Option<String>,
    /// Why, in the clerk's words.
    pub reason: ClerkMessage,
    /// The cards that failed and why (at most a bounded number listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<CardProblem>,
    /// How many cards failed in all (may exceed `problems.len()`).
    #[serde(default)]
    pub problem_count: u64,
}

/// `job.failed.v1` (routing key `<kind>.failed`): the job could not be done and waits for ops
/// in the dead-letter queue named here; the clerk sees this at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobFailed {
    /// The `message_id` of the job.
    pub job_message_id: String,
    /// The job's `type` as received (it may be unknown).
    pub job_type: String,
    /// The business id the job named, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_id: Option<String>,
    /// Why, in the clerk's words.
    pub reason: ClerkMessage,
    /// How many times the job was tried.
    pub attempts: u32,
    /// The worker that gave up.
    pub worker: String,
    /// The dead-letter queue that now holds the job.
    pub dead_letter_queue: String,
}
