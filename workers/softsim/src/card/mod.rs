//! The card model: a sysmoISIM-SJA2-like UICC as a pure function from command APDU to
//! response APDU, with its files, security state, ADM1 retry counter and SQN.
//!
//! It behaves like a T=0 card: commands that send data and get data back (SELECT with FCP,
//! AUTHENTICATE) answer `61 xx` and hand the data out with GET RESPONSE; a READ with a wrong
//! Le answers `6C xx`. Security state and the current file reset on power-up and reset;
//! files, the ADM1 counter and the SQN survive them (they are "EEPROM").
//! It does no I/O and no timing: the vpcd transport in [`crate::vpcd`] does that.

use crate::image::{CardImage, ImageError};
use serde::Serialize;
use simflow_card::apdu::{Command, ins, sw};
use simflow_card::encoding;
use simflow_card::fcp::{Fcp, FileType};
use simflow_card::milenage;
use std::collections::BTreeMap;

/// ADM1 verification tries a card starts with.
const ADM_TRIES: u8 = 3;

/// Who may read or update a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Always,
    Adm,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Structure {
    Transparent,
    Linear { record_len: usize },
}

#[derive(Debug, Clone)]
struct Ef {
    /// Canonical path name, e.g. `ADF.USIM/EF.IMSI`.
    name: String,
    fid: u16,
    sfi: Option<u8>,
    structure: Structure,
    data: Vec<u8>,
    read: Access,
    update: Access,
}

#[derive(Debug, Clone)]
struct Df {
    fid: u16,
    aid: Option<Vec<u8>>,
    parent: Option<usize>,
    children: Vec<usize>,
    /// (FID, SFI in this DF, index into `efs`): a file can be linked into several DFs.
    efs: Vec<(u16, Option<u8>, usize)>,
}

const MF: usize = 0;

/// The USIM AID of the SJA2 as listed in its EF.DIR.
fn usim_aid() -> Vec<u8> {
    simflow_card::profile::Sja2Layout::default().usim_aid
}

#[derive(Debug, Clone, Default)]
struct Session {
    current_df: usize,
    current_ef: Option<usize>,
    current_app: Option<usize>,
    adm_verified: bool,
    pending: Option<Vec<u8>>,
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

/// What a test can see of a card: file contents by path name and the security counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CardSnapshot {
    pub files: BTreeMap<String, Vec<u8>>,
    pub adm_tries_left: u8,
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
    dfs: Vec<Df>,
    efs: Vec<Ef>,
    atr: Vec<u8>,
    adm1: [u8; 8],
    adm_tries_left: u8,
    /// Highest SQN accepted (48 bits).
    sqn_ms: u64,
    session: Session,
    counters: ApduCounters,
}

impl std::fmt::Debug for CardModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardModel")
            .field("files", &self.efs.len())
            .field("adm_tries_left", &self.adm_tries_left)
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

impl CardModel {
    /// Build the card's file system from an image. `wrong_adm` gives the card an ADM1 that
    /// differs from the image's.
    pub fn from_image(image: &CardImage, wrong_adm: bool) -> Result<Self, ImageError> {
        let iccid = image.checked_iccid()?;
        let mut adm1 = *image.checked_adm1()?.bytes();
        if wrong_adm {
            adm1[7] = adm1[7].wrapping_add(1);
        }
        let mut card = CardModel {
            dfs: Vec::new(),
            efs: Vec::new(),
            atr: image.atr_bytes()?,
            adm1,
            adm_tries_left: ADM_TRIES,
            sqn_ms: 0,
            session: Session::default(),
            counters: ApduCounters::default(),
        };
        card.build_tree(&iccid);
        if let Some(imsi) = &image.imsi {
            card.set_file("ADF.USIM/EF.IMSI", &encoding::encode_imsi(imsi)?);
            card.set_file("ADF.USIM/EF.ACC", &encoding::encode_acc_for_imsi(imsi)?);
            card.set_file("ADF.USIM/EF.AD", &encoding::encode_ad(2)?);
        }
        if let (Some(ki), Some(opc)) = (image.key("ki")?, image.key("opc")?) {
            let mut key_file = vec![simflow_card::profile::AUTH_KEY_CFG_MILENAGE_OPC];
            key_file.extend(ki);
            key_file.extend(opc);
            card.set_file("DF.SYSTEM/EF.SIM_AUTH_KEY", &key_file);
            card.set_file("ADF.USIM/EF.USIM_AUTH_KEY", &key_file);
        }
        Ok(card)
    }

