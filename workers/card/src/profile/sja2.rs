//! The sysmoISIM-SJA2 (and SJA5) family: a programmable UICC with USIM and ISIM whose ICCID is
//! set at the factory.
//!
//! Its write script addresses files by short file identifier where TS 31.102 / TS 31.103 assign
//! one, and otherwise selects by FID only along the rules of TS 102 221 §8.4.1 (children of the
//! current DF, sibling DFs, the MF) or by AID, so it never walks back to the MF between files.
//! This module does not know how the script is sent or how its answers are judged beyond the
//! expected status words and read-back data it records.
//!
//! Facts about the card (pySim's SJA2 support and its export of a real SJA2):
//! - ADM1 (key reference 0A) is card-global and stays verified across application selection.
//! - Keys: DF.SYSTEM/EF.SIM_AUTH_KEY (3F00/A515/6F20) holds the 2G key (hard-linked as
//!   ADF.USIM/EF.USIM_AUTH_KEY_2G, used in GSM context); ADF.USIM/EF.USIM_AUTH_KEY (AF20) and
//!   ADF.ISIM/EF.ISIM_AUTH_KEY (AF20) the 3G keys. Each is cfg(1) ‖ K(16) ‖ OPc(16); cfg 0x14 is
//!   Milenage with OPc. ADM1 may read and update them (compact rule 03 1A 1A).
//! - DF.GSM's IMSI, SPN, ACC and PLMN files are the same files as ADF.USIM's (pySim writes
//!   EF.IMSI only under DF.GSM and the USIM sees it), but DF.GSM/EF.AD is a separate file on SJA2
//!   cards (pySim writes both copies; Osmocom OS#5830): [`Sja2Layout::gsm_copies`].
//! - EF.HPLMNwAcT is 60 bytes (twelve entries), EF.EHPLMN and EF.FPLMN 12 (four entries).
//! - ADF.ISIM: EF.IMPI (SFI 02, 128 bytes), EF.DOMAIN (SFI 05, 50 bytes), EF.IMPU (SFI 04,
//!   eight records of 128 bytes).
//! - EF.MSISDN (34-byte records) and EF.SMSP (52-byte records) live in DF.TELECOM.
//!
//! Which keys are proven how: the USIM key by the centre's AUTHENTICATE check; the 2G and ISIM
//! key files, which that check does not use, by reading them back under ADM1.

use super::builder::{
    Encoded, Evidence, IccidRead, ScriptBuilder, UsimLayout, check_card_and_verify_adm1,
    write_telecom, write_usim_files,
};
use super::{CardFamily, Challenge, FamilyOptions, Personalisation, ProfileError, Script, Step};
use crate::apdu::{BinaryTarget, Command};
use crate::ims::{ImsIdentities, encode_uri_tlv};

/// ATRs of the SJA2 and SJA5 models known to pySim.
const ATRS: [&str; 6] = [
    "3b9f96801f878031e073fe211b674a4c753034054ba9",
    "3b9f96801f878031e073fe211b674a4c7531330251b2",
    "3b9f96801f878031e073fe211b674a4c5275310451d5",
    "3b9f96801f878031e073fe211b674a357530350251cc",
    "3b9f96801f878031e073fe211b674a357530350265f8",
    "3b9f96801f878031e073fe211b674a357530350259c4",
];

/// The first SJA2 ATR, which the software SIM presents.
pub const SJA2_ATR: &str = ATRS[0];

/// The USIM AID of an SJA2 as its EF.DIR lists it.
pub const SJA2_USIM_AID: [u8; 16] = [
    0xA0, 0x00, 0x00, 0x00, 0x87, 0x10, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0x89, 0x07, 0x09, 0x00, 0x00,
];

/// The ISIM AID of an SJA2 as its EF.DIR lists it.
pub const SJA2_ISIM_AID: [u8; 16] = [
    0xA0, 0x00, 0x00, 0x00, 0x87, 0x10, 0x04, 0xFF, 0xFF, 0xFF, 0xFF, 0x89, 0x07, 0x09, 0x00, 0x00,
];

