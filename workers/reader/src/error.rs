//! [`ReaderError`]: everything that can go wrong at the card writer, each with a stable code,
//! the clerk's message (Chinese and English, as the training deck words them) and the technical
//! cause for logs.
//!
//! The PC/SC mapping, decided here once:
//!
//! | PC/SC result (or situation) | variant | clerk message |
//! |---|---|---|
//! | `SCARD_E_NO_SERVICE`, `SCARD_E_SERVICE_STOPPED`, `SCARD_E_NO_READERS_AVAILABLE` | `DriverMissing` | 写卡器驱动未安装。 |
//! | `SCARD_E_UNKNOWN_READER`, `SCARD_E_READER_UNAVAILABLE`, `SCARD_E_READER_UNSUPPORTED`, `SCARD_E_SHARING_VIOLATION`, other service errors | `ReaderNotConnected` | 连接写卡器失败，请尝试重新插入白卡！ |
//! | `SCARD_E_TIMEOUT` / `SCARD_E_NO_SMARTCARD` while waiting or connecting | `NoCard` | 连接写卡器失败，请尝试重新插入白卡！ |
//! | `SCARD_W_REMOVED_CARD`, `SCARD_W_RESET_CARD`, `SCARD_E_NO_SMARTCARD`, or any transmit failure or short answer after which the reader shows no card | `CardRemoved` | 连接写卡器失败，请尝试重新插入白卡！ |
//! | `SCARD_W_UNRESPONSIVE_CARD`, `SCARD_W_UNPOWERED_CARD`, `SCARD_W_UNSUPPORTED_CARD`, `SCARD_E_PROTO_MISMATCH`, `SCARD_E_INVALID_ATR`, `SCARD_E_CARD_UNSUPPORTED`, a mute card, a transmit failure with the card still present, a card that is not a USIM | `CardUnusable` | 请更换白卡！ |
//! | EF.IMSI already written (finished or used card) | `CardNotBlank` | 请更换白卡！ |
//! | VERIFY ADM1 refused (63Cx) / blocked (6983) | `AdmRejected` / `AdmBlocked` | 请更换白卡！ |
//! | a script step answers another status word / other read-back data | `StepFailed` / `ReadBackMismatch` | 请更换白卡！ |
//! | the card's ICCID is not the script's | `WrongCard` | 连接写卡器失败，请尝试重新插入白卡！ |
//!
//! `SCARD_E_NO_READERS_AVAILABLE` is ambiguous: pcscd answers it both when no reader driver is
//! installed and when the USB writer is unplugged. We follow the brief and say "driver not
//! installed"; the technical cause keeps the PC/SC name so ops can tell.

use serde::Serialize;

/// What the clerk is told. The texts are fixed by the operator's deck.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClerkMessage {
    /// 连接写卡器失败，请尝试重新插入白卡！
    ReinsertCard,
    /// 写卡器驱动未安装。
    DriverNotInstalled,
    /// 请更换白卡！
    UseAnotherCard,
}

impl ClerkMessage {
    /// The deck's Chinese text.
    pub fn zh(self) -> &'static str {
        match self {
            ClerkMessage::ReinsertCard => "连接写卡器失败，请尝试重新插入白卡！",
            ClerkMessage::DriverNotInstalled => "写卡器驱动未安装。",
            ClerkMessage::UseAnotherCard => "请更换白卡！",
        }
    }

    /// The English text.
    pub fn en(self) -> &'static str {
        match self {
            ClerkMessage::ReinsertCard => {
                "Cannot connect to the card writer; re-insert the blank card."
            }
            ClerkMessage::DriverNotInstalled => "Card writer driver not installed.",
            ClerkMessage::UseAnotherCard => "Please use another blank card.",
        }
    }
}