    fn add_df(&mut self, parent: Option<usize>, fid: u16, aid: Option<Vec<u8>>) -> usize {
        let index = self.dfs.len();
        self.dfs.push(Df {
            fid,
            aid,
            parent,
            children: Vec::new(),
            efs: Vec::new(),
        });
        if let Some(parent) = parent {
            self.dfs[parent].children.push(index);
        }
        index
    }

    #[allow(clippy::too_many_arguments)]
    fn add_ef(
        &mut self,
        df: usize,
        name: &str,
        fid: u16,
        sfi: Option<u8>,
        structure: Structure,
        size: usize,
        read: Access,
        update: Access,
    ) -> usize {
        let index = self.efs.len();
        self.efs.push(Ef {
            name: name.to_string(),
            fid,
            sfi,
            structure,
            data: vec![0xFF; size],
            read,
            update,
        });
        self.dfs[df].efs.push((fid, sfi, index));
        index
    }

    fn link_ef(&mut self, df: usize, ef: usize) {
        let fid = self.efs[ef].fid;
        self.dfs[df].efs.push((fid, None, ef));
    }

    fn build_tree(&mut self, iccid: &[u8; 10]) {
        use Access::{Adm, Always, Never};
        use Structure::{Linear, Transparent};
        let mf = self.add_df(None, 0x3F00, None);
        let iccid_ef = self.add_ef(
            mf,
            "MF/EF.ICCID",
            0x2FE2,
            Some(0x02),
            Transparent,
            10,
            Always,
            Never,
        );
        self.efs[iccid_ef].data = iccid.to_vec();
        let dir = self.add_ef(
            mf,
            "MF/EF.DIR",
            0x2F00,
            Some(0x1E),
            Linear { record_len: 32 },
            64,
            Always,
            Adm,
        );
        let aid = usim_aid();
        let mut record = vec![0x61, (aid.len() + 2 + 6) as u8, 0x4F, aid.len() as u8];
        record.extend(&aid);
        record.extend([0x50, 0x04, b'U', b'S', b'I', b'M']);
        self.efs[dir].data[..record.len()].copy_from_slice(&record);

        let telecom = self.add_df(Some(mf), 0x7F10, None);
        self.add_ef(
            telecom,
            "DF.TELECOM/EF.MSISDN",
            0x6F40,
            None,
            Linear { record_len: 34 },
            68,
            Always,
            Adm,
        );
        self.add_ef(
            telecom,
            "DF.TELECOM/EF.SMSP",
            0x6F42,
            None,
            Linear { record_len: 52 },
            104,
            Always,
            Adm,
        );

        let system = self.add_df(Some(mf), 0xA515, None);
        self.add_ef(
            system,
            "DF.SYSTEM/EF.SIM_AUTH_KEY",
            0x6F20,
            None,
            Transparent,
            33,
            Adm,
            Adm,
        );

        let usim = self.add_df(Some(mf), 0x7FF0, Some(aid));
        let imsi = self.add_ef(
            usim,
            "ADF.USIM/EF.IMSI",
            0x6F07,
            Some(0x07),
            Transparent,
            9,
            Always,
            Adm,
        );
        let ad = self.add_ef(
            usim,
            "ADF.USIM/EF.AD",
            0x6FAD,
            Some(0x03),
            Transparent,
            4,
            Always,
            Adm,
        );
        let acc = self.add_ef(
            usim,
            "ADF.USIM/EF.ACC",
            0x6F78,
            Some(0x06),
            Transparent,
            2,
            Always,
            Adm,
        );
        let spn = self.add_ef(
            usim,
            "ADF.USIM/EF.SPN",
            0x6F46,
            None,
            Transparent,
            17,
            Always,
            Adm,
        );
        let plmn = self.add_ef(
            usim,
            "ADF.USIM/EF.PLMNwAcT",
            0x6F60,
            Some(0x0A),
            Transparent,
            40,
            Always,
            Adm,
        );
        let oplmn = self.add_ef(
            usim,
            "ADF.USIM/EF.OPLMNwAcT",
            0x6F61,
            Some(0x11),
            Transparent,
            40,
            Always,
            Adm,
        );
        let hplmn = self.add_ef(
            usim,
            "ADF.USIM/EF.HPLMNwAcT",
            0x6F62,
            Some(0x13),
            Transparent,
            40,
            Always,
            Adm,
        );
        self.add_ef(
            usim,
            "ADF.USIM/EF.USIM_AUTH_KEY",
            0xAF20,
            None,
            Transparent,
            33,
            Adm,
            Adm,
        );

        // DF.GSM shares its files with ADF.USIM on this card (see simflow-card's SJA2 notes).
        let gsm = self.add_df(Some(mf), 0x7F20, None);
        for ef in [imsi, ad, acc, spn, plmn, oplmn, hplmn] {
            self.link_ef(gsm, ef);
        }
    }