/// Key file configuration byte: bit 5 (0x10) = the file holds OPc, bits 4-1 = 4 = Milenage.
pub const AUTH_KEY_CFG_MILENAGE_OPC: u8 = 0x14;

/// A DF.GSM file an SJA2 batch keeps as a separate copy of the ADF.USIM file of the same FID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsmCopy {
    /// EF.AD (6FAD).
    Ad,
    /// EF.SPN (6F46).
    Spn,
    /// EF.ACC (6F78).
    Acc,
    /// EF.HPLMNwAcT (6F62).
    HplmnWithAct,
}

impl GsmCopy {
    fn target_and_fid(self) -> (&'static str, u16) {
        match self {
            GsmCopy::Ad => ("DF.GSM/EF.AD", 0x6FAD),
            GsmCopy::Spn => ("DF.GSM/EF.SPN", 0x6F46),
            GsmCopy::Acc => ("DF.GSM/EF.ACC", 0x6F78),
            GsmCopy::HplmnWithAct => ("DF.GSM/EF.HPLMNwAcT", 0x6F62),
        }
    }

    /// The content the copy gets, if the personalisation writes that file at all.
    fn content(self, enc: &Encoded) -> Option<&[u8]> {
        match self {
            GsmCopy::Ad => Some(&enc.ad),
            GsmCopy::Spn => enc.spn.as_ref().map(|spn| &spn[..]),
            GsmCopy::Acc => Some(&enc.acc),
            GsmCopy::HplmnWithAct => enc.hplmn_with_act.as_deref(),
        }
    }
}

/// Where the ISIM's files are and how large.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsimLayout {
    /// The full ISIM AID as listed in EF.DIR.
    pub isim_aid: Vec<u8>,
    pub impi_len: usize,
    pub domain_len: usize,
    pub impu_record_len: usize,
}

/// Layout facts of the card that the script needs and a variant might change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sja2Layout {
    pub usim: UsimLayout,
    /// The ISIM application, if the card has one.
    pub isim: Option<IsimLayout>,
    /// DF.GSM files that are separate copies on this batch and are written twice.
    pub gsm_copies: Vec<GsmCopy>,
}

impl Default for Sja2Layout {
    fn default() -> Self {
        Sja2Layout {
            usim: UsimLayout::sysmocom(&SJA2_USIM_AID, Some(12)),
            isim: Some(IsimLayout {
                isim_aid: SJA2_ISIM_AID.to_vec(),
                impi_len: 128,
                domain_len: 50,
                impu_record_len: 128,
            }),
            gsm_copies: vec![GsmCopy::Ad],
        }
    }
}

/// The sysmoISIM-SJA2 family.
#[derive(Debug, Clone, Default)]
pub struct SysmoIsimSja2 {
    pub layout: Sja2Layout,
    pub options: FamilyOptions,
}

impl SysmoIsimSja2 {
    /// The family name scripts carry.
    pub const NAME: &'static str = "sysmoISIM-SJA2";
}

/// cfg ‖ K ‖ OPc, the content of every SJA2 key file.
fn auth_key_file(p: &Personalisation) -> Vec<u8> {
    let mut content = Vec::with_capacity(33);
    content.push(AUTH_KEY_CFG_MILENAGE_OPC);
    content.extend_from_slice(&p.ki);
    content.extend_from_slice(&p.opc);
    content
}

