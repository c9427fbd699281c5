//! The card model: a sysmoISIM-SJA2 or sysmoUSIM-SJS1 as a pure function from command APDU to
//! response APDU, with its files, secret codes, logical channels and SQNs.
//!
//! It speaks two dialects, told apart by the class byte: the UICC of TS 102 221 / TS 31.102
//! (CLA 0x, 4x, 8x, Cx; [`uicc`]) and the classic SIM of TS 51.011 (CLA A0; [`classic`]).
//! It behaves like a T=0 card: commands that send data and get data back answer `61 xx` (UICC) or
//! `9F xx` (classic) and hand the data out with GET RESPONSE; a READ with a wrong Le answers
//! `6C xx`. Every access is checked against the file's rules (its EF.ARR record or compact rules)
//! and the verified codes. Session state (what is selected, what is verified, open channels)
//! resets on power-up and reset; files, retry counters and SQNs survive them ("EEPROM").
//! It does no I/O and no timing: the vpcd transport in [`crate::vpcd`] does that.

pub(crate) mod auth;
mod classic;
pub(crate) mod fs;
mod ops;
mod security;
mod uicc;

use crate::image::{CardImage, ImageError};
use crate::layout::{self, FamilyModel};
use fs::{FileSystem, MF, Selected};
use security::{Codes, Security};
use serde::Serialize;
use simflow_card::apdu::{Command, sw};
use simflow_card::arr::AccessRules;
use simflow_card::encoding;
use std::collections::BTreeMap;

/// Logical channels a card offers (the basic channel 0 and three more).
const CHANNELS: usize = 4;

/// What one logical channel has selected.
#[derive(Debug, Clone)]
struct Channel {
    current_df: usize,
    /// The current EF: (DF, entry index in that DF).
    current_ef: Option<(usize, usize)>,
    current_app: Option<usize>,
    /// The record pointer of the current linear or cyclic EF (1-based).
    record: Option<usize>,
    /// Data waiting for GET RESPONSE.
    pending: Option<Vec<u8>>,
}

impl Channel {
    fn at_mf() -> Self {
        Channel {
            current_df: MF,
            current_ef: None,
            current_app: None,
            record: None,
            pending: None,
        }
    }
}

/// APDUs a card has seen, overall and by instruction byte.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ApduCounters {
    pub total: u64,
    pub by_ins: BTreeMap<u8, u64>,
    pub power_ups: u64,
}

impl ApduCounters {
    /// How many APDUs with this INS byte.
    pub fn ins(&self, ins: u8) -> u64 {
        self.by_ins.get(&ins).copied().unwrap_or(0)
    }
}

/// What a test can see of a card: file contents by path name (links under every name) and the
/// security counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CardSnapshot {
    /// The family the card is.
    pub family: String,
    pub files: BTreeMap<String, Vec<u8>>,
    pub adm_tries_left: u8,
    pub pin1_tries_left: u8,
    /// The USIM's highest accepted SQN.
    pub sqn_ms: u64,
}

impl CardSnapshot {
    /// The content of a file by path name, e.g. `ADF.USIM/EF.IMSI`.
    pub fn file(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(Vec::as_slice)
    }

    /// The IMSI the card holds, if written.
    pub fn imsi(&self) -> Option<String> {
        self.file("ADF.USIM/EF.IMSI")
            .and_then(|bytes| encoding::decode_imsi(bytes).ok().flatten())
    }
}

/// The emulated card.
pub struct CardModel {
    fs: FileSystem,
    family: FamilyModel,
    atr: Vec<u8>,
    security: Security,
    /// Highest SQN accepted, per application (ADF index).
    sqn_ms: BTreeMap<usize, u64>,
    channels: [Option<Channel>; CHANNELS],
    terminal_profile: Option<Vec<u8>>,
    counters: ApduCounters,
}

impl std::fmt::Debug for CardModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardModel")
            .field("family", &self.family.name)
            .field("files", &self.fs.efs.len())
            .field(
                "adm_tries_left",
                &self.security.tries_left(simflow_card::arr::key::ADM1),
            )
            .finish_non_exhaustive()
    }
}