    fn find_ef(&self, name: &str) -> Option<usize> {
        self.efs.iter().position(|ef| ef.name == name)
    }

    fn set_file(&mut self, name: &str, content: &[u8]) {
        if let Some(index) = self.find_ef(name) {
            self.efs[index].data[..content.len()].copy_from_slice(content);
        }
    }

    /// The ATR the card answers with.
    pub fn atr(&self) -> &[u8] {
        &self.atr
    }

    /// Power-up or warm reset: the MF is current, no PIN is verified.
    pub fn reset(&mut self) {
        self.session = Session::default();
        self.counters.power_ups += 1;
    }

    /// Power off: the security state is lost.
    pub fn power_off(&mut self) {
        self.session = Session::default();
    }

    /// APDUs seen so far.
    pub fn counters(&self) -> &ApduCounters {
        &self.counters
    }

    /// File contents and security counters, for tests.
    pub fn snapshot(&self) -> CardSnapshot {
        CardSnapshot {
            files: self
                .efs
                .iter()
                .map(|ef| (ef.name.clone(), ef.data.clone()))
                .collect(),
            adm_tries_left: self.adm_tries_left,
            sqn_ms: self.sqn_ms,
        }
    }

    /// Answer one command APDU with `data ‖ SW1 SW2`.
    pub fn process(&mut self, apdu: &[u8]) -> Vec<u8> {
        self.counters.total += 1;
        if let Some(&ins) = apdu.get(1) {
            *self.counters.by_ins.entry(ins).or_default() += 1;
        }
        let Ok(command) = Command::from_bytes(apdu) else {
            self.session.pending = None;
            return answer(sw::WRONG_LENGTH);
        };
        if command.cla & 0xF0 != 0x00 && command.cla & 0xF0 != 0x80 {
            return answer(sw::CLA_NOT_SUPPORTED);
        }
        let pending = self.session.pending.take();
        match command.ins {
            ins::GET_RESPONSE => self.get_response(&command, pending),
            ins::SELECT => self.select(&command),
            ins::READ_BINARY => self.read_binary(&command),
            ins::UPDATE_BINARY => self.update_binary(&command),
            ins::READ_RECORD => self.read_record(&command),
            ins::UPDATE_RECORD => self.update_record(&command),
            ins::VERIFY => self.verify(&command),
            ins::AUTHENTICATE => self.authenticate(&command),
            ins::STATUS => answer_data(self.df_fcp(self.session.current_df), sw::OK),
            _ => answer(sw::INS_NOT_SUPPORTED),
        }
    }

    /// T=0: keep `data` for GET RESPONSE and announce its length.
    fn respond_later(&mut self, data: Vec<u8>) -> Vec<u8> {
        let len = data.len() as u8;
        self.session.pending = Some(data);
        answer(0x6100 | u16::from(len))
    }

    fn get_response(&mut self, command: &Command, pending: Option<Vec<u8>>) -> Vec<u8> {
        let Some(data) = pending else {
            return answer(sw::CONDITIONS_NOT_SATISFIED);
        };
        let wanted = command.le.map(usize::from).unwrap_or(0);
        if wanted == 0 || wanted == data.len() {
            answer_data(data, sw::OK)
        } else if wanted > data.len() {
            let len = data.len() as u16;
            self.session.pending = Some(data);
            answer(0x6C00 | len)
        } else {
            let rest = data[wanted..].to_vec();
            let head = data[..wanted].to_vec();
            let sw = 0x6100 | rest.len() as u16;
            self.session.pending = Some(rest);
            answer_data(head, sw)
        }
    }

