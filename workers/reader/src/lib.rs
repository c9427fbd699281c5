//! The card writer's host side: PC/SC through the `pcsc` crate, behind a small blocking API.
//!
//! [`Reader`] lists readers, waits for a card (polling the reader state with
//! SCardGetStatusChange, never sleeping blindly), connects, transmits with T=0 chaining handled
//! (GET RESPONSE on the command's channel after `61xx`, or in class A0 after a classic SIM's
//! `9Fxx`; repeat with the right Le after `6Cxx`), counts APDUs, and runs a
//! [`simflow_card::profile::Script`]'s steps, stopping at the first status word or read-back
//! that differs. Every failure is a [`ReaderError`] carrying the clerk's message.
//!
//! This is the only crate that depends on `pcsc`. It is blocking and has no async runtime:
//! callers on tokio use `spawn_blocking`. It never logs a secret step's APDU (only its index,
//! kind and target) and never logs response data.

mod error;

pub use error::{ClerkMessage, ErrorReport, ReaderError, pcsc_name};

use pcsc::{Context, Disposition, Protocols, ReaderState, Scope, ShareMode, State};
use simflow_card::apdu::{Command, Response, Status, ins};
use simflow_card::profile::{self, Identity, Step, StepKind};
use std::ffi::CString;
use std::time::{Duration, Instant};

/// GET RESPONSE / Le-correction rounds allowed for one command before we call the card broken.
const MAX_CHAINED_RESPONSES: usize = 16;

/// How long a transmit failure waits for pcscd to notice a removed card (it polls every 0.4 s).
const REMOVAL_SETTLE: Duration = Duration::from_millis(1500);

/// Establish a PC/SC context and list the readers pcscd knows.
pub fn list_readers() -> Result<Vec<String>, ReaderError> {
    let context = establish()?;
    reader_names(&context)
}

fn establish() -> Result<Context, ReaderError> {
    Context::establish(Scope::User)
        .map_err(|error| ReaderError::from_pcsc(error, "SCardEstablishContext", false))
}

fn reader_names(context: &Context) -> Result<Vec<String>, ReaderError> {
    let names = context
        .list_readers_owned()
        .map_err(|error| ReaderError::from_pcsc(error, "SCardListReaders", false))?;
    Ok(names
        .into_iter()
        .map(|name| name.to_string_lossy().into_owned())
        .collect())
}

/// What a reader's driver says about the reader itself (the writer ledger names a writer by its
/// serial). A driver that does not offer an attribute leaves it `None`; so does one that answers
/// with nothing but NULs or spaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReaderAttributes {
    /// `SCARD_ATTR_VENDOR_NAME`.
    pub vendor: Option<String>,
    /// `SCARD_ATTR_VENDOR_IFD_TYPE`.
    pub ifd_type: Option<String>,
    /// `SCARD_ATTR_VENDOR_IFD_SERIAL_NO`.
    pub serial: Option<String>,
}

impl ReaderAttributes {
    fn read(card: &pcsc::Card) -> ReaderAttributes {
        let text = |attribute| {
            let bytes = card.get_attribute_owned(attribute).ok()?;
            let text = String::from_utf8_lossy(&bytes);
            let text = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
            (!text.is_empty()).then(|| text.to_owned())
        };
        ReaderAttributes {
            vendor: text(pcsc::Attribute::VendorName),
            ifd_type: text(pcsc::Attribute::VendorIfdType),
            serial: text(pcsc::Attribute::VendorIfdSerialNo),
        }
    }
}

/// Reads the attributes of the reader called `name` with or without a card in it, through a
/// direct connection (`SCARD_SHARE_DIRECT`: no card is powered or touched). Fails while another
/// process holds the card exclusively; a connected [`Reader`] answers [`Reader::attributes`].
pub fn reader_attributes(name: &str) -> Result<ReaderAttributes, ReaderError> {
    let context = establish()?;
    let name = CString::new(name).map_err(|_| ReaderError::ReaderNotConnected {
        cause: "reader name contains NUL".into(),
    })?;
    let card = context
        .connect(&name, ShareMode::Direct, Protocols::UNDEFINED)
        .map_err(|error| ReaderError::from_pcsc(error, "SCardConnect(direct)", false))?;
    let attributes = ReaderAttributes::read(&card);
    if let Err((_, error)) = card.disconnect(Disposition::LeaveCard) {
        tracing::debug!(error = pcsc_name(error), "direct disconnect failed");
    }
    Ok(attributes)
}