fn answer(sw: u16) -> Vec<u8> {
    sw.to_be_bytes().to_vec()
}

fn answer_data(mut data: Vec<u8>, sw: u16) -> Vec<u8> {
    data.extend(sw.to_be_bytes());
    data
}

/// The two ways of talking to the card, for the status words that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    /// TS 102 221: `61xx` data waiting, `6Cxx` wrong Le.
    Uicc,
    /// TS 51.011: `9Fxx` data waiting, `67xx` wrong length.
    Classic,
}

impl Dialect {
    fn data_waiting(self, len: usize) -> u16 {
        let len = len as u16 & 0xFF;
        match self {
            Dialect::Uicc => 0x6100 | len,
            Dialect::Classic => 0x9F00 | len,
        }
    }

    fn wrong_length(self, len: usize) -> u16 {
        match self {
            Dialect::Uicc => 0x6C00 | (len as u16 & 0xFF),
            Dialect::Classic => sw::WRONG_LENGTH,
        }
    }
}

/// Which operation an access check is for.
#[derive(Debug, Clone, Copy)]
enum Operation {
    Read,
    Update,
}

impl CardModel {
    /// Build the card an image describes. `wrong_adm` gives the card an ADM1 that differs from
    /// the image's.
    pub fn from_image(image: &CardImage, wrong_adm: bool) -> Result<Self, ImageError> {
        let mut adm1 = *image.checked_adm1()?.bytes();
        if wrong_adm {
            adm1[7] = adm1[7].wrapping_add(1);
        }
        let built = layout::build(image)?;
        let codes = Codes {
            pin1: image.factory_code("pin1")?,
            puk1: image.factory_code("puk1")?,
            pin2: image.factory_code("pin2")?,
            puk2: image.factory_code("puk2")?,
            adm1,
            adm2: image.factory_code("adm2")?,
            pin1_enabled: image.factory.pin1_enabled,
        };
        Ok(CardModel {
            fs: built.fs,
            family: built.family,
            atr: image.atr_bytes()?,
            security: Security::new(&codes),
            sqn_ms: BTreeMap::new(),
            channels: [Some(Channel::at_mf()), None, None, None],
            terminal_profile: None,
            counters: ApduCounters::default(),
        })
    }

    /// The ATR the card answers at power-up.
    pub fn atr(&self) -> &[u8] {
        &self.atr
    }

    /// Power-up or warm reset: the session (selection, verified codes, channels) starts over.
    pub fn reset(&mut self) {
        self.security.reset_session();
        self.channels = [Some(Channel::at_mf()), None, None, None];
        self.terminal_profile = None;
        self.counters.power_ups += 1;
    }

    /// Power off: like a reset for everything volatile.
    pub fn power_off(&mut self) {
        self.security.reset_session();
        self.channels = [Some(Channel::at_mf()), None, None, None];
    }

    /// The APDUs seen so far.
    pub fn counters(&self) -> &ApduCounters {
        &self.counters
    }

    /// Every file by every name it has, and the counters.
    pub fn snapshot(&self) -> CardSnapshot {
        let files = self
            .fs
            .dfs
            .iter()
            .flat_map(|df| df.entries.iter())
            .map(|entry| (entry.name.clone(), self.fs.efs[entry.ef].data.clone()))
            .collect();
        let usim = self.fs.df_named("ADF.USIM");
        CardSnapshot {
            family: self.family.name.to_string(),
            files,
            adm_tries_left: self.security.tries_left(simflow_card::arr::key::ADM1),
            pin1_tries_left: self.security.tries_left(simflow_card::arr::key::PIN1),
            sqn_ms: usim
                .and_then(|df| self.sqn_ms.get(&df).copied())
                .unwrap_or(0),
        }
    }

