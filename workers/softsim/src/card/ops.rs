//! File operations both dialects share: READ / UPDATE BINARY, READ / UPDATE RECORD and SEARCH
//! RECORD (SEEK on a classic SIM) on an EF a channel has selected, with the access check.
//!
//! They answer data or a [`Refusal`]; each dialect turns a refusal into its own status word
//! (TS 102 221 §10.2 for the UICC, TS 51.011 §9.4 for the classic SIM).
//! Cyclic files are read and updated like linear ones here (absolute record numbers).
//! SEARCH RECORD does the simple search: a record matches when it starts with the pattern.

use super::fs::Structure;
use super::{CardModel, Operation};

/// Why an operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// No EF is selected on the channel.
    NoEfSelected,
    /// No EF has that SFI in the current DF.
    FileNotFound,
    /// The EF's structure does not fit the command (binary on records or the reverse).
    WrongStructure,
    /// The verified codes do not meet the file's rule.
    Security,
    /// The offset lies beyond the end of the file.
    OffsetOutOfRange,
    /// Le asks for more than there is: this many bytes are.
    WrongLe(usize),
    /// The data does not fit (record length, file end).
    WrongLength,
    /// No such record (or no record matched a search).
    RecordNotFound,
    /// P1/P2 name no mode we know.
    BadParameters,
}

/// How a record command addresses its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RecordMode {
    /// This record number; 0 means the current record.
    Absolute(usize),
    /// The record after the current one (the first if none is current).
    Next,
    /// The record before the current one (the last if none is current).
    Previous,
}

impl RecordMode {
    /// From P1 and the mode bits 3-1 of P2 (02 next, 03 previous, 04 absolute or current).
    pub(super) fn from_p1_p2(p1: u8, p2: u8) -> Result<Self, Refusal> {
        match p2 & 0x07 {
            0x02 => Ok(RecordMode::Next),
            0x03 => Ok(RecordMode::Previous),
            0x04 => Ok(RecordMode::Absolute(usize::from(p1))),
            _ => Err(Refusal::BadParameters),
        }
    }
}

/// Where an operation is addressed: the current EF, or the EF with this SFI in the current DF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    Current,
    Sfi(u8),
}

impl CardModel {
    /// Resolve a target on a channel, making an SFI target the current EF (TS 102 221 §8.4.2).
    fn target(&mut self, channel: usize, target: Target) -> Result<(usize, usize), Refusal> {
        let session = self.channel(channel).ok_or(Refusal::NoEfSelected)?;
        match target {
            Target::Current => session.current_ef.ok_or(Refusal::NoEfSelected),
            Target::Sfi(sfi) => {
                let df = session.current_df;
                let entry = self.fs.entry_by_sfi(df, sfi).ok_or(Refusal::FileNotFound)?;
                if let Some(session) = self.channel(channel)
                    && session.current_ef != Some((df, entry))
                {
                    session.current_ef = Some((df, entry));
                    session.record = None;
                }
                Ok((df, entry))
            }
        }
    }

    /// The EF behind a checked target: its index, after the access check for `operation`.
    fn checked(
        &mut self,
        channel: usize,
        target: Target,
        operation: Operation,
        wants_records: bool,
    ) -> Result<usize, Refusal> {
        let (df, entry) = self.target(channel, target)?;
        let ef = self.fs.dfs[df].entries[entry].ef;
        let is_records = self.fs.efs[ef].structure != Structure::Transparent;
        if is_records != wants_records {
            return Err(Refusal::WrongStructure);
        }
        if !self.allowed(df, entry, operation) {
            return Err(Refusal::Security);
        }
        Ok(ef)
    }

    /// READ BINARY of `wanted` bytes (`None`: all there are, up to 256) from `offset`.
    pub(super) fn read_binary(
        &mut self,
        channel: usize,
        target: Target,
        offset: usize,
        wanted: Option<usize>,
    ) -> Result<Vec<u8>, Refusal> {
        let ef = self.checked(channel, target, Operation::Read, false)?;
        let data = &self.fs.efs[ef].data;
        if offset >= data.len() {
            return Err(Refusal::OffsetOutOfRange);
        }
        let available = (data.len() - offset).min(256);
        let len = match wanted {
            None => available,
            Some(wanted) if wanted > available => return Err(Refusal::WrongLe(available)),
            Some(wanted) => wanted,
        };
        Ok(data[offset..offset + len].to_vec())
    }

