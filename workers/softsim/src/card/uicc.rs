//! The UICC dialect (TS 102 221 §10-11, TS 31.102 §7): SELECT with FCP, STATUS, READ / UPDATE
//! BINARY and RECORD (with SFIs), SEARCH RECORD, VERIFY and UNBLOCK PIN, MANAGE CHANNEL,
//! GET CHALLENGE, TERMINAL PROFILE, AUTHENTICATE and GET RESPONSE, on logical channels 0-3.
//!
//! Status words: 6881 for a channel that is not open, 6A82 file not found, 6982 security status
//! not satisfied, 6981 command incompatible with the file structure, 6986 no EF selected,
//! 6A83 record not found (also when a search finds nothing), 6A86 wrong P1/P2, 6Cxx wrong Le,
//! 63Cx / 6983 for codes, 9862 for an AUTN with a wrong MAC.

use super::auth::{self, Answer3g};
use super::fs::Selected;
use super::ops::{RecordMode, Refusal, Target};
use super::{CHANNELS, CardModel, Channel, Dialect, answer, answer_data};
use simflow_card::apdu::{Command, ins, sw};

/// INS bytes only the UICC dialect knows.
const SEARCH_RECORD: u8 = 0xA2;
const UNBLOCK_PIN: u8 = 0x2C;
const MANAGE_CHANNEL: u8 = 0x70;
const GET_CHALLENGE: u8 = 0x84;
const TERMINAL_PROFILE: u8 = 0x10;

/// The logical channel is not open (or does not exist).
const CHANNEL_NOT_SUPPORTED: u16 = 0x6881;

/// The status word of a refused file operation.
fn refusal_sw(refusal: Refusal) -> u16 {
    match refusal {
        Refusal::NoEfSelected => 0x6986,
        Refusal::FileNotFound => sw::FILE_NOT_FOUND,
        Refusal::WrongStructure => sw::COMMAND_INCOMPATIBLE,
        Refusal::Security => sw::SECURITY_NOT_SATISFIED,
        Refusal::OffsetOutOfRange => sw::WRONG_P1_P2,
        Refusal::WrongLe(available) => 0x6C00 | (available as u16 & 0xFF),
        Refusal::WrongLength => sw::WRONG_LENGTH,
        Refusal::RecordNotFound => sw::RECORD_NOT_FOUND,
        Refusal::BadParameters => sw::INCORRECT_P1_P2,
    }
}

/// Le as a wish: `None` or 0 means "as much as there is".
fn wanted(command: &Command) -> Option<usize> {
    command.le.filter(|&le| le != 0).map(usize::from)
}

fn done(result: Result<(), Refusal>) -> Vec<u8> {
    answer(result.map_or_else(refusal_sw, |()| sw::OK))
}

fn data_or_refusal(result: Result<Vec<u8>, Refusal>) -> Vec<u8> {
    match result {
        Ok(data) => answer_data(data, sw::OK),
        Err(refusal) => answer(refusal_sw(refusal)),
    }
}

/// A binary command's target and offset: P1 bit 8 set means SFI in P1 and offset in P2.
fn binary_target(command: &Command) -> Result<(Target, usize), Refusal> {
    if command.p1 & 0x80 != 0 {
        if command.p1 & 0x60 != 0 {
            return Err(Refusal::BadParameters);
        }
        Ok((Target::Sfi(command.p1 & 0x1F), usize::from(command.p2)))
    } else {
        Ok((
            Target::Current,
            usize::from(command.p1) << 8 | usize::from(command.p2),
        ))
    }
}

/// A record command's target: the SFI in P2 bits 8-4 (0: the current EF).
fn record_target(command: &Command) -> Target {
    match command.p2 >> 3 {
        0 => Target::Current,
        sfi => Target::Sfi(sfi),
    }
}