/// A failure at the card writer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReaderError {
    /// The named reader does not exist or cannot be used right now.
    #[error("card writer not connected: {cause}")]
    ReaderNotConnected { cause: String },
    /// No card arrived in the reader in time.
    #[error("no card in the writer: {cause}")]
    NoCard { cause: String },
    /// The card went away in the middle of an operation.
    #[error("card removed during the operation: {cause}")]
    CardRemoved { cause: String },
    /// The PC/SC service is not running or has no reader driver.
    #[error("PC/SC service or reader driver missing: {cause}")]
    DriverMissing { cause: String },
    /// The card is in the reader but cannot be used (mute, badly inserted, not a USIM...).
    #[error("card unusable: {cause}")]
    CardUnusable { cause: String },
    /// The card already carries an IMSI: a finished card or an already written blank card.
    #[error("card {iccid} is not blank")]
    CardNotBlank { iccid: String },
    /// The inserted card is not the card the script was built for.
    #[error("inserted card {found} is not the script's card {expected}")]
    WrongCard { expected: String, found: String },
    /// VERIFY ADM1 was refused: the card data file's ADM1 is not this card's.
    #[error("ADM1 refused, {tries_left} tries left")]
    AdmRejected { tries_left: u8 },
    /// ADM1 is blocked for good.
    #[error("ADM1 blocked")]
    AdmBlocked,
    /// A script step answered another status word than expected.
    #[error("step {index} ({kind} {target}) answered SW {got_sw:04X}, expected {expected_sw:04X}")]
    StepFailed {
        index: u16,
        kind: String,
        target: String,
        expected_sw: u16,
        got_sw: u16,
    },
    /// A read-back step returned other data than was written.
    #[error("step {index} read back other data from {target}")]
    ReadBackMismatch { index: u16, target: String },
}

/// The serialisable form of an error: what a worker puts in an event or prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorReport {
    pub code: &'static str,
    pub message: ClerkMessage,
    pub message_zh: &'static str,
    pub message_en: &'static str,
    pub cause: String,
}

impl ReaderError {
    /// A stable code for events, metrics and tests.
    pub fn code(&self) -> &'static str {
        match self {
            ReaderError::ReaderNotConnected { .. } => "READER_NOT_CONNECTED",
            ReaderError::NoCard { .. } => "NO_CARD",
            ReaderError::CardRemoved { .. } => "CARD_REMOVED",
            ReaderError::DriverMissing { .. } => "READER_DRIVER_MISSING",
            ReaderError::CardUnusable { .. } => "CARD_UNUSABLE",
            ReaderError::CardNotBlank { .. } => "CARD_NOT_BLANK",
            ReaderError::WrongCard { .. } => "WRONG_CARD",
            ReaderError::AdmRejected { .. } => "ADM_REJECTED",
            ReaderError::AdmBlocked => "ADM_BLOCKED",
            ReaderError::StepFailed { .. } => "SCRIPT_STEP_FAILED",
            ReaderError::ReadBackMismatch { .. } => "READBACK_MISMATCH",
        }
    }

    /// What the clerk sees.
    pub fn clerk_message(&self) -> ClerkMessage {
        match self {
            ReaderError::ReaderNotConnected { .. }
            | ReaderError::NoCard { .. }
            | ReaderError::CardRemoved { .. }
            | ReaderError::WrongCard { .. } => ClerkMessage::ReinsertCard,
            ReaderError::DriverMissing { .. } => ClerkMessage::DriverNotInstalled,
            ReaderError::CardUnusable { .. }
            | ReaderError::CardNotBlank { .. }
            | ReaderError::AdmRejected { .. }
            | ReaderError::AdmBlocked
            | ReaderError::StepFailed { .. }
            | ReaderError::ReadBackMismatch { .. } => ClerkMessage::UseAnotherCard,
        }
    }

    /// Code, clerk message and technical cause together.
    pub fn report(&self) -> ErrorReport {
        let message = self.clerk_message();
        ErrorReport {
            code: self.code(),
            message,
            message_zh: message.zh(),
            message_en: message.en(),
            cause: self.to_string(),
        }
    }

    /// Map a PC/SC error. `card_expected` says whether the operation had a card connected
    /// (so "no smart card" means it was removed, rather than never inserted).
    pub fn from_pcsc(error: pcsc::Error, operation: &str, card_expected: bool) -> Self {
        use pcsc::Error as E;
        let cause = format!("{operation}: {error} ({})", pcsc_name(error));
        match error {
            E::NoService | E::ServiceStopped | E::NoReadersAvailable => {
                ReaderError::DriverMissing { cause }
            }
            E::Timeout => ReaderError::NoCard { cause },
            E::NoSmartcard if card_expected => ReaderError::CardRemoved { cause },
            E::NoSmartcard => ReaderError::NoCard { cause },
            E::RemovedCard | E::ResetCard => ReaderError::CardRemoved { cause },
            E::UnresponsiveCard
            | E::UnpoweredCard
            | E::UnsupportedCard
            | E::ProtoMismatch
            | E::InvalidAtr
            | E::CardUnsupported => ReaderError::CardUnusable { cause },
            _ => ReaderError::ReaderNotConnected { cause },
        }
    }
}