    fn ef_fcp(&self, ef: usize) -> Vec<u8> {
        let file = &self.efs[ef];
        let mut fcp = match file.structure {
            Structure::Transparent => Fcp::new(FileType::Transparent, file.fid),
            Structure::Linear { record_len } => {
                let mut fcp = Fcp::new(FileType::LinearFixed, file.fid);
                fcp.record_len = Some(record_len as u16);
                fcp.record_count = Some((file.data.len() / record_len) as u8);
                fcp
            }
        };
        fcp.size = Some(file.data.len() as u32);
        fcp.sfi = file.sfi;
        fcp.arr_reference = Some(vec![
            0x6F,
            0x06,
            if file.update == Access::Adm {
                0x03
            } else {
                0x01
            },
        ]);
        fcp.build()
    }

    fn df_fcp(&self, df: usize) -> Vec<u8> {
        let mut fcp = Fcp::new(FileType::Df, self.dfs[df].fid);
        fcp.aid = self.dfs[df].aid.clone();
        fcp.total_size = Some(0x2000);
        fcp.arr_reference = Some(vec![0x2F, 0x06, 0x02]);
        fcp.build()
    }

    fn select(&mut self, command: &Command) -> Vec<u8> {
        let wants_fcp = match command.p2 & 0x0C {
            0x04 | 0x00 => true,
            0x0C => false,
            _ => return answer(sw::INCORRECT_P1_P2),
        };
        let selected = match command.p1 {
            0x00 => {
                let [hi, lo] = match command.data.as_slice() {
                    [hi, lo] => [*hi, *lo],
                    _ => return answer(sw::WRONG_LENGTH),
                };
                match self.resolve_fid(u16::from_be_bytes([hi, lo])) {
                    Some(selected) => selected,
                    None => return answer(sw::FILE_NOT_FOUND),
                }
            }
            0x04 => {
                // By DF name: the AID or a unique prefix of it of at least 5 bytes (RID).
                if command.data.len() < 5 {
                    return answer(sw::FILE_NOT_FOUND);
                }
                let found = self.dfs.iter().position(|df| {
                    df.aid
                        .as_ref()
                        .is_some_and(|aid| aid.starts_with(&command.data))
                });
                match found {
                    Some(df) => Selection::Df(df),
                    None => return answer(sw::FILE_NOT_FOUND),
                }
            }
            _ => return answer(sw::INCORRECT_P1_P2),
        };
        let fcp = match selected {
            Selection::Df(df) => {
                self.session.current_df = df;
                self.session.current_ef = None;
                if self.dfs[df].aid.is_some() {
                    self.session.current_app = Some(df);
                }
                self.df_fcp(df)
            }
            Selection::Ef(ef) => {
                self.session.current_ef = Some(ef);
                self.ef_fcp(ef)
            }
        };
        if wants_fcp {
            self.respond_later(fcp)
        } else {
            answer(sw::OK)
        }
    }

    /// FID selection per TS 102 221 §8.4.1: the MF, the current application (7FFF), the
    /// current DF, its children, its parent, and the parent's children (siblings).
    fn resolve_fid(&mut self, fid: u16) -> Option<Selection> {
        let current = self.session.current_df;
        if fid == 0x3F00 {
            return Some(Selection::Df(MF));
        }
        if fid == 0x7FFF {
            return self.session.current_app.map(Selection::Df);
        }
        if self.dfs[current].fid == fid {
            return Some(Selection::Df(current));
        }
        if let Some(&(_, _, ef)) = self.dfs[current].efs.iter().find(|(f, _, _)| *f == fid) {
            // Remember the DF an EF was selected in: SFIs keep referring to it.
            return Some(Selection::Ef(ef));
        }
        let mut candidates = self.dfs[current].children.clone();
        if let Some(parent) = self.dfs[current].parent {
            candidates.push(parent);
            candidates.extend(self.dfs[parent].children.iter().copied());
        }
        candidates
            .into_iter()
            .find(|&df| self.dfs[df].fid == fid)
            .map(Selection::Df)
    }

    fn ef_by_sfi(&self, sfi: u8) -> Option<usize> {
        self.dfs[self.session.current_df]
            .efs
            .iter()
            .find(|(_, s, _)| *s == Some(sfi))
            .map(|(_, _, ef)| *ef)
    }

