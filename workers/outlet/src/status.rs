//! What the clerk sees: the node's state on its console, on `/healthz` (component `reader`)
//! and on the counter page ([`crate::counter`]), which follows every change through
//! [`Status::subscribe`].
//!
//! The states follow the counter: waiting for work, waiting for a card, writing (do not remove
//! the card), done, or an error in the deck's words. Blocking reader code updates it directly.
//! The texts live here and in `simflow-reader`'s clerk messages only: the page shows what the
//! server sends and has no texts of its own.

use simflow_runtime::metrics::Health;
use simflow_schemas::common::ClerkMessage;
use tokio::sync::{broadcast, watch};

/// The clerk-facing state of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClerkState {
    /// Nothing to do.
    Idle,
    /// A read or write waits for a card in the reader.
    WaitingForCard {
        /// The card the script is for (writes only).
        iccid: Option<String>,
    },
    /// Reading the card.
    Reading,
    /// Writing: the card must stay in the reader.
    Writing {
        /// The card being written.
        iccid: String,
    },
    /// The card was pulled mid-write; the same card must come back.
    ReinsertSameCard {
        /// The card that was being written.
        iccid: String,
    },
    /// The last job finished.
    Done {
        /// What was done, in Chinese.
        summary_zh: String,
        /// What was done, in English.
        summary_en: String,
    },
    /// The last job failed, or the writer cannot be used, with this clerk message.
    Error {
        /// A stable code (`READER_DRIVER_MISSING`, `CARD_REMOVED`, …).
        code: String,
        /// 中文.
        message_zh: String,
        /// English.
        message_en: String,
    },
}

impl ClerkState {
    /// The error state of a clerk message.
    pub fn error(message: &ClerkMessage) -> ClerkState {
        ClerkState::Error {
            code: message.code.clone(),
            message_zh: message.message_zh.clone(),
            message_en: message.message_en.clone(),
        }
    }

    /// A stable name of the state (also the `state` label of `simflow_outlet_reader_state`).
    pub fn kind(&self) -> &'static str {
        match self {
            ClerkState::Idle => "idle",
            ClerkState::WaitingForCard { .. } => "waiting_for_card",
            ClerkState::Reading => "reading",
            ClerkState::Writing { .. } => "writing",
            ClerkState::ReinsertSameCard { .. } => "reinsert_same_card",
            ClerkState::Done { .. } => "done",
            ClerkState::Error { .. } => "error",
        }
    }

    /// The card the state is about, if any.
    pub fn iccid(&self) -> Option<&str> {
        match self {
            ClerkState::WaitingForCard { iccid } => iccid.as_deref(),
            ClerkState::Writing { iccid } | ClerkState::ReinsertSameCard { iccid } => Some(iccid),
            _ => None,
        }
    }

    /// The error code, for an error.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClerkState::Error { code, .. } => Some(code),
            _ => None,
        }
    }

    /// What the clerk reads, in Chinese.
    pub fn zh(&self) -> String {
        match self {
            ClerkState::Idle => "空闲，等待业务".to_owned(),
            ClerkState::WaitingForCard { iccid: None } => "请插入白卡".to_owned(),
            ClerkState::WaitingForCard { iccid: Some(iccid) } => format!("请插入白卡 {iccid}"),
            ClerkState::Reading => "正在读卡".to_owned(),
            ClerkState::Writing { iccid } => format!("正在写卡 {iccid}，请勿拔卡"),
            ClerkState::ReinsertSameCard { iccid } => {
                format!("写卡中断，请重新插入同一张卡 {iccid}")
            }
            ClerkState::Done { summary_zh, .. } => format!("完成：{summary_zh}"),
            ClerkState::Error { message_zh, .. } => message_zh.clone(),
        }
    }

    /// What the clerk reads, in English.
    pub fn en(&self) -> String {
        match self {
            ClerkState::Idle => "idle, waiting for work".to_owned(),
            ClerkState::WaitingForCard { iccid: None } => "waiting for a card".to_owned(),
            ClerkState::WaitingForCard { iccid: Some(iccid) } => {
                format!("insert blank card {iccid}")
            }
            ClerkState::Reading => "reading the card".to_owned(),
            ClerkState::Writing { iccid } => {
                format!("writing {iccid}, do not remove the card")
            }
            ClerkState::ReinsertSameCard { iccid } => {
                format!("write interrupted: re-insert the same card {iccid}")
            }
            ClerkState::Done { summary_en, .. } => format!("done: {summary_en}"),
            ClerkState::Error { message_en, .. } => message_en.clone(),
        }
    }

    /// One line for the console and `/healthz`, Chinese first.
    pub fn line(&self) -> String {
        format!("{} / {}", self.zh(), self.en())
    }

    /// Whether a job is using the card (so a reader problem is the job's to report).
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            ClerkState::WaitingForCard { .. }
                | ClerkState::Reading
                | ClerkState::Writing { .. }
                | ClerkState::ReinsertSameCard { .. }
        )
    }
}

