//! The classic SIM dialect (CLA A0, TS 51.011 §9): SELECT with the GSM response, STATUS,
//! READ / UPDATE BINARY and RECORD, SEEK, VERIFY CHV, UNBLOCK CHV, RUN GSM ALGORITHM and
//! GET RESPONSE, on the same files as the UICC dialect (the MF, DF.GSM, DF.TELECOM and their
//! children; applications are not visible here).
//!
//! Status words: `9Fxx` response waiting, `9404` file not found, `9400` no EF selected,
//! `9408` file inconsistent with the command, `9402` out of range, `9804` access condition not
//! fulfilled or a wrong CHV with tries left, `9840` CHV blocked, `9808` CHV1 disabled, `67xx`
//! wrong P3, `6B00` wrong P1/P2. CHV1 is PIN1 and CHV2 PIN2; VERIFY with P2 = 0A verifies ADM1
//! as sysmocom cards accept it.

use super::auth;
use super::fs::{FileSystem, Selected, Structure};
use super::ops::{RecordMode, Refusal, Target};
use super::{CardModel, Dialect, answer, answer_data};
use simflow_card::apdu::{Command, ins, sw};
use simflow_card::arr::{Condition, key};

/// INS bytes only the classic dialect knows.
const SEEK: u8 = 0xA2;
const UNBLOCK_CHV: u8 = 0x2C;
const RUN_GSM_ALGORITHM: u8 = 0x88;

const NO_EF_SELECTED: u16 = 0x9400;
const OUT_OF_RANGE: u16 = 0x9402;
const FILE_NOT_FOUND: u16 = 0x9404;
const FILE_INCONSISTENT: u16 = 0x9408;
const ACCESS_NOT_FULFILLED: u16 = 0x9804;
const CHV_DISABLED: u16 = 0x9808;
const CHV_BLOCKED: u16 = 0x9840;

/// The classic SIM has only the basic channel.
const BASIC: usize = 0;

fn refusal_sw(refusal: Refusal) -> u16 {
    match refusal {
        Refusal::NoEfSelected => NO_EF_SELECTED,
        Refusal::FileNotFound => FILE_NOT_FOUND,
        Refusal::WrongStructure => FILE_INCONSISTENT,
        Refusal::Security => ACCESS_NOT_FULFILLED,
        Refusal::OffsetOutOfRange | Refusal::RecordNotFound => OUT_OF_RANGE,
        Refusal::WrongLe(_) | Refusal::WrongLength => sw::WRONG_LENGTH,
        Refusal::BadParameters => sw::WRONG_P1_P2,
    }
}

/// P3 of a case-2 command: 0 means 256.
fn p3(command: &Command) -> usize {
    match command.le {
        Some(0) | None => 256,
        Some(len) => usize::from(len),
    }
}

/// Answer one CLA A0 command.
pub(super) fn process(card: &mut CardModel, command: &Command) -> Vec<u8> {
    let pending = card
        .channel(BASIC)
        .and_then(|session| session.pending.take());
    let done = |result: Result<(), Refusal>| answer(result.map_or_else(refusal_sw, |()| sw::OK));
    let data = |result: Result<Vec<u8>, Refusal>| match result {
        Ok(data) => answer_data(data, sw::OK),
        Err(refusal) => answer(refusal_sw(refusal)),
    };
    match command.ins {
        ins::GET_RESPONSE => card.get_response(BASIC, command, pending, Dialect::Classic),
        ins::SELECT => select(card, command),
        ins::STATUS => status(card, command),
        ins::READ_BINARY => {
            let offset = usize::from(command.p1) << 8 | usize::from(command.p2);
            data(card.read_binary(BASIC, Target::Current, offset, Some(p3(command))))
        }
        ins::UPDATE_BINARY => {
            let offset = usize::from(command.p1) << 8 | usize::from(command.p2);
            done(card.update_binary(BASIC, Target::Current, offset, &command.data))
        }
        ins::READ_RECORD => data(
            RecordMode::from_p1_p2(command.p1, command.p2)
                .and_then(|mode| card.read_record(BASIC, Target::Current, mode, Some(p3(command)))),
        ),
        ins::UPDATE_RECORD => done(
            RecordMode::from_p1_p2(command.p1, command.p2)
                .and_then(|mode| card.update_record(BASIC, Target::Current, mode, &command.data)),
        ),
        SEEK => seek(card, command),
        ins::VERIFY => verify_chv(card, command),
        UNBLOCK_CHV => unblock_chv(card, command),
        RUN_GSM_ALGORITHM => run_gsm_algorithm(card, command),
        _ => answer(sw::INS_NOT_SUPPORTED),
    }
}

