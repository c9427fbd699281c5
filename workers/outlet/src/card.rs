//! The blocking card work of a node: wait for a card, read it, write a script with recovery
//! after a pull, and classify a card after a crash. Runs on `spawn_blocking` threads only.
//!
//! A write never leaves the card in a state nobody knows: every failure says whether the card
//! may still be used (`Untouched`: no APDU that changes the card was sent) or must be withdrawn
//! (`Damaged`). A card pulled mid-write is waited for; when the same card comes back its files
//! decide: nothing or only this script's data on it → the script runs again from the start
//! (every step is idempotent and EF.IMSI is written last); other data → damaged.
//! A script runs only on a card of the family it was built for (told by the card's ATR): on a
//! card of another family its files, keys and ADM key reference are elsewhere, and its ADM1 try
//! would be spent on the wrong card. The check comes before anything is sent after
//! identification, so such a card stays untouched.

use std::time::{Duration, Instant};

use simflow_card::apdu::Response;
use simflow_card::profile::{self, Script, StepKind, WrittenState};
use simflow_reader::{Reader, ReaderError};
use simflow_schemas::card::ReaderOutcome;
use simflow_schemas::common::ClerkMessage;
use simflow_schemas::writecard::{CardWriteState, WriteOutcome};

use crate::status::{ClerkState, Status};

/// How many times a write follows a pulled card back into the reader before giving up.
const MAX_INSERTIONS: u32 = 3;

/// How long a card that is present but cannot be connected to yet is retried.
const CONNECT_PATIENCE: Duration = Duration::from_secs(5);

/// Asks blocking card code to stop waiting for a card (never to stop writing one).
pub trait Stop {
    /// True once the node is shutting down.
    fn stop_requested(&self) -> bool;
}

impl Stop for simflow_runtime::shutdown::CancellationToken {
    fn stop_requested(&self) -> bool {
        self.is_cancelled()
    }
}

/// The clerk's message for a reader error.
pub fn clerk_message(error: &ReaderError) -> ClerkMessage {
    let message = error.clerk_message();
    ClerkMessage::new(error.code(), message.zh(), message.en())
}

/// What a node's card work needs to know.
#[derive(Debug, Clone)]
pub struct CardWork {
    /// The PC/SC reader name.
    pub reader: String,
    /// How long to wait for a card to be inserted.
    pub card_wait: Duration,
    /// How long to wait for a pulled card to come back.
    pub reinsert_wait: Duration,
    /// The clerk-facing state.
    pub status: Status,
}

/// Why a card job did not produce an answer.
#[derive(Debug)]
pub enum Interrupted {
    /// The node is shutting down and nothing was written: the work goes back to the queue.
    Shutdown,
    /// The journal could not record that writing starts; nothing was written.
    Journal(String),
}

/// Opens the reader and waits for a card, in slices so a shutdown is noticed.
fn wait_and_connect(
    work: &CardWork,
    reader: Option<Reader>,
    timeout: Duration,
    stop: &dyn Stop,
) -> Result<Option<Reader>, ReaderError> {
    let mut reader = match reader {
        Some(reader) => reader,
        None => Reader::open(&work.reader)?,
    };
    let deadline = Instant::now() + timeout;
    loop {
        if stop.stop_requested() {
            return Ok(None);
        }
        let slice = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(500));
        match reader.wait_for_card(slice) {
            Ok(_) => break,
            Err(ReaderError::NoCard { .. }) if Instant::now() < deadline => {}
            Err(error) => return Err(error),
        }
    }
    // Another client may still hold the card (a node that was killed: pcscd frees its card when
    // it notices), or pcscd is still settling after a swap: retry the connection for a while.
    let connect_deadline = Instant::now() + CONNECT_PATIENCE;
    loop {
        match reader.connect() {
            Ok(()) => return Ok(Some(reader)),
            Err(error) if Instant::now() < connect_deadline && !stop.stop_requested() => {
                tracing::debug!(%error, "cannot connect to the card yet");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(error) => return Err(error),
        }
    }
}