/// Answer one command on an open channel.
pub(super) fn process(card: &mut CardModel, channel: usize, command: &Command) -> Vec<u8> {
    let Some(session) = card.channel(channel) else {
        return answer(CHANNEL_NOT_SUPPORTED);
    };
    let pending = session.pending.take();
    let dialect = Dialect::Uicc;
    match command.ins {
        ins::GET_RESPONSE => card.get_response(channel, command, pending, dialect),
        ins::SELECT => select(card, channel, command),
        ins::STATUS => status(card, channel, command),
        ins::READ_BINARY => data_or_refusal(binary_target(command).and_then(|(target, offset)| {
            card.read_binary(channel, target, offset, wanted(command))
        })),
        ins::UPDATE_BINARY => done(binary_target(command).and_then(|(target, offset)| {
            card.update_binary(channel, target, offset, &command.data)
        })),
        ins::READ_RECORD => data_or_refusal(
            RecordMode::from_p1_p2(command.p1, command.p2).and_then(|mode| {
                card.read_record(channel, record_target(command), mode, wanted(command))
            }),
        ),
        ins::UPDATE_RECORD => done(RecordMode::from_p1_p2(command.p1, command.p2).and_then(
            |mode| card.update_record(channel, record_target(command), mode, &command.data),
        )),
        SEARCH_RECORD => search_record(card, channel, command),
        ins::VERIFY if command.p1 == 0x00 => {
            answer(card.security.verify(command.p2, &command.data))
        }
        UNBLOCK_PIN if command.p1 == 0x00 => {
            answer(card.security.unblock(command.p2, &command.data))
        }
        ins::VERIFY | UNBLOCK_PIN => answer(sw::INCORRECT_P1_P2),
        MANAGE_CHANNEL => manage_channel(card, command),
        GET_CHALLENGE => get_challenge(command),
        TERMINAL_PROFILE => {
            card.terminal_profile = Some(command.data.clone());
            answer(sw::OK)
        }
        ins::AUTHENTICATE => authenticate(card, channel, command),
        _ => answer(sw::INS_NOT_SUPPORTED),
    }
}

fn select(card: &mut CardModel, channel: usize, command: &Command) -> Vec<u8> {
    let wants_fcp = match command.p2 & 0x0C {
        0x04 | 0x00 => true,
        0x0C => false,
        _ => return answer(sw::INCORRECT_P1_P2),
    };
    let Some(session) = card.channel(channel) else {
        return answer(CHANNEL_NOT_SUPPORTED);
    };
    let (current, app) = (session.current_df, session.current_app);
    let fids: Vec<u16> = command
        .data
        .chunks(2)
        .map(|pair| u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]))
        .collect();
    let selected = match command.p1 {
        0x00 if command.data.len() == 2 => card.fs.select_fid(current, app, fids[0]),
        0x00 => return answer(sw::WRONG_LENGTH),
        0x04 => card.fs.select_aid(&command.data).map(Selected::Df),
        0x08 | 0x09 if command.data.is_empty() || !command.data.len().is_multiple_of(2) => {
            return answer(sw::WRONG_LENGTH);
        }
        0x08 => card.fs.select_path(super::MF, app, &fids),
        0x09 => card.fs.select_path(current, app, &fids),
        _ => return answer(sw::INCORRECT_P1_P2),
    };
    let Some(selected) = selected else {
        return answer(sw::FILE_NOT_FOUND);
    };
    card.apply_selection(channel, selected);
    if !wants_fcp {
        return answer(sw::OK);
    }
    let fcp = match selected {
        Selected::Df(df) => card.fs.df_fcp(df, card.security.pin_status_template()),
        Selected::Ef(df, entry) => card.fs.ef_fcp(df, entry),
    };
    card.respond_later(channel, fcp, Dialect::Uicc)
}

fn status(card: &mut CardModel, channel: usize, command: &Command) -> Vec<u8> {
    let Some(session) = card.channel(channel) else {
        return answer(CHANNEL_NOT_SUPPORTED);
    };
    let (current, app) = (session.current_df, session.current_app);
    let data = match command.p2 {
        0x00 => card.fs.df_fcp(current, card.security.pin_status_template()),
        0x01 => match app.and_then(|app| card.fs.dfs[app].aid.clone()) {
            Some(aid) => {
                let mut tlv = vec![0x84, aid.len() as u8];
                tlv.extend(aid);
                tlv
            }
            None => Vec::new(),
        },
        0x0C => return answer(sw::OK),
        _ => return answer(sw::INCORRECT_P1_P2),
    };
    match wanted(command) {
        Some(wanted) if wanted != data.len() => answer(0x6C00 | (data.len() as u16 & 0xFF)),
        _ => answer_data(data, sw::OK),
    }
}

