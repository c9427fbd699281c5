//! What the clerk sees: the node's state on its console and on `/healthz` (component `reader`).
//!
//! The states follow the counter: waiting for work, waiting for a card, writing (do not remove
//! the card), done, or an error in the deck's words. Blocking reader code updates it directly.

use std::sync::{Arc, Mutex};

use simflow_runtime::metrics::Health;

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
        /// What was done, for the console.
        summary: String,
    },
    /// The last job failed with this clerk message.
    Error {
        /// 中文.
        message_zh: String,
        /// English.
        message_en: String,
    },
}

impl ClerkState {
    /// One line for the console and `/healthz`, Chinese first.
    pub fn line(&self) -> String {
        match self {
            ClerkState::Idle => "空闲，等待业务 / idle, waiting for work".to_owned(),
            ClerkState::WaitingForCard { iccid: None } => {
                "请插入白卡 / waiting for a card".to_owned()
            }
            ClerkState::WaitingForCard { iccid: Some(iccid) } => {
                format!("请插入白卡 {iccid} / insert blank card {iccid}")
            }
            ClerkState::Reading => "正在读卡 / reading the card".to_owned(),
            ClerkState::Writing { iccid } => {
                format!("正在写卡，请勿拔卡 / writing {iccid}, do not remove the card")
            }
            ClerkState::ReinsertSameCard { iccid } => format!(
                "写卡中断，请重新插入同一张卡 {iccid} / write interrupted: re-insert the same card {iccid}"
            ),
            ClerkState::Done { summary } => format!("完成 / done: {summary}"),
            ClerkState::Error {
                message_zh,
                message_en,
            } => format!("{message_zh} / {message_en}"),
        }
    }
}

/// The node's state, shared by the handler, the blocking reader code and `/healthz`.
#[derive(Debug, Clone)]
pub struct Status {
    state: Arc<Mutex<ClerkState>>,
    health: Health,
    console: bool,
}

/// The `/healthz` component that carries the clerk state.
pub const READER_COMPONENT: &str = "reader";

impl Status {
    /// A status reported to `health`, and printed on stdout when `console` is set.
    pub fn new(health: Health, console: bool) -> Status {
        let status = Status {
            state: Arc::new(Mutex::new(ClerkState::Idle)),
            health,
            console,
        };
        status.set(ClerkState::Idle);
        status
    }

    /// Changes the state.
    pub fn set(&self, state: ClerkState) {
        let line = state.line();
        // The reader is healthy unless it cannot be used at all (driver or reader missing).
        let healthy =
            !matches!(&state, ClerkState::Error { message_zh, .. } if message_zh.contains("驱动"));
        self.health.set(READER_COMPONENT, healthy, &line);
        if self.console {
            println!("[{}] {line}", chrono::Local::now().format("%H:%M:%S"));
        }
        *self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = state;
    }

    /// The state now.
    pub fn get(&self) -> ClerkState {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}