    /// Answer one command APDU with `data ‖ SW1 SW2`.
    pub fn process(&mut self, apdu: &[u8]) -> Vec<u8> {
        self.counters.total += 1;
        if let Some(&ins) = apdu.get(1) {
            *self.counters.by_ins.entry(ins).or_default() += 1;
        }
        let Ok(command) = Command::from_bytes(apdu) else {
            return answer(sw::WRONG_LENGTH);
        };
        // ISO 7816-4 §5.4.1: the first interindustry classes (00-1F, and 80-9F proprietary)
        // carry channels 0-3 in bits 2-1; the further ones (40-7F, C0-FF) channels 4-19.
        match command.cla {
            0xA0 => classic::process(self, &command),
            cla if cla & 0x60 == 0x00 => uicc::process(self, usize::from(cla & 0x03), &command),
            cla if cla & 0x40 == 0x40 => uicc::process(self, 4 + usize::from(cla & 0x0F), &command),
            _ => answer(sw::CLA_NOT_SUPPORTED),
        }
    }

    fn channel(&mut self, channel: usize) -> Option<&mut Channel> {
        self.channels.get_mut(channel).and_then(Option::as_mut)
    }

    /// Apply a selection to a channel: the DF (and application) or the EF becomes current.
    fn apply_selection(&mut self, channel: usize, selected: Selected) {
        let is_app = |fs: &FileSystem, df: usize| fs.dfs[df].aid.is_some();
        let app = match selected {
            Selected::Df(df) if is_app(&self.fs, df) => Some(df),
            _ => None,
        };
        let Some(session) = self.channel(channel) else {
            return;
        };
        session.record = None;
        match selected {
            Selected::Df(df) => {
                session.current_df = df;
                session.current_ef = None;
                if app.is_some() {
                    session.current_app = app;
                }
            }
            // An EF's DF becomes the current DF (a path or an SFI may have led there).
            Selected::Ef(df, entry) => {
                session.current_df = df;
                session.current_ef = Some((df, entry));
            }
        }
    }

    /// The rules of an entry and whether the verified codes meet the one for `operation`.
    fn allowed(&self, df: usize, entry: usize, operation: Operation) -> bool {
        let rules: AccessRules = self.fs.rules(df, entry);
        let condition = match operation {
            Operation::Read => &rules.read,
            Operation::Update => &rules.update,
        };
        condition.is_met(|key| self.security.is_verified(key))
    }

    /// T=0: keep `data` for GET RESPONSE on this channel and announce its length.
    fn respond_later(&mut self, channel: usize, data: Vec<u8>, dialect: Dialect) -> Vec<u8> {
        let len = data.len();
        match self.channel(channel) {
            Some(session) => {
                session.pending = Some(data);
                answer(dialect.data_waiting(len))
            }
            None => answer(sw::CONDITIONS_NOT_SATISFIED),
        }
    }

    /// GET RESPONSE: hand out what the previous command left, in pieces if Le asks for less.
    fn get_response(
        &mut self,
        channel: usize,
        command: &Command,
        pending: Option<Vec<u8>>,
        dialect: Dialect,
    ) -> Vec<u8> {
        let Some(data) = pending else {
            return answer(sw::CONDITIONS_NOT_SATISFIED);
        };
        let wanted = command.le.map(usize::from).unwrap_or(0);
        if wanted == 0 || wanted == data.len() {
            return answer_data(data, sw::OK);
        }
        if wanted > data.len() {
            let len = data.len();
            if let Some(session) = self.channel(channel) {
                session.pending = Some(data);
            }
            return answer(dialect.wrong_length(len));
        }
        let rest = data[wanted..].to_vec();
        let head = data[..wanted].to_vec();
        let waiting = dialect.data_waiting(rest.len());
        if let Some(session) = self.channel(channel) {
            session.pending = Some(rest);
        }
        answer_data(head, waiting)
    }

    /// Read a file's content by path name (for key lookups).
    fn file(&self, name: &str) -> Option<&[u8]> {
        self.fs
            .ef_named(name)
            .map(|ef| self.fs.efs[ef].data.as_slice())
    }
}

#[cfg(test)]
mod tests;