/// Whether an error means contact with the card was lost (rather than the card answering).
fn lost_contact(error: &ReaderError) -> bool {
    matches!(
        error,
        ReaderError::CardRemoved { .. }
            | ReaderError::NoCard { .. }
            | ReaderError::CardUnusable { .. }
            | ReaderError::ReaderNotConnected { .. }
    )
}

/// Identifies the card, following it once if contact is lost on the way (the clerk pushed it
/// back in, or pcscd reset it after a swap).
fn identify(
    work: &CardWork,
    reader: Reader,
    stop: &dyn Stop,
) -> (
    Option<Reader>,
    Result<simflow_card::profile::Identity, ReaderError>,
) {
    let mut reader = reader;
    match reader.identify() {
        Err(error) if lost_contact(&error) => {
            tracing::warn!(code = error.code(), %error, "lost the card while identifying it; trying once more");
            reader.disconnect();
            match wait_and_connect(work, Some(reader), work.reinsert_wait, stop) {
                Ok(Some(mut reader)) => {
                    let identity = reader.identify();
                    (Some(reader), identity)
                }
                Ok(None) => (None, Err(error)),
                Err(again) => (None, Err(again)),
            }
        }
        other => (Some(reader), other),
    }
}

/// Reads the inserted card: ICCID, blank or not, family.
pub fn read_card(work: &CardWork, stop: &dyn Stop) -> Result<ReaderOutcome, Interrupted> {
    work.status.set(ClerkState::WaitingForCard { iccid: None });
    let error = |error: ReaderError| {
        tracing::warn!(code = error.code(), %error, "card read failed");
        ReaderOutcome::Error {
            error: clerk_message(&error),
        }
    };
    let mut reader = match wait_and_connect(work, None, work.card_wait, stop) {
        Ok(Some(reader)) => reader,
        Ok(None) => return Err(Interrupted::Shutdown),
        Err(failure) => return Ok(error(failure)),
    };
    work.status.set(ClerkState::Reading);
    let identity = match reader.identify() {
        Ok(identity) => identity,
        Err(failure) => return Ok(error(failure)),
    };
    let Some(family) = profile::detect_family(reader.atr()) else {
        return Ok(ReaderOutcome::Error {
            error: ClerkMessage::new(
                "CARD_UNSUPPORTED",
                "请更换白卡！",
                "Please use another blank card (this card type cannot be written here).",
            ),
        });
    };
    Ok(ReaderOutcome::Read {
        iccid: identity.iccid,
        blank: identity.blank,
        family: family.name().to_owned(),
    })
}

/// What the clerk sees after a read.
pub fn read_state(outcome: &ReaderOutcome) -> ClerkState {
    match outcome {
        ReaderOutcome::Read { iccid, blank, .. } => ClerkState::Done {
            summary_zh: format!(
                "读卡 {iccid}{}",
                if *blank {
                    "（白卡）"
                } else {
                    "（非白卡）"
                }
            ),
            summary_en: format!(
                "read {iccid}{}",
                if *blank { " (blank)" } else { " (not blank)" }
            ),
        },
        ReaderOutcome::Error { error } => ClerkState::error(error),
    }
}

fn failed(card_state: CardWriteState, reason: ClerkMessage) -> WriteOutcome {
    WriteOutcome::Failed { card_state, reason }
}

/// Where a script run stopped.
struct RunFailure {
    error: ReaderError,
    /// An APDU that changes the card was sent (maybe not answered).
    touched: bool,
}

/// Runs the whole script; on success returns the answer to the challenge.
fn run_script(reader: &mut Reader, script: &Script) -> Result<Vec<u8>, RunFailure> {
    let mut passed = 0usize;
    let mut answer: Option<Response> = None;
    let auth_index = script.authenticate_step().map(|step| step.index);
    let result = reader.run_steps(&script.steps, |index, response| {
        passed += 1;
        if Some(index) == auth_index {
            answer = Some(response.clone());
        }
    });
    match result {
        Ok(()) => answer.map(|response| response.data).ok_or(RunFailure {
            error: ReaderError::CardUnusable {
                cause: "the script has no authentication step".into(),
            },
            touched: true,
        }),
        Err(error) => {
            let last = passed.min(script.steps.len().saturating_sub(1));
            let touched = script.steps[..=last]
                .iter()
                .any(|step| step.kind == StepKind::Update);
            Err(RunFailure { error, touched })
        }
    }
}