    /// UPDATE BINARY with `bytes` at `offset`.
    pub(super) fn update_binary(
        &mut self,
        channel: usize,
        target: Target,
        offset: usize,
        bytes: &[u8],
    ) -> Result<(), Refusal> {
        let ef = self.checked(channel, target, Operation::Update, false)?;
        let data = &mut self.fs.efs[ef].data;
        if bytes.is_empty() || offset + bytes.len() > data.len() {
            return Err(Refusal::WrongLength);
        }
        data[offset..offset + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }

    /// The record a mode addresses, moving the channel's record pointer there.
    fn record_number(
        &mut self,
        channel: usize,
        ef: usize,
        mode: RecordMode,
    ) -> Result<usize, Refusal> {
        let file = &self.fs.efs[ef];
        let record_len = file.structure.record_len().ok_or(Refusal::WrongStructure)?;
        let count = file.data.len() / record_len;
        let cyclic = matches!(file.structure, Structure::Cyclic { .. });
        let session = self.channel(channel).ok_or(Refusal::NoEfSelected)?;
        let number = match (mode, session.record) {
            (RecordMode::Absolute(0), current) => current.ok_or(Refusal::RecordNotFound)?,
            (RecordMode::Absolute(number), _) => number,
            (RecordMode::Next, None) => 1,
            (RecordMode::Next, Some(current)) if current < count => current + 1,
            (RecordMode::Next, Some(_)) if cyclic => 1,
            (RecordMode::Previous, None) => count,
            (RecordMode::Previous, Some(current)) if current > 1 => current - 1,
            (RecordMode::Previous, Some(_)) if cyclic => count,
            _ => return Err(Refusal::RecordNotFound),
        };
        if !(1..=count).contains(&number) {
            return Err(Refusal::RecordNotFound);
        }
        session.record = Some(number);
        Ok(number)
    }

    /// READ RECORD; `wanted` is the Le (`None`: the whole record).
    pub(super) fn read_record(
        &mut self,
        channel: usize,
        target: Target,
        mode: RecordMode,
        wanted: Option<usize>,
    ) -> Result<Vec<u8>, Refusal> {
        let ef = self.checked(channel, target, Operation::Read, true)?;
        let number = self.record_number(channel, ef, mode)?;
        let file = &self.fs.efs[ef];
        let record_len = file.structure.record_len().ok_or(Refusal::WrongStructure)?;
        if wanted.is_some_and(|wanted| wanted != record_len) {
            return Err(Refusal::WrongLe(record_len));
        }
        let start = (number - 1) * record_len;
        Ok(file.data[start..start + record_len].to_vec())
    }

    /// UPDATE RECORD with exactly one record of `bytes`.
    pub(super) fn update_record(
        &mut self,
        channel: usize,
        target: Target,
        mode: RecordMode,
        bytes: &[u8],
    ) -> Result<(), Refusal> {
        let ef = self.checked(channel, target, Operation::Update, true)?;
        let record_len = self.fs.efs[ef]
            .structure
            .record_len()
            .ok_or(Refusal::WrongStructure)?;
        if bytes.len() != record_len {
            return Err(Refusal::WrongLength);
        }
        let number = self.record_number(channel, ef, mode)?;
        let start = (number - 1) * record_len;
        self.fs.efs[ef].data[start..start + record_len].copy_from_slice(bytes);
        Ok(())
    }

    /// SEARCH RECORD (simple search): the numbers of the records from `start` on (`forward`) or
    /// back to record 1 that begin with `pattern`; the record pointer moves to the first.
    pub(super) fn search_record(
        &mut self,
        channel: usize,
        target: Target,
        start: usize,
        forward: bool,
        pattern: &[u8],
    ) -> Result<Vec<u8>, Refusal> {
        let ef = self.checked(channel, target, Operation::Read, true)?;
        let file = &self.fs.efs[ef];
        let record_len = file.structure.record_len().ok_or(Refusal::WrongStructure)?;
        let count = file.data.len() / record_len;
        if pattern.is_empty() || pattern.len() > record_len {
            return Err(Refusal::WrongLength);
        }
        let start = if start == 0 { 1 } else { start };
        if start > count {
            return Err(Refusal::RecordNotFound);
        }
        let order: Vec<usize> = if forward {
            (start..=count).collect()
        } else {
            (1..=start).rev().collect()
        };
        let found: Vec<u8> = order
            .into_iter()
            .filter(|number| {
                let begin = (number - 1) * record_len;
                file.data[begin..begin + record_len].starts_with(pattern)
            })
            .map(|number| number as u8)
            .collect();
        let first = *found.first().ok_or(Refusal::RecordNotFound)?;
        if let Some(session) = self.channel(channel) {
            session.record = Some(usize::from(first));
        }
        Ok(found)
    }
}