/// One reader as pcscd shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReaderPresence {
    /// The PC/SC reader name.
    pub name: String,
    /// A card is in the reader.
    pub card_present: bool,
    /// The card is in but does not answer (badly inserted, or not a card pcscd can power).
    pub card_mute: bool,
}

/// Follows every reader pcscd knows: cards going in and out, readers coming and going, and
/// pcscd itself going away (the deck's "driver not installed") and coming back.
/// It only watches (SCardGetStatusChange); it never connects to a card, so it does not get in
/// the way of a write.
pub struct ReaderWatch {
    context: Option<Context>,
    states: Vec<ReaderState>,
}

impl std::fmt::Debug for ReaderWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReaderWatch")
            .field("connected", &self.context.is_some())
            .field("readers", &self.states.len())
            .finish()
    }
}

impl Default for ReaderWatch {
    fn default() -> Self {
        ReaderWatch::new()
    }
}

impl ReaderWatch {
    /// A watch that connects to pcscd on its first [`ReaderWatch::next`].
    pub fn new() -> ReaderWatch {
        ReaderWatch {
            context: None,
            states: Vec::new(),
        }
    }

    /// Waits up to `timeout` for a change, then returns every reader's state (the first call
    /// returns at once). An error means pcscd cannot be used now (`DriverMissing` when it is
    /// not running or has no reader); the next call connects again.
    pub fn next(&mut self, timeout: Duration) -> Result<Vec<ReaderPresence>, ReaderError> {
        let had_context = self.context.is_some();
        let mut result = self.wait(timeout);
        if result.is_err() && had_context {
            // A context whose pcscd went away fails with whatever the broken socket gives
            // (SCARD_F_COMM_ERROR); a fresh one says what is wrong now (SCARD_E_NO_SERVICE).
            self.context = None;
            self.states.clear();
            result = self.wait(timeout);
        }
        if result.is_err() {
            self.context = None;
            self.states.clear();
        }
        result
    }

    fn wait(&mut self, timeout: Duration) -> Result<Vec<ReaderPresence>, ReaderError> {
        if self.context.is_none() {
            self.context = Some(establish()?);
        }
        let context = self.context.as_ref().ok_or_else(not_connected)?;
        let names = reader_names(context)?;
        let known: Vec<&str> = self
            .states
            .iter()
            .filter(|state| state.name() != pcsc::PNP_NOTIFICATION())
            .map(|state| state.name().to_str().unwrap_or_default())
            .collect();
        if known != names.iter().map(String::as_str).collect::<Vec<_>>() {
            self.states = names
                .iter()
                .filter_map(|name| CString::new(name.as_str()).ok())
                .map(|name| ReaderState::new(name, State::UNAWARE))
                .collect();
            self.states
                .push(ReaderState::new(pcsc::PNP_NOTIFICATION(), State::UNAWARE));
        }
        match context.get_status_change(timeout, &mut self.states) {
            Ok(()) | Err(pcsc::Error::Timeout) => {}
            Err(error) => {
                return Err(ReaderError::from_pcsc(error, "SCardGetStatusChange", false));
            }
        }
        let mut readers = Vec::with_capacity(names.len());
        for state in &mut self.states {
            state.sync_current_state();
            if state.name() == pcsc::PNP_NOTIFICATION() {
                continue;
            }
            let now = state.current_state();
            readers.push(ReaderPresence {
                name: state.name().to_string_lossy().into_owned(),
                card_present: now.contains(State::PRESENT),
                card_mute: now.contains(State::MUTE),
            });
        }
        Ok(readers)
    }
}