/// Whether running the script again from the start finishes the card: it holds nothing, or
/// only this script's data.
fn resumable(state: &WrittenState) -> bool {
    matches!(
        state,
        WrittenState::Untouched
            | WrittenState::WrittenByThisScript
            | WrittenState::PartlyWritten {
                matches_script: true,
                ..
            }
    )
}

/// What the card says about an interrupted script.
fn classify(reader: &mut Reader, script: &Script) -> Result<WrittenState, ReaderError> {
    let probe = profile::probe_script(script);
    let mut responses = Vec::with_capacity(probe.len());
    reader.run_steps(&probe, |_, response| responses.push(response.clone()))?;
    profile::classify_written_state(script, &responses).map_err(|error| match error {
        profile::ProfileError::WrongCard { expected, found } => {
            ReaderError::WrongCard { expected, found }
        }
        other => ReaderError::CardUnusable {
            cause: format!("classifying the card: {other}"),
        },
    })
}

/// A failed outcome with `card_state` when the card in the reader is not of the family
/// `script` was built for; `None` when it is.
fn refuse_other_family(
    reader: &Reader,
    script: &Script,
    card_state: CardWriteState,
) -> Option<WriteOutcome> {
    let found = profile::detect_family(reader.atr()).map(|family| family.name());
    if found == Some(script.family.as_str()) {
        return None;
    }
    tracing::error!(iccid = %script.iccid, script_family = %script.family, card_family = ?found, "the card is not of the script's family");
    Some(failed(
        card_state,
        ClerkMessage::new(
            "CARD_FAMILY_MISMATCH",
            "请更换白卡！",
            "Please use another blank card (the write script is for another card type).",
        ),
    ))
}

fn damaged_reason() -> ClerkMessage {
    ClerkMessage::new(
        "CARD_DAMAGED",
        "请更换白卡！",
        "Please use another blank card (this one was partly written and is withdrawn).",
    )
}

