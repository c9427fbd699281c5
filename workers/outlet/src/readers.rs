//! The readers the node sees, followed all the time (not only during a job): which readers
//! pcscd has, whether a card is in each, and whether pcscd is there at all.
//!
//! It feeds the counter page's reader list and puts the deck's reader errors into the clerk
//! state while no job is running: pcscd gone → 写卡器驱动未安装。 (`READER_DRIVER_MISSING`),
//! the configured reader gone → 连接写卡器失败，请尝试重新插入白卡！ (`READER_NOT_CONNECTED`);
//! when the reader is back, the state it set goes back to idle.
//! While a job runs the job reports reader trouble itself (its outcome carries the message), so
//! the watcher never overwrites a busy state.
//! It only watches through `simflow_reader::ReaderWatch` (SCardGetStatusChange); it never
//! connects to a card.

use std::time::Duration;

use simflow_reader::{ReaderError, ReaderPresence, ReaderWatch};
use simflow_runtime::shutdown::CancellationToken;
use tokio::sync::watch;

use crate::card::clerk_message;
use crate::status::{ClerkState, DRIVER_MISSING, Status};

/// The code of a configured reader that pcscd does not have.
pub const READER_MISSING: &str = "READER_NOT_CONNECTED";

/// How long one wait for a reader change lasts before the watcher looks at `shutdown` again.
const WAIT_SLICE: Duration = Duration::from_millis(500);

/// How long the watcher waits before trying pcscd again after it failed.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// What the node knows about its readers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readers {
    /// Not looked yet.
    Unknown,
    /// pcscd answers; these are its readers.
    Seen(Vec<ReaderPresence>),
    /// pcscd cannot be used (not running, no reader driver, …): the clerk's message.
    Unavailable(simflow_schemas::common::ClerkMessage),
}

/// Starts the watcher on a blocking thread; it stops with `shutdown`.
pub fn watch_readers(
    configured: String,
    status: Status,
    shutdown: CancellationToken,
) -> (watch::Receiver<Readers>, tokio::task::JoinHandle<()>) {
    let (sender, receiver) = watch::channel(Readers::Unknown);
    let task = tokio::task::spawn_blocking(move || {
        let mut pcsc = ReaderWatch::new();
        while !shutdown.is_cancelled() {
            match pcsc.next(WAIT_SLICE) {
                Ok(readers) => {
                    follow_readers(&configured, &readers, &status);
                    sender.send_if_modified(|known| {
                        let seen = Readers::Seen(readers);
                        if *known == seen {
                            return false;
                        }
                        *known = seen;
                        true
                    });
                }
                Err(error) => {
                    let message = clerk_message(&error);
                    follow_failure(&error, &status);
                    sender.send_if_modified(|known| {
                        let unavailable = Readers::Unavailable(message);
                        if *known == unavailable {
                            return false;
                        }
                        tracing::warn!(code = error.code(), %error, "the card readers cannot be used");
                        *known = unavailable;
                        true
                    });
                    std::thread::sleep(RETRY_AFTER);
                }
            }
        }
    });
    (receiver, task)
}

/// Whether the watcher itself put this state (so it may take it back).
fn set_by_watcher(state: &ClerkState) -> bool {
    matches!(state.code(), Some(DRIVER_MISSING | READER_MISSING))
}

fn follow_readers(configured: &str, readers: &[ReaderPresence], status: &Status) {
    if readers.iter().any(|reader| reader.name == configured) {
        status.set_if(set_by_watcher, ClerkState::Idle);
    } else {
        let error = ReaderError::ReaderNotConnected {
            cause: format!("pcscd has no reader named {configured:?}"),
        };
        let state = ClerkState::error(&clerk_message(&error));
        let unchanged = state.clone();
        status.set_if(|current| !current.is_busy() && *current != unchanged, state);
    }
}

fn follow_failure(error: &ReaderError, status: &Status) {
    let state = ClerkState::error(&clerk_message(error));
    let unchanged = state.clone();
    status.set_if(|current| !current.is_busy() && *current != unchanged, state);
}
