//! Fault injection for the end-to-end tests, by environment variable, read once.
//!
//! `SIMFLOW_FAULT=abort-after-commit`: the process aborts right after its first batch commits,
//! before anything of that batch is published or acknowledged — the window group commit must
//! survive (the broker redelivers, the inbox answers).
//! `SIMFLOW_FAULT=abort-after-dead-letter`: the process aborts right after its first dead
//! letter is confirmed in the dead-letter queue, before the delivery is acknowledged — the
//! redelivery must not put a second copy there.
//! Unset, as in production, nothing here does anything. No other value is accepted: a typo aborts at start-up rather than silently
//! testing nothing.

use std::sync::LazyLock;

/// The environment variable.
pub const FAULT_VARIABLE: &str = "SIMFLOW_FAULT";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    AbortAfterCommit,
    AbortAfterDeadLetter,
}

static FAULT: LazyLock<Option<Fault>> =
    LazyLock::new(|| match std::env::var(FAULT_VARIABLE).ok().as_deref() {
        None | Some("") => None,
        Some("abort-after-commit") => Some(Fault::AbortAfterCommit),
        Some("abort-after-dead-letter") => Some(Fault::AbortAfterDeadLetter),
        Some(other) => {
            eprintln!("{FAULT_VARIABLE}={other:?} is not a fault this build knows");
            std::process::abort();
        }
    });

/// Reads the variable now (at start-up), so a wrong value stops the process before it works.
pub fn check() {
    LazyLock::force(&FAULT);
}

/// Called after a dead letter's copy is confirmed (and marked), before the ack.
pub(crate) fn after_dead_letter() {
    if *FAULT == Some(Fault::AbortAfterDeadLetter) {
        tracing::error!("fault injected: aborting after a dead letter, before its ack");
        std::process::abort();
    }
}

/// Called after a batch's transaction committed.
pub(crate) fn after_commit(jobs: usize) {
    if *FAULT == Some(Fault::AbortAfterCommit) {
        tracing::error!(
            jobs,
            "fault injected: aborting after a commit, before publishing and acking"
        );
        std::process::abort();
    }
}