/// Writes `script` onto the card in the reader. `recovering`: an earlier run of this script may
/// have written the card (the journal says writing started), so the card is read before
/// anything is written and never counts as untouched. `mark_writing` is called (and must
/// succeed) before the first APDU that changes the card.
pub fn write_card(
    work: &CardWork,
    script: &Script,
    recovering: bool,
    stop: &dyn Stop,
    mark_writing: &mut dyn FnMut() -> Result<(), String>,
) -> Result<WriteOutcome, Interrupted> {
    let iccid = script.iccid.clone();
    work.status.set(ClerkState::WaitingForCard {
        iccid: Some(iccid.clone()),
    });
    let mut touched = recovering;
    let state_if_failed = |touched: bool| {
        if touched {
            CardWriteState::Damaged
        } else {
            CardWriteState::Untouched
        }
    };
    let mut reader = match wait_and_connect(work, None, work.card_wait, stop) {
        Ok(Some(reader)) => reader,
        Ok(None) => return Err(Interrupted::Shutdown),
        Err(error) => {
            tracing::warn!(code = error.code(), %error, "no card to write");
            return Ok(failed(state_if_failed(touched), clerk_message(&error)));
        }
    };
    if recovering {
        work.status.set(ClerkState::Reading);
        if let Some(refused) = refuse_other_family(&reader, script, CardWriteState::Damaged) {
            return Ok(refused);
        }
        match classify(&mut reader, script) {
            Ok(state) if resumable(&state) => {}
            Ok(state) => {
                tracing::error!(%iccid, ?state, "the card holds data of another write");
                return Ok(failed(CardWriteState::Damaged, damaged_reason()));
            }
            Err(error) => {
                tracing::error!(%iccid, code = error.code(), %error, "cannot read back an interrupted card");
                return Ok(failed(CardWriteState::Damaged, clerk_message(&error)));
            }
        }
    } else {
        work.status.set(ClerkState::Reading);
        let (found, identity) = identify(work, reader, stop);
        let Some(found) = found else {
            let error = identity.err().unwrap_or(ReaderError::NoCard {
                cause: "the card went away".into(),
            });
            tracing::warn!(code = error.code(), %error, "cannot identify the card");
            return Ok(failed(CardWriteState::Untouched, clerk_message(&error)));
        };
        reader = found;
        match identity {
            Ok(identity) if identity.iccid != iccid => {
                let error = ReaderError::WrongCard {
                    expected: iccid.clone(),
                    found: identity.iccid,
                };
                tracing::warn!(%error, "wrong card in the reader");
                return Ok(failed(CardWriteState::Untouched, clerk_message(&error)));
            }
            Ok(identity) if !identity.blank => {
                let error = ReaderError::CardNotBlank {
                    iccid: identity.iccid,
                };
                tracing::warn!(%error, "the card is not blank");
                return Ok(failed(CardWriteState::Untouched, clerk_message(&error)));
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(code = error.code(), %error, "cannot identify the card");
                return Ok(failed(CardWriteState::Untouched, clerk_message(&error)));
            }
        }
        if let Some(refused) = refuse_other_family(&reader, script, CardWriteState::Untouched) {
            return Ok(refused);
        }
        mark_writing().map_err(Interrupted::Journal)?;
    }

    let mut insertions = 1;
    loop {
        work.status.set(ClerkState::Writing {
            iccid: iccid.clone(),
        });
        let failure = match run_script(&mut reader, script) {
            Ok(answer) => {
                return Ok(WriteOutcome::Written {
                    auth_answer: hex::encode(answer),
                    apdu_count: u32::try_from(reader.apdu_count()).unwrap_or(u32::MAX),
                });
            }
            Err(failure) => failure,
        };
        touched |= failure.touched;
        let error = failure.error;
        // Lost contact with the card (pulled, or pcscd reset it): follow it back. A status word
        // or read-back the script did not expect is the card's own answer: no second try.
        let pulled = lost_contact(&error);
        if !pulled || insertions >= MAX_INSERTIONS {
            tracing::error!(%iccid, code = error.code(), %error, touched, "write failed");
            let reason = if touched && !pulled {
                damaged_reason()
            } else {
                clerk_message(&error)
            };
            return Ok(failed(state_if_failed(touched), reason));
        }
        // The card was pulled: wait for it to come back and read what it holds.
        tracing::warn!(%iccid, touched, "card pulled during the write; waiting for it to come back");
        work.status.set(ClerkState::ReinsertSameCard {
            iccid: iccid.clone(),
        });
        reader.disconnect();
        insertions += 1;
        let never = NeverStop;
        reader = match wait_and_connect(work, Some(reader), work.reinsert_wait, &never) {
            Ok(Some(reader)) => reader,
            Ok(None) | Err(_) => {
                tracing::error!(%iccid, touched, "the pulled card did not come back");
                return Ok(failed(state_if_failed(touched), clerk_message(&error)));
            }
        };
        work.status.set(ClerkState::Reading);
        if let Some(refused) = refuse_other_family(&reader, script, state_if_failed(touched)) {
            return Ok(refused);
        }
        match classify(&mut reader, script) {
            Ok(state) if resumable(&state) => {}
            Ok(state) => {
                tracing::error!(%iccid, ?state, "the card that came back holds other data");
                return Ok(failed(CardWriteState::Damaged, damaged_reason()));
            }
            Err(error @ ReaderError::WrongCard { .. }) if !touched => {
                return Ok(failed(CardWriteState::Untouched, clerk_message(&error)));
            }
            Err(error) => {
                tracing::error!(%iccid, code = error.code(), %error, "cannot read back the card that came back");
                return Ok(failed(state_if_failed(touched), clerk_message(&error)));
            }
        }
    }
}

/// A write in progress is finished even during shutdown.
struct NeverStop;

impl Stop for NeverStop {
    fn stop_requested(&self) -> bool {
        false
    }
}