/// One named reader and, once connected, the card in it.
pub struct Reader {
    context: Context,
    name: CString,
    card: Option<pcsc::Card>,
    atr: Vec<u8>,
    apdus: u64,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("name", &self.name)
            .field("connected", &self.card.is_some())
            .field("apdus", &self.apdus)
            .finish()
    }
}

impl Reader {
    /// Open the reader called `name` (as [`list_readers`] spells it).
    pub fn open(name: &str) -> Result<Self, ReaderError> {
        let context = establish()?;
        let names = reader_names(&context)?;
        if !names.iter().any(|known| known == name) {
            return Err(ReaderError::ReaderNotConnected {
                cause: format!("no reader named {name:?} (pcscd has {names:?})"),
            });
        }
        let name = CString::new(name).map_err(|_| ReaderError::ReaderNotConnected {
            cause: "reader name contains NUL".into(),
        })?;
        Ok(Reader {
            context,
            name,
            card: None,
            atr: Vec::new(),
            apdus: 0,
        })
    }

    /// The reader's name.
    pub fn name(&self) -> &str {
        self.name.to_str().unwrap_or("<non-UTF-8 reader name>")
    }

    /// Wait until a usable card is in the reader, up to `timeout`; returns its ATR.
    /// A card pcscd could not power up (mute) is `CardUnusable`; no card in time is `NoCard`.
    pub fn wait_for_card(&self, timeout: Duration) -> Result<Vec<u8>, ReaderError> {
        let deadline = Instant::now() + timeout;
        let mut states = [ReaderState::new(self.name.clone(), State::UNAWARE)];
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.context.get_status_change(remaining, &mut states) {
                Ok(()) => {}
                Err(pcsc::Error::Timeout) => {
                    return Err(ReaderError::NoCard {
                        cause: format!("no card in {:?} within {timeout:?}", self.name),
                    });
                }
                Err(error) => {
                    return Err(ReaderError::from_pcsc(error, "SCardGetStatusChange", false));
                }
            }
            let state = states[0].event_state();
            if state.intersects(State::UNKNOWN | State::UNAVAILABLE) {
                return Err(ReaderError::ReaderNotConnected {
                    cause: format!("reader state {state:?}"),
                });
            }
            if state.contains(State::MUTE) {
                return Err(ReaderError::CardUnusable {
                    cause: format!("card is mute (reader state {state:?})"),
                });
            }
            if state.contains(State::PRESENT) {
                return Ok(states[0].atr().to_vec());
            }
            states[0].sync_current_state();
            if remaining.is_zero() {
                return Err(ReaderError::NoCard {
                    cause: format!("no card in {:?} within {timeout:?}", self.name),
                });
            }
        }
    }

    /// Connect to the card exclusively (T=0 or T=1) and remember its ATR.
    pub fn connect(&mut self) -> Result<(), ReaderError> {
        let card = self
            .context
            .connect(
                &self.name,
                ShareMode::Exclusive,
                Protocols::T0 | Protocols::T1,
            )
            .map_err(|error| ReaderError::from_pcsc(error, "SCardConnect", false))?;
        let status = card
            .status2_owned()
            .map_err(|error| ReaderError::from_pcsc(error, "SCardStatus", true))?;
        self.atr = status.atr().to_vec();
        self.card = Some(card);
        tracing::debug!(reader = self.name(), atr = %hex::encode(&self.atr), "card connected");
        Ok(())
    }

    /// The reader's attributes through the connected card's handle, or a direct connection
    /// when no card is connected.
    pub fn attributes(&self) -> Result<ReaderAttributes, ReaderError> {
        match &self.card {
            Some(card) => Ok(ReaderAttributes::read(card)),
            None => reader_attributes(self.name()),
        }
    }

    /// The ATR of the connected card.
    pub fn atr(&self) -> &[u8] {
        &self.atr
    }

    /// Command APDUs sent since this reader was opened (GET RESPONSEs and Le retries included).
    pub fn apdu_count(&self) -> u64 {
        self.apdus
    }

    /// Warm-reset the card: the card's security state (ADM verified, current file) is lost.
    pub fn reset(&mut self) -> Result<(), ReaderError> {
        let card = self.card.as_mut().ok_or_else(not_connected)?;
        card.reconnect(
            ShareMode::Exclusive,
            Protocols::T0 | Protocols::T1,
            Disposition::ResetCard,
        )
        .map_err(|error| ReaderError::from_pcsc(error, "SCardReconnect", true))
    }

    /// Release the card, resetting it so nothing stays verified.
    pub fn disconnect(&mut self) {
        if let Some(card) = self.card.take()
            && let Err((_, error)) = card.disconnect(Disposition::ResetCard)
        {
            tracing::debug!(
                reader = self.name(),
                error = pcsc_name(error),
                "disconnect failed"
            );
        }
    }

    /// Send one command APDU and return its answer as it is: no GET RESPONSE, no Le retry
    /// (for tools and tests that look at the T=0 exchange itself).
    pub fn transmit_raw(&mut self, apdu: &[u8]) -> Result<Response, ReaderError> {
        self.raw_transmit(apdu)
    }

    fn raw_transmit(&mut self, apdu: &[u8]) -> Result<Response, ReaderError> {
        let card = self.card.as_ref().ok_or_else(not_connected)?;
        let mut buffer = [0u8; pcsc::MAX_BUFFER_SIZE];
        self.apdus += 1;
        match card.transmit(apdu, &mut buffer) {
            // A card pulled mid-exchange can also show as a short (often empty) answer rather
            // than a transmit failure: decided the same way, by whether the card is still in.
            Ok(bytes) => Response::from_bytes(bytes).map_err(|error| {
                let cause = format!("bad response: {error}");
                if self.card_stays_present(REMOVAL_SETTLE) {
                    ReaderError::CardUnusable { cause }
                } else {
                    ReaderError::CardRemoved { cause }
                }
            }),
            Err(error) => Err(self.classify_transmit_error(error)),
        }
    }

    /// A transmit failure is a removal if the reader stops showing a card; otherwise the card
    /// (or its contact) is bad. pcscd may notice a removal only at its next poll of the reader,
    /// so we give the reader state up to [`REMOVAL_SETTLE`] to change before deciding.
    fn classify_transmit_error(&self, error: pcsc::Error) -> ReaderError {
        let mapped = ReaderError::from_pcsc(error, "SCardTransmit", true);
        if !matches!(mapped, ReaderError::ReaderNotConnected { .. }) {
            return mapped;
        }
        let cause = format!("SCardTransmit: {error} ({})", pcsc_name(error));
        if self.card_stays_present(REMOVAL_SETTLE) {
            ReaderError::CardUnusable { cause }
        } else {
            ReaderError::CardRemoved { cause }
        }
    }

    /// Whether the reader still shows a card after up to `settle` of watching it.
    fn card_stays_present(&self, settle: Duration) -> bool {
        let deadline = Instant::now() + settle;
        let mut states = [ReaderState::new(self.name.clone(), State::UNAWARE)];
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.context.get_status_change(remaining, &mut states) {
                Ok(()) => {}
                Err(pcsc::Error::Timeout) => return true,
                Err(_) => return false,
            }
            let state = states[0].event_state();
            if !state.contains(State::PRESENT) {
                return false;
            }
            if remaining.is_zero() {
                return true;
            }
            states[0].sync_current_state();
        }
    }

    /// Wait until the reader is empty (the card was taken out), up to `timeout`.
    /// Returns whether it is empty.
    pub fn wait_for_empty(&self, timeout: Duration) -> bool {
        !self.card_stays_present(timeout)
    }

    /// Send one command APDU and return the final response: data collected over `61xx` / `9Fxx`
    /// GET RESPONSEs, and the command repeated with the card's Le after `6Cxx`.
    pub fn transmit(&mut self, apdu: &[u8]) -> Result<Response, ReaderError> {
        let mut response = self.raw_transmit(apdu)?;
        let cla = apdu.first().copied().unwrap_or(0x00);
        let mut data = Vec::new();
        for _ in 0..MAX_CHAINED_RESPONSES {
            match response.status() {
                Status::ResponseAvailable(len) => {
                    data.extend_from_slice(&response.data);
                    let get = Command::get_response_after(cla, len).to_bytes();
                    response = self.raw_transmit(&get)?;
                }
                Status::WrongLe(len) if apdu.len() >= 5 => {
                    let mut again = apdu.to_vec();
                    if let Some(le) = again.last_mut() {
                        *le = len;
                    }
                    response = self.raw_transmit(&again)?;
                }
                _ => {
                    data.extend_from_slice(&response.data);
                    return Ok(Response { data, ..response });
                }
            }
        }
        Err(ReaderError::CardUnusable {
            cause: "card keeps answering 61xx/6Cxx".into(),
        })
    }

    /// Run script steps in order, checking each status word and read-back, and calling
    /// `on_step(index, response)` after each step that passed. Stops at the first mismatch.
    /// Secret steps are logged by index, kind and target only.
    pub fn run_steps(
        &mut self,
        steps: &[Step],
        mut on_step: impl FnMut(u16, &Response),
    ) -> Result<(), ReaderError> {
        for step in steps {
            if step.secret {
                tracing::debug!(index = step.index, kind = ?step.kind, target = %step.target, "step (secret)");
            } else {
                tracing::trace!(index = step.index, kind = ?step.kind, target = %step.target, apdu = %hex::encode(&step.apdu), "step");
            }
            let response = self.transmit(&step.apdu)?;
            check_step(step, &response)?;
            on_step(step.index, &response);
        }
        Ok(())
    }

    /// Read the card's ICCID and IMSI the way its family allows (by the ATR; the way that
    /// works on any UICC when the family is unknown).
    pub fn identify(&mut self) -> Result<Identity, ReaderError> {
        let steps = profile::identification_for(&self.atr);
        let mut responses = Vec::with_capacity(steps.len());
        match self.run_steps(&steps, |_, response| responses.push(response.clone())) {
            Ok(()) => {}
            Err(ReaderError::StepFailed {
                index,
                target,
                got_sw,
                ..
            }) => {
                return Err(ReaderError::CardUnusable {
                    cause: format!(
                        "identification step {index} ({target}) answered SW {got_sw:04X}"
                    ),
                });
            }
            Err(error) => return Err(error),
        }
        profile::parse_identity(&steps, &responses).map_err(|error| ReaderError::CardUnusable {
            cause: format!("identification: {error}"),
        })
    }

    /// [`Reader::identify`], refusing a card that is not blank.
    pub fn identify_blank(&mut self) -> Result<Identity, ReaderError> {
        let identity = self.identify()?;
        if identity.blank {
            Ok(identity)
        } else {
            Err(ReaderError::CardNotBlank {
                iccid: identity.iccid,
            })
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.disconnect();
    }
}