/// The PC/SC constant name of an error, for logs.
pub fn pcsc_name(error: pcsc::Error) -> &'static str {
    use pcsc::Error as E;
    match error {
        E::NoService => "SCARD_E_NO_SERVICE",
        E::ServiceStopped => "SCARD_E_SERVICE_STOPPED",
        E::NoReadersAvailable => "SCARD_E_NO_READERS_AVAILABLE",
        E::UnknownReader => "SCARD_E_UNKNOWN_READER",
        E::ReaderUnavailable => "SCARD_E_READER_UNAVAILABLE",
        E::Timeout => "SCARD_E_TIMEOUT",
        E::NoSmartcard => "SCARD_E_NO_SMARTCARD",
        E::RemovedCard => "SCARD_W_REMOVED_CARD",
        E::ResetCard => "SCARD_W_RESET_CARD",
        E::UnresponsiveCard => "SCARD_W_UNRESPONSIVE_CARD",
        E::UnpoweredCard => "SCARD_W_UNPOWERED_CARD",
        E::UnsupportedCard => "SCARD_W_UNSUPPORTED_CARD",
        E::ProtoMismatch => "SCARD_E_PROTO_MISMATCH",
        E::InvalidAtr => "SCARD_E_INVALID_ATR",
        E::SharingViolation => "SCARD_E_SHARING_VIOLATION",
        E::CommError => "SCARD_F_COMM_ERROR",
        E::NotTransacted => "SCARD_E_NOT_TRANSACTED",
        E::Cancelled => "SCARD_E_CANCELLED",
        E::InternalError => "SCARD_F_INTERNAL_ERROR",
        E::UnknownError => "SCARD_F_UNKNOWN_ERROR",
        _ => "SCARD_other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_one_of_the_three_deck_messages() {
        let cases = [
            (
                ReaderError::from_pcsc(pcsc::Error::NoService, "establish", false),
                "READER_DRIVER_MISSING",
                "写卡器驱动未安装。",
            ),
            (
                ReaderError::from_pcsc(pcsc::Error::NoReadersAvailable, "list", false),
                "READER_DRIVER_MISSING",
                "写卡器驱动未安装。",
            ),
            (
                ReaderError::from_pcsc(pcsc::Error::UnknownReader, "wait", false),
                "READER_NOT_CONNECTED",
                "连接写卡器失败，请尝试重新插入白卡！",
            ),
            (
                ReaderError::from_pcsc(pcsc::Error::Timeout, "wait", false),
                "NO_CARD",
                "连接写卡器失败，请尝试重新插入白卡！",
            ),
            (
                ReaderError::from_pcsc(pcsc::Error::NoSmartcard, "transmit", true),
                "CARD_REMOVED",
                "连接写卡器失败，请尝试重新插入白卡！",
            ),
            (
                ReaderError::from_pcsc(pcsc::Error::RemovedCard, "transmit", true),
                "CARD_REMOVED",
                "连接写卡器失败，请尝试重新插入白卡！",
            ),
            (
                ReaderError::from_pcsc(pcsc::Error::UnresponsiveCard, "connect", false),
                "CARD_UNUSABLE",
                "请更换白卡！",
            ),
            (
                ReaderError::CardNotBlank { iccid: "1".into() },
                "CARD_NOT_BLANK",
                "请更换白卡！",
            ),
            (ReaderError::AdmBlocked, "ADM_BLOCKED", "请更换白卡！"),
        ];
        for (error, code, zh) in cases {
            assert_eq!(error.code(), code, "{error}");
            assert_eq!(error.clerk_message().zh(), zh, "{error}");
            let report = error.report();
            assert_eq!(report.message_zh, zh);
            assert!(!report.message_en.is_empty());
        }
    }
}