fn search_record(card: &mut CardModel, channel: usize, command: &Command) -> Vec<u8> {
    let forward = match command.p2 & 0x07 {
        0x04 => true,
        0x05 => false,
        _ => return answer(sw::INCORRECT_P1_P2),
    };
    let found = card.search_record(
        channel,
        record_target(command),
        usize::from(command.p1),
        forward,
        &command.data,
    );
    match found {
        Ok(records) => card.respond_later(channel, records, Dialect::Uicc),
        Err(refusal) => answer(refusal_sw(refusal)),
    }
}

fn manage_channel(card: &mut CardModel, command: &Command) -> Vec<u8> {
    match (command.p1, command.p2) {
        (0x00, 0x00) => {
            let Some(free) = (1..CHANNELS).find(|&number| card.channels[number].is_none()) else {
                return answer(sw::FUNCTION_NOT_SUPPORTED);
            };
            card.channels[free] = Some(Channel::at_mf());
            answer_data(vec![free as u8], sw::OK)
        }
        (0x80, number) if (1..CHANNELS).contains(&usize::from(number)) => {
            match card.channels[usize::from(number)].take() {
                Some(_) => answer(sw::OK),
                None => answer(CHANNEL_NOT_SUPPORTED),
            }
        }
        _ => answer(sw::INCORRECT_P1_P2),
    }
}

fn get_challenge(command: &Command) -> Vec<u8> {
    match command.le {
        Some(len) if len > 0 => {
            let bytes: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
            answer_data(bytes, sw::OK)
        }
        _ => answer(sw::WRONG_LENGTH),
    }
}

fn authenticate(card: &mut CardModel, channel: usize, command: &Command) -> Vec<u8> {
    let Some(app) = card
        .channel(channel)
        .and_then(|session| session.current_app)
    else {
        return answer(sw::CONDITIONS_NOT_SATISFIED);
    };
    if !card.security.is_verified(simflow_card::arr::key::PIN1) {
        return answer(sw::SECURITY_NOT_SATISFIED);
    }
    let is_isim = card.fs.dfs[app].name == "ADF.ISIM";
    let source = match (command.p2, is_isim) {
        (0x81, false) => Some(card.family.usim_3g.clone()),
        (0x81, true) => card.family.isim_3g.clone(),
        (0x80, false) => Some(card.family.gsm.clone()),
        _ => return answer(sw::INCORRECT_P1_P2),
    };
    let Some(keys) = source.and_then(|source| source.keys(|name| card.file(name))) else {
        return answer(sw::CONDITIONS_NOT_SATISFIED);
    };
    let data = &command.data;
    let rand: Option<[u8; 16]> = (data.first() == Some(&16))
        .then(|| data.get(1..17)?.try_into().ok())
        .flatten();
    let Some(rand) = rand else {
        return answer(sw::WRONG_DATA);
    };
    if command.p2 == 0x80 {
        let (sres, kc) = auth::gsm_sres_kc(&keys, &rand);
        let mut out = vec![4];
        out.extend(sres);
        out.push(8);
        out.extend(kc);
        return card.respond_later(channel, out, Dialect::Uicc);
    }
    let autn: Option<[u8; 16]> = (data.get(17) == Some(&16))
        .then(|| data.get(18..34)?.try_into().ok())
        .flatten();
    let Some(autn) = autn else {
        return answer(sw::WRONG_DATA);
    };
    let sqn_ms = card.sqn_ms.get(&app).copied().unwrap_or(0);
    match auth::authenticate_3g(&keys, &rand, &autn, sqn_ms) {
        Answer3g::MacFailure => answer(sw::AUTH_MAC_FAILURE),
        Answer3g::Data(out, sqn) => {
            card.sqn_ms.insert(app, sqn);
            card.respond_later(channel, out, Dialect::Uicc)
        }
    }
}