fn not_connected() -> ReaderError {
    ReaderError::ReaderNotConnected {
        cause: "no card connected (call connect first)".into(),
    }
}

/// Judge one step's answer.
fn check_step(step: &Step, response: &Response) -> Result<(), ReaderError> {
    let got_sw = response.sw();
    if got_sw != step.expect_sw {
        if step.kind == StepKind::Verify || step.apdu.get(1) == Some(&ins::VERIFY) {
            match response.status() {
                Status::VerifyFailed { tries_left } => {
                    return Err(ReaderError::AdmRejected { tries_left });
                }
                Status::Blocked => return Err(ReaderError::AdmBlocked),
                _ => {}
            }
        }
        return Err(ReaderError::StepFailed {
            index: step.index,
            kind: format!("{:?}", step.kind),
            target: step.target.clone(),
            expected_sw: step.expect_sw,
            got_sw,
        });
    }
    if let Some(expected) = &step.expect_data
        && expected != &response.data
    {
        if step.target.ends_with("EF.ICCID") {
            let found = simflow_card::encoding::decode_iccid(&response.data)
                .unwrap_or_else(|_| hex::encode(&response.data));
            let expected = simflow_card::encoding::decode_iccid(expected).unwrap_or_default();
            return Err(ReaderError::WrongCard { expected, found });
        }
        return Err(ReaderError::ReadBackMismatch {
            index: step.index,
            target: step.target.clone(),
        });
    }
    Ok(())
}