/// The CHV a classic P2 names: 01 CHV1, 02 CHV2, 0A ADM1.
fn chv_reference(p2: u8) -> Option<u8> {
    match p2 {
        0x01 => Some(key::PIN1),
        0x02 => Some(key::PIN2),
        0x0A => Some(key::ADM1),
        _ => None,
    }
}

/// A UICC code outcome as the classic SIM words it.
fn chv_sw(outcome: u16) -> u16 {
    match outcome {
        sw::OK => sw::OK,
        0x63C0 | sw::AUTH_METHOD_BLOCKED => CHV_BLOCKED,
        outcome if outcome & 0xFFF0 == 0x63C0 => ACCESS_NOT_FULFILLED,
        sw::WRONG_LENGTH => sw::WRONG_LENGTH,
        _ => sw::WRONG_P1_P2,
    }
}

fn verify_chv(card: &mut CardModel, command: &Command) -> Vec<u8> {
    let Some(reference) = chv_reference(command.p2).filter(|_| command.p1 == 0) else {
        return answer(sw::WRONG_P1_P2);
    };
    if reference == key::PIN1 && !card.security.pin1_enabled() {
        return answer(CHV_DISABLED);
    }
    answer(chv_sw(card.security.verify(reference, &command.data)))
}

fn unblock_chv(card: &mut CardModel, command: &Command) -> Vec<u8> {
    let reference = match command.p2 {
        0x00 => key::PIN1,
        0x02 => key::PIN2,
        _ => return answer(sw::WRONG_P1_P2),
    };
    answer(chv_sw(card.security.unblock(reference, &command.data)))
}

/// The DFs a classic SIM shows: the MF and the DFs without an AID.
fn classic_visible(fs: &FileSystem, selected: Selected) -> bool {
    match selected {
        Selected::Df(df) => fs.dfs[df].aid.is_none(),
        Selected::Ef(df, _) => fs.dfs[df].aid.is_none(),
    }
}

fn select(card: &mut CardModel, command: &Command) -> Vec<u8> {
    let [hi, lo] = match command.data.as_slice() {
        [hi, lo] => [*hi, *lo],
        _ => return answer(sw::WRONG_LENGTH),
    };
    let Some(current) = card.channel(BASIC).map(|session| session.current_df) else {
        return answer(FILE_NOT_FOUND);
    };
    let selected = card
        .fs
        .select_fid(current, None, u16::from_be_bytes([hi, lo]))
        .filter(|selected| classic_visible(&card.fs, *selected));
    let Some(selected) = selected else {
        return answer(FILE_NOT_FOUND);
    };
    card.apply_selection(BASIC, selected);
    let response = match selected {
        Selected::Df(df) => df_response(card, df),
        Selected::Ef(df, entry) => ef_response(card, df, entry),
    };
    card.respond_later(BASIC, response, Dialect::Classic)
}

fn status(card: &mut CardModel, command: &Command) -> Vec<u8> {
    let Some(current) = card.channel(BASIC).map(|session| session.current_df) else {
        return answer(FILE_NOT_FOUND);
    };
    let response = df_response(card, current);
    let wanted = p3(command);
    if wanted > response.len() {
        return answer(sw::WRONG_LENGTH);
    }
    answer_data(response[..wanted].to_vec(), sw::OK)
}

/// One CHV status byte: b8 = initialised, b4-b1 = tries left.
fn chv_status(tries_left: u8) -> u8 {
    0x80 | (tries_left & 0x0F)
}

/// The GSM response to SELECT of a DF (TS 51.011 §9.2.1).
fn df_response(card: &CardModel, df: usize) -> Vec<u8> {
    let dir = &card.fs.dfs[df];
    let children = dir
        .children
        .iter()
        .filter(|&&child| card.fs.dfs[child].aid.is_none())
        .count();
    let file_type = if dir.parent.is_none() { 0x01 } else { 0x02 };
    let security = &card.security;
    // b8: CHV1 disabled; b6-b5: 3 V and 1.8 V; b1: clock stop allowed.
    let characteristics = 0x31 | if security.pin1_enabled() { 0x00 } else { 0x80 };
    let mut out = vec![0x00, 0x00, 0x10, 0x00];
    out.extend(dir.fid.to_be_bytes());
    out.push(file_type);
    out.extend([0x00; 5]);
    out.push(10);
    out.extend([
        characteristics,
        children as u8,
        dir.entries.len() as u8,
        0x04,
        0x00,
        chv_status(security.tries_left(key::PIN1)),
        chv_status(security.unblock_tries_left(key::PIN1)),
        chv_status(security.tries_left(key::PIN2)),
        chv_status(security.unblock_tries_left(key::PIN2)),
        0x00,
    ]);
    out
}