    /// The EF addressed by a READ/UPDATE BINARY (SFI in P1) and the offset.
    fn binary_target(&mut self, command: &Command) -> Result<(usize, usize), u16> {
        if command.p1 & 0x80 != 0 {
            if command.p1 & 0x60 != 0 {
                return Err(sw::INCORRECT_P1_P2);
            }
            let ef = self
                .ef_by_sfi(command.p1 & 0x1F)
                .ok_or(sw::FILE_NOT_FOUND)?;
            self.session.current_ef = Some(ef);
            Ok((ef, usize::from(command.p2)))
        } else {
            let ef = self.session.current_ef.ok_or(sw::COMMAND_INCOMPATIBLE)?;
            Ok((ef, usize::from(command.p1) << 8 | usize::from(command.p2)))
        }
    }

    /// The EF addressed by a READ/UPDATE RECORD (SFI in P2 bits 8-4) and the record index.
    fn record_target(&mut self, command: &Command) -> Result<(usize, usize, usize), u16> {
        if command.p2 & 0x07 != 0x04 {
            return Err(sw::INCORRECT_P1_P2);
        }
        let sfi = command.p2 >> 3;
        let ef = if sfi == 0 {
            self.session.current_ef.ok_or(sw::COMMAND_INCOMPATIBLE)?
        } else {
            let ef = self.ef_by_sfi(sfi).ok_or(sw::FILE_NOT_FOUND)?;
            self.session.current_ef = Some(ef);
            ef
        };
        let Structure::Linear { record_len } = self.efs[ef].structure else {
            return Err(sw::COMMAND_INCOMPATIBLE);
        };
        let record = usize::from(command.p1);
        if record == 0 || record * record_len > self.efs[ef].data.len() {
            return Err(sw::RECORD_NOT_FOUND);
        }
        Ok((ef, record, record_len))
    }

    fn allowed(&self, access: Access) -> bool {
        match access {
            Access::Always => true,
            Access::Adm => self.session.adm_verified,
            Access::Never => false,
        }
    }

    fn read_binary(&mut self, command: &Command) -> Vec<u8> {
        let (ef, offset) = match self.binary_target(command) {
            Ok(target) => target,
            Err(sw) => return answer(sw),
        };
        let file = &self.efs[ef];
        if file.structure != Structure::Transparent {
            return answer(sw::COMMAND_INCOMPATIBLE);
        }
        if !self.allowed(file.read) {
            return answer(sw::SECURITY_NOT_SATISFIED);
        }
        if offset >= file.data.len() {
            return answer(sw::WRONG_P1_P2);
        }
        let available = (file.data.len() - offset).min(256);
        let wanted = command.le.map(usize::from).unwrap_or(0);
        if wanted > available {
            return answer(0x6C00 | available as u16);
        }
        let len = if wanted == 0 { available } else { wanted };
        answer_data(file.data[offset..offset + len].to_vec(), sw::OK)
    }

    fn update_binary(&mut self, command: &Command) -> Vec<u8> {
        let (ef, offset) = match self.binary_target(command) {
            Ok(target) => target,
            Err(sw) => return answer(sw),
        };
        let allowed = self.allowed(self.efs[ef].update);
        let file = &mut self.efs[ef];
        if file.structure != Structure::Transparent {
            return answer(sw::COMMAND_INCOMPATIBLE);
        }
        if !allowed {
            return answer(sw::SECURITY_NOT_SATISFIED);
        }
        if command.data.is_empty() || offset + command.data.len() > file.data.len() {
            return answer(sw::WRONG_LENGTH);
        }
        file.data[offset..offset + command.data.len()].copy_from_slice(&command.data);
        answer(sw::OK)
    }

    fn read_record(&mut self, command: &Command) -> Vec<u8> {
        let (ef, record, record_len) = match self.record_target(command) {
            Ok(target) => target,
            Err(sw) => return answer(sw),
        };
        if !self.allowed(self.efs[ef].read) {
            return answer(sw::SECURITY_NOT_SATISFIED);
        }
        let wanted = command.le.map(usize::from).unwrap_or(0);
        if wanted != 0 && wanted != record_len {
            return answer(0x6C00 | record_len as u16);
        }
        let start = (record - 1) * record_len;
        answer_data(
            self.efs[ef].data[start..start + record_len].to_vec(),
            sw::OK,
        )
    }

    fn update_record(&mut self, command: &Command) -> Vec<u8> {
        let (ef, record, record_len) = match self.record_target(command) {
            Ok(target) => target,
            Err(sw) => return answer(sw),
        };
        if !self.allowed(self.efs[ef].update) {
            return answer(sw::SECURITY_NOT_SATISFIED);
        }
        if command.data.len() != record_len {
            return answer(sw::WRONG_LENGTH);
        }
        let start = (record - 1) * record_len;
        self.efs[ef].data[start..start + record_len].copy_from_slice(&command.data);
        answer(sw::OK)
    }

