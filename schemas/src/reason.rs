//! Why a job or a card was refused: a stable code and the clerk's text in Chinese and English.
//!
//! One type for every crate. Each crate declares only its own codes, with [`crate::reasons!`], in one
//! module of its own (`reasons.rs`); a code is declared once in the workspace, so it has one
//! Chinese and one English text everywhere (a test in `tests/e2e/architecture.rs` checks it).
//! This module holds no codes itself.

use crate::common::{CardProblem, ClerkMessage};

/// A reason: code, Chinese, English.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reason {
    /// A stable upper-case code, e.g. `CARD_LOCATION_MISMATCH`.
    pub code: &'static str,
    /// The text in Chinese, as the operator's clerks know it.
    pub zh: &'static str,
    /// The same text in English.
    pub en: &'static str,
}

impl Reason {
    /// As a clerk message.
    pub fn message(&self) -> ClerkMessage {
        ClerkMessage::new(self.code, self.zh, self.en)
    }

    /// As a clerk message whose English text carries a detail (counts, names; never a secret).
    pub fn message_with(&self, detail: &str) -> ClerkMessage {
        ClerkMessage::new(self.code, self.zh, &format!("{} ({detail})", self.en))
    }

    /// As the problem of one card.
    pub fn for_card(&self, iccid: &str) -> CardProblem {
        CardProblem {
            iccid: iccid.to_owned(),
            reason: self.message(),
        }
    }

    /// The reason with `code` among `reasons`.
    pub fn find(reasons: &[Reason], code: &str) -> Option<Reason> {
        reasons.iter().copied().find(|reason| reason.code == code)
    }
}

/// Declares reasons as constants named like their codes, and `ALL`, the list of them:
///
/// ```
/// simflow_schemas::reasons! {
///     CARD_UNKNOWN = "卡号不存在", "No such card";
/// }
/// assert_eq!(CARD_UNKNOWN.code, "CARD_UNKNOWN");
/// assert_eq!(ALL.len(), 1);
/// ```
#[macro_export]
macro_rules! reasons {
    ($($name:ident = $zh:literal, $en:literal;)*) => {
        $(
            #[doc = $en]
            pub const $name: $crate::reason::Reason = $crate::reason::Reason {
                code: stringify!($name),
                zh: $zh,
                en: $en,
            };
        )*
        /// Every reason this module declares.
        pub const ALL: &[$crate::reason::Reason] = &[$($name),*];
    };
}