/// An access condition as a classic nibble: 0 ALW, 1 CHV1, 2 CHV2, A/B ADM, F NEV.
fn condition_nibble(condition: &Condition) -> u8 {
    let first = match condition {
        Condition::Always => return 0x0,
        Condition::Never => return 0xF,
        Condition::AnyOf(keys) | Condition::AllOf(keys) => keys.first().copied(),
    };
    match first {
        Some(key::PIN1) => 0x1,
        Some(key::PIN2) => 0x2,
        Some(key::ADM1) => 0xA,
        Some(key::ADM2) => 0xB,
        _ => 0xF,
    }
}

/// The GSM response to SELECT of an EF (TS 51.011 §9.2.1).
fn ef_response(card: &CardModel, df: usize, entry: usize) -> Vec<u8> {
    let listed = &card.fs.dfs[df].entries[entry];
    let file = &card.fs.efs[listed.ef];
    let rules = card.fs.rules(df, entry);
    let (structure, record_len) = match file.structure {
        Structure::Transparent => (0x00, 0),
        Structure::Linear { record_len } => (0x01, record_len),
        Structure::Cyclic { record_len } => (0x03, record_len),
    };
    let mut out = vec![0x00, 0x00];
    out.extend((file.data.len() as u16).to_be_bytes());
    out.extend(listed.fid.to_be_bytes());
    out.extend([0x04, 0x00]);
    out.push(condition_nibble(&rules.update) << 4 | condition_nibble(&rules.read));
    out.push(0xF0 | 0x0F);
    out.push(condition_nibble(&rules.deactivate) << 4 | condition_nibble(&rules.activate));
    out.extend([0x01, 0x02, structure, record_len as u8]);
    out
}

/// SEEK (TS 51.011 §9.2.7): P2 high nibble 0 = type 1 (set the pointer), 1 = type 2 (also
/// answer the record number); low nibble 0 from the start forward, 1 from the end backward,
/// 2 forward from the next record, 3 backward from the previous one.
fn seek(card: &mut CardModel, command: &Command) -> Vec<u8> {
    let answers_number = match command.p2 >> 4 {
        0 => false,
        1 => true,
        _ => return answer(sw::WRONG_P1_P2),
    };
    let current = card.channel(BASIC).and_then(|session| session.record);
    let (start, forward) = match (command.p2 & 0x0F, current) {
        (0x0, _) => (1, true),
        (0x1, _) => (255, false),
        (0x2, Some(record)) => (record + 1, true),
        (0x2, None) => (1, true),
        (0x3, Some(record)) if record > 1 => (record - 1, false),
        (0x3, _) => (255, false),
        _ => return answer(sw::WRONG_P1_P2),
    };
    let start = clamp_to_records(card, start);
    match card.search_record(BASIC, Target::Current, start, forward, &command.data) {
        Ok(found) if answers_number => {
            card.respond_later(BASIC, found[..1].to_vec(), Dialect::Classic)
        }
        Ok(_) => answer(sw::OK),
        Err(Refusal::RecordNotFound) => answer(OUT_OF_RANGE),
        Err(refusal) => answer(refusal_sw(refusal)),
    }
}

/// A backward search from "the end" starts at the last record.
fn clamp_to_records(card: &mut CardModel, start: usize) -> usize {
    let Some((df, entry)) = card.channel(BASIC).and_then(|session| session.current_ef) else {
        return start;
    };
    let file = &card.fs.efs[card.fs.dfs[df].entries[entry].ef];
    let count = file
        .structure
        .record_len()
        .map_or(0, |len| file.data.len() / len);
    start.min(count.max(1))
}

/// RUN GSM ALGORITHM (TS 51.011 §9.2.16): in DF.GSM, with CHV1 satisfied; SRES ‖ Kc through
/// GET RESPONSE.
fn run_gsm_algorithm(card: &mut CardModel, command: &Command) -> Vec<u8> {
    let current = card.channel(BASIC).map(|session| session.current_df);
    if current.is_none_or(|df| card.fs.dfs[df].name != "DF.GSM") {
        return answer(NO_EF_SELECTED);
    }
    if !card.security.is_verified(key::PIN1) {
        return answer(ACCESS_NOT_FULFILLED);
    }
    let Ok(rand) = <[u8; 16]>::try_from(command.data.as_slice()) else {
        return answer(sw::WRONG_LENGTH);
    };
    let Some(keys) = card.family.gsm.clone().keys(|name| card.file(name)) else {
        return answer(sw::TECHNICAL_PROBLEM);
    };
    let (sres, kc) = auth::gsm_sres_kc(&keys, &rand);
    let mut out = sres.to_vec();
    out.extend(kc);
    card.respond_later(BASIC, out, Dialect::Classic)
}