    fn verify(&mut self, command: &Command) -> Vec<u8> {
        if command.p1 != 0x00 || command.p2 != simflow_card::apdu::ADM1_KEY_REFERENCE {
            return answer(sw::INCORRECT_P1_P2);
        }
        if self.adm_tries_left == 0 {
            return answer(sw::AUTH_METHOD_BLOCKED);
        }
        if command.data.is_empty() {
            // A status query: how many tries are left.
            return answer(0x63C0 | u16::from(self.adm_tries_left));
        }
        if command.data.len() != 8 {
            return answer(sw::WRONG_LENGTH);
        }
        if command.data[..] == self.adm1[..] {
            self.adm_tries_left = ADM_TRIES;
            self.session.adm_verified = true;
            answer(sw::OK)
        } else {
            self.adm_tries_left -= 1;
            self.session.adm_verified = false;
            answer(0x63C0 | u16::from(self.adm_tries_left))
        }
    }

    /// K and OPc from the current application's key file, if it is configured for Milenage.
    fn milenage_keys(&self) -> Option<([u8; 16], [u8; 16])> {
        let app = self.session.current_app?;
        let name = if self.dfs[app].aid.is_some() {
            "ADF.USIM/EF.USIM_AUTH_KEY"
        } else {
            "DF.SYSTEM/EF.SIM_AUTH_KEY"
        };
        let file = &self.efs[self.find_ef(name)?];
        let cfg = file.data[0];
        if cfg & 0x0F != 0x04 {
            return None;
        }
        let k: [u8; 16] = file.data[1..17].try_into().ok()?;
        let op_or_opc: [u8; 16] = file.data[17..33].try_into().ok()?;
        let opc = if cfg & 0x10 != 0 {
            op_or_opc
        } else {
            milenage::opc_from_op(&k, &op_or_opc)
        };
        Some((k, opc))
    }

    fn authenticate(&mut self, command: &Command) -> Vec<u8> {
        let Some((k, opc)) = self.milenage_keys() else {
            return answer(sw::CONDITIONS_NOT_SATISFIED);
        };
        let data = &command.data;
        let rand: Option<[u8; 16]> = (data.first() == Some(&16))
            .then(|| data.get(1..17)?.try_into().ok())
            .flatten();
        let Some(rand) = rand else {
            return answer(sw::WRONG_DATA);
        };
        match command.p2 {
            0x80 => {
                let (sres, kc) = milenage::gsm_triplet(&k, &opc, &rand);
                let mut out = vec![4];
                out.extend(sres);
                out.push(8);
                out.extend(kc);
                self.respond_later(out)
            }
            0x81 => {
                let autn: Option<[u8; 16]> = (data.get(17) == Some(&16))
                    .then(|| data.get(18..34)?.try_into().ok())
                    .flatten();
                let Some(autn) = autn else {
                    return answer(sw::WRONG_DATA);
                };
                let Ok(result) = milenage::check_autn(&k, &opc, &rand, &autn) else {
                    return answer(sw::AUTH_MAC_FAILURE);
                };
                let sqn = result
                    .sqn
                    .iter()
                    .fold(0u64, |acc, &b| acc << 8 | u64::from(b));
                if sqn <= self.sqn_ms {
                    // Synchronisation failure: AUTS carries the card's SQN, proven by MAC-S.
                    let sqn_ms: [u8; 6] =
                        std::array::from_fn(|i| (self.sqn_ms >> (40 - 8 * i)) as u8);
                    let mut out = vec![0xDC, 14];
                    out.extend(milenage::compute_auts(&k, &opc, &rand, &sqn_ms));
                    return self.respond_later(out);
                }
                self.sqn_ms = sqn;
                let mut out = vec![0xDB, 8];
                out.extend(result.res);
                out.push(16);
                out.extend(result.ck);
                out.push(16);
                out.extend(result.ik);
                out.push(8);
                out.extend(milenage::kc_from_ck_ik(&result.ck, &result.ik));
                self.respond_later(out)
            }
            _ => answer(sw::INCORRECT_P1_P2),
        }
    }
}

/// What a SELECT lands on.
enum Selection {
    Df(usize),
    Ef(usize),
}

#[cfg(test)]
mod tests;