/// The ISIM: its key file (read back), then the IMS identities by SFI, then their read-backs.
fn write_isim(
    b: &mut ScriptBuilder,
    isim: &IsimLayout,
    p: &Personalisation,
    enc: &Encoded,
    key: &[u8],
) -> Result<(), ProfileError> {
    let ids = ImsIdentities::derive(&p.imsi, enc.mnc_len)?;
    let impi = encode_uri_tlv("IMPI", &ids.impi, isim.impi_len)?;
    let domain = encode_uri_tlv("DOMAIN", &ids.domain, isim.domain_len)?;
    let impu = encode_uri_tlv("IMPU", &ids.impu, isim.impu_record_len)?;
    b.select_application("ADF.ISIM", &isim.isim_aid);
    b.write_key_file("ADF.ISIM/EF.ISIM_AUTH_KEY", 0xAF20, key, true);
    let binaries = [
        ("ADF.ISIM/EF.IMPI", 0x02, &impi),
        ("ADF.ISIM/EF.DOMAIN", 0x05, &domain),
    ];
    for (target, sfi, data) in binaries {
        b.update(
            target,
            Command::update_binary(BinaryTarget::Sfi(sfi), 0, data),
            false,
        );
    }
    b.update(
        "ADF.ISIM/EF.IMPU",
        Command::update_record(Some(0x04), 1, &impu),
        false,
    );
    for (target, sfi, data) in binaries {
        b.read_back(
            target,
            Command::read_binary(BinaryTarget::Sfi(sfi), 0, data.len() as u8),
            data,
            Evidence::Unique,
        );
    }
    b.read_back(
        "ADF.ISIM/EF.IMPU",
        Command::read_record(Some(0x04), 1, impu.len() as u8),
        &impu,
        Evidence::Unique,
    );
    Ok(())
}

impl CardFamily for SysmoIsimSja2 {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn matches_atr(&self, atr: &[u8]) -> bool {
        let atr = hex::encode(atr);
        ATRS.contains(&atr.as_str())
    }

    fn identify_script(&self) -> Vec<Step> {
        super::identify_by_sfi()
    }

    fn build_write_script(
        &self,
        p: &Personalisation,
        challenge: &Challenge,
    ) -> Result<Script, ProfileError> {
        let layout = &self.layout;
        let enc = Encoded::new(p, &layout.usim, &self.options)?;
        let key = auth_key_file(p);
        let mut b = ScriptBuilder::default();

        // 1. The right card (EF.ICCID by SFI), then ADM1.
        check_card_and_verify_adm1(&mut b, p, &enc, IccidRead::BySfi);
        // 2. The 2G key in DF.SYSTEM, read back (no AUTHENTICATE below uses it).
        b.select("DF.SYSTEM", 0xA515);
        b.write_key_file("DF.SYSTEM/EF.SIM_AUTH_KEY", 0x6F20, &key, true);
        // 3. DF.TELECOM is a sibling of DF.SYSTEM: selectable directly (TS 102 221 §8.4.1).
        write_telecom(&mut b, &enc);
        // 4. DF.GSM's separate copies (another sibling).
        let copies: Vec<(GsmCopy, &[u8])> = layout
            .gsm_copies
            .iter()
            .filter_map(|copy| copy.content(&enc).map(|data| (*copy, data)))
            .collect();
        if !copies.is_empty() {
            b.select("DF.GSM", 0x7F20);
            for (copy, data) in copies {
                let (target, fid) = copy.target_and_fid();
                b.select(target, fid);
                b.write_current_file(target, data, Evidence::Shared);
            }
        }
        // 5. The ISIM, when the card has one.
        if let Some(isim) = &layout.isim {
            write_isim(&mut b, isim, p, &enc, &key)?;
        }
        // 6. ADF.USIM: the 3G key, then the subscriber files with EF.IMSI last of all writes.
        b.select_application("ADF.USIM", &layout.usim.usim_aid);
        b.write_key_file("ADF.USIM/EF.USIM_AUTH_KEY", 0xAF20, &key, false);
        let (commit_step, marker_step) = write_usim_files(&mut b, &enc);
        // 7. Prove the key.
        b.authenticate("ADF.USIM", challenge);
        Ok(b.finish(self.name(), p, commit_step, marker_step))
    }
}