/// The node's state, shared by the handler, the blocking reader code, `/healthz` and the
/// counter page.
#[derive(Debug, Clone)]
pub struct Status {
    state: watch::Sender<ClerkState>,
    changes: broadcast::Sender<ClerkState>,
    health: Health,
    console: bool,
}

/// How many state changes a slow live-feed reader may fall behind before it lags.
pub const CHANGES_KEPT: usize = 64;

/// The `/healthz` component that carries the clerk state.
pub const READER_COMPONENT: &str = "reader";

/// The code of the deck's "driver not installed" (the PC/SC service or reader driver missing).
pub const DRIVER_MISSING: &str = "READER_DRIVER_MISSING";

impl Status {
    /// A status reported to `health`, and printed on stdout when `console` is set.
    pub fn new(health: Health, console: bool) -> Status {
        let (state, _) = watch::channel(ClerkState::Idle);
        let (changes, _) = broadcast::channel(CHANGES_KEPT);
        let status = Status {
            state,
            changes,
            health,
            console,
        };
        status.set(ClerkState::Idle);
        status
    }

    /// Changes the state.
    pub fn set(&self, state: ClerkState) {
        self.set_if(|_| true, state);
    }

    /// Changes the state only when `allowed` says so of the current one (checked and changed
    /// at once, so a job's state is never overwritten by a reader watcher that looked earlier).
    /// Returns whether it changed.
    pub fn set_if(&self, allowed: impl FnOnce(&ClerkState) -> bool, state: ClerkState) -> bool {
        let line = state.line();
        // The reader is healthy unless it cannot be used at all (driver or reader missing).
        let healthy = state.code() != Some(DRIVER_MISSING);
        let mut changed = false;
        self.state.send_if_modified(|current| {
            if !allowed(current) {
                return false;
            }
            changed = true;
            self.health.set(READER_COMPONENT, healthy, &line);
            if self.console {
                println!("[{}] {line}", chrono::Local::now().format("%H:%M:%S"));
            }
            // Every change, in order, for the live feed (a watch alone would let a page miss a
            // state that lasted a few milliseconds, such as writing on a fast card).
            let _ = self.changes.send(state.clone());
            *current = state;
            true
        });
        changed
    }

    /// The state now.
    pub fn get(&self) -> ClerkState {
        self.state.borrow().clone()
    }

    /// The latest state, whenever it changes.
    pub fn subscribe(&self) -> watch::Receiver<ClerkState> {
        self.state.subscribe()
    }

    /// Every change from now on, in order (the counter page's live feed); a receiver that
    /// falls more than [`CHANGES_KEPT`] behind is told it lagged.
    pub fn changes(&self) -> broadcast::Receiver<ClerkState> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_driver_error_makes_the_reader_unhealthy_and_subscribers_see_each_change() {
        let health = Health::default();
        let status = Status::new(health.clone(), false);
        let mut feed = status.subscribe();
        status.set(ClerkState::error(&ClerkMessage::new(
            DRIVER_MISSING,
            "写卡器驱动未安装。",
            "Card writer driver not installed.",
        )));
        assert!(feed.has_changed().expect("sender alive"));
        assert_eq!(feed.borrow_and_update().zh(), "写卡器驱动未安装。");
        assert!(!health.snapshot()[READER_COMPONENT].healthy);
        status.set(ClerkState::Idle);
        assert!(health.snapshot()[READER_COMPONENT].healthy);
    }

    #[test]
    fn a_conditional_change_leaves_a_busy_state_alone() {
        let status = Status::new(Health::default(), false);
        status.set(ClerkState::Writing {
            iccid: "8988211000000530082".into(),
        });
        let changed = status.set_if(|current| !current.is_busy(), ClerkState::Idle);
        assert!(!changed);
        assert_eq!(status.get().kind(), "writing");
    }
}
