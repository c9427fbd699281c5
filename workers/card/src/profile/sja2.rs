//! The sysmoISIM-SJA2 (and SJA5) family: a programmable UICC whose ICCID is set at the factory.
//!
//! Its write script addresses files by short file identifier where TS 31.102 / TS 102 221 assign
//! one, and otherwise selects by FID only along the rules of TS 102 221 §8.4.1 (children of the
//! current DF, sibling DFs, the MF), so it never walks back to the MF between files.
//! This module does not know how the script is sent or how its answers are judged beyond the
//! expected status words and read-back data it records.
//!
//! Assumptions about the card, from pySim's SJA2 support:
//! - ADM1 (key reference 0A) is card-global and stays verified across application selection.
//! - EF.SIM_AUTH_KEY (3F00/A515/6F20) holds the 2G key (pySim: hard-linked as
//!   ADF.USIM/EF.USIM_AUTH_KEY_2G, used for AUTHENTICATE in GSM context) and EF.USIM_AUTH_KEY
//!   (ADF.USIM/AF20) the 3G key; both are cfg(1) ‖ K(16) ‖ OPc(16), and cfg 0x14 decodes in
//!   pySim as Milenage, use OPc, SRES derivation function 1. We write both with the same K/OPc.
//! - DF.GSM's IMSI, SPN, ACC and PLMN files are the same files as ADF.USIM's (pySim writes
//!   EF.IMSI only under DF.GSM and the USIM sees it), so writing them once under ADF.USIM serves
//!   both applications.
//! - EF.MSISDN (34-byte records) and EF.SMSP (52-byte records) live in DF.TELECOM.

use super::{CardFamily, Challenge, Personalisation, ProfileError, Script, Step, StepKind};
use crate::apdu::{BinaryTarget, Command, sw};
use crate::encoding;

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

/// Key file configuration byte: bit 5 (0x10) = the file holds OPc, bits 4-1 = 4 = Milenage.
pub const AUTH_KEY_CFG_MILENAGE_OPC: u8 = 0x14;

/// Layout facts of the card that the script needs and a variant might change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sja2Layout {
    /// The full USIM AID as listed in EF.DIR.
    pub usim_aid: Vec<u8>,
    pub msisdn_record_len: usize,
    pub smsp_record_len: usize,
    /// EF.SPN display condition byte.
    pub spn_display_condition: u8,
    /// Access technology bits of the HPLMNwAcT entry (FFFF: all, as pySim writes it).
    pub hplmn_access_technologies: u16,
}

impl Default for Sja2Layout {
    fn default() -> Self {
        Sja2Layout {
            usim_aid: vec![
                0xA0, 0x00, 0x00, 0x00, 0x87, 0x10, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0x89, 0x07, 0x09,
                0x00, 0x00,
            ],
            msisdn_record_len: 34,
            smsp_record_len: 52,
            spn_display_condition: 0x01,
            hplmn_access_technologies: 0xFFFF,
        }
    }
}

/// The sysmoISIM-SJA2 family.
#[derive(Debug, Clone, Default)]
pub struct SysmoIsimSja2 {
    pub layout: Sja2Layout,
}

/// Collects steps with consecutive indices.
struct ScriptBuilder {
    steps: Vec<Step>,
}

impl ScriptBuilder {
    fn push(
        &mut self,
        kind: StepKind,
        target: &str,
        command: Command,
        expect_data: Option<Vec<u8>>,
        secret: bool,
    ) -> u16 {
        let index = self.steps.len() as u16;
        self.steps.push(Step {
            index,
            kind,
            target: target.to_string(),
            apdu: command.to_bytes(),
            expect_sw: sw::OK,
            expect_data,
            secret,
        });
        index
    }

    fn select(&mut self, target: &str, fid: u16) {
        self.push(
            StepKind::Select,
            target,
            Command::select_by_fid_quiet(fid),
            None,
            false,
        );
    }

    fn update(&mut self, target: &str, command: Command) -> u16 {
        self.push(StepKind::Update, target, command, None, false)
    }

    fn read_back(&mut self, target: &str, command: Command, expected: &[u8]) -> u16 {
        self.push(
            StepKind::ReadBack,
            target,
            command,
            Some(expected.to_vec()),
            false,
        )
    }
}

fn auth_key_file(p: &Personalisation) -> Vec<u8> {
    let mut content = Vec::with_capacity(33);
    content.push(AUTH_KEY_CFG_MILENAGE_OPC);
    content.extend_from_slice(&p.ki);
    content.extend_from_slice(&p.opc);
    content
}

impl CardFamily for SysmoIsimSja2 {
    fn name(&self) -> &'static str {
        "sysmoISIM-SJA2"
    }

    fn matches_atr(&self, atr: &[u8]) -> bool {
        let atr = hex::encode(atr);
        ATRS.contains(&atr.as_str())
    }

    fn build_write_script(
        &self,
        p: &Personalisation,
        challenge: &Challenge,
    ) -> Result<Script, ProfileError> {
        let layout = &self.layout;
        encoding::validate_iccid(&p.iccid)?;
        let iccid = encoding::encode_iccid(&p.iccid)?;
        let imsi = encoding::encode_imsi(&p.imsi)?;
        let acc = encoding::encode_acc_for_imsi(&p.imsi)?;
        let msisdn = encoding::encode_msisdn_record("", &p.msisdn, layout.msisdn_record_len)?;
        let smsp = p
            .smsp
            .as_deref()
            .map(|sc| encoding::encode_smsp_record(sc, layout.smsp_record_len))
            .transpose()?;
        let spn = p
            .spn
            .as_deref()
            .map(|name| encoding::encode_spn(name, layout.spn_display_condition))
            .transpose()?;
        let (ad, hplmn) = match &p.mcc_mnc {
            Some((mcc, mnc)) => {
                let hplmn =
                    encoding::encode_plmn_with_act(mcc, mnc, layout.hplmn_access_technologies)?;
                if !p.imsi.starts_with(&format!("{mcc}{mnc}")) {
                    return Err(ProfileError::ImsiOutsideHomePlmn {
                        mcc: mcc.clone(),
                        mnc: mnc.clone(),
                    });
                }
                (encoding::encode_ad(mnc.len())?, Some(hplmn))
            }
            None => (encoding::encode_ad(2)?, None),
        };

        let mut b = ScriptBuilder {
            steps: Vec::with_capacity(30),
        };

        // 1. Make sure we are at the MF and talking to the right card, before any ADM try.
        b.select("MF", 0x3F00);
        b.read_back(
            "MF/EF.ICCID",
            Command::read_binary(BinaryTarget::Sfi(0x02), 0, 10),
            &iccid,
        );
        b.push(
            StepKind::Verify,
            "ADM1",
            Command::verify_adm1(p.adm1.bytes()),
            None,
            true,
        );

        // 2. The 2G key file in DF.SYSTEM.
        b.select("DF.SYSTEM", 0xA515);
        b.select("DF.SYSTEM/EF.SIM_AUTH_KEY", 0x6F20);
        b.push(
            StepKind::Update,
            "DF.SYSTEM/EF.SIM_AUTH_KEY",
            Command::update_binary(BinaryTarget::Current, 0, &auth_key_file(p)),
            None,
            true,
        );

        // 3. DF.TELECOM is a sibling of DF.SYSTEM: selectable directly (TS 102 221 §8.4.1).
        b.select("DF.TELECOM", 0x7F10);
        b.select("DF.TELECOM/EF.MSISDN", 0x6F40);
        b.update(
            "DF.TELECOM/EF.MSISDN",
            Command::update_record(None, 1, &msisdn),
        );
        b.read_back(
            "DF.TELECOM/EF.MSISDN",
            Command::read_record(None, 1, msisdn.len() as u8),
            &msisdn,
        );
        if let Some(smsp) = &smsp {
            b.select("DF.TELECOM/EF.SMSP", 0x6F42);
            b.update("DF.TELECOM/EF.SMSP", Command::update_record(None, 1, smsp));
            b.read_back(
                "DF.TELECOM/EF.SMSP",
                Command::read_record(None, 1, smsp.len() as u8),
                smsp,
            );
        }

        // 4. ADF.USIM: the 3G key, then the files without SFI, then the SFI files.
        b.push(
            StepKind::Select,
            "ADF.USIM",
            Command::select_by_aid_quiet(&layout.usim_aid),
            None,
            false,
        );
        b.select("ADF.USIM/EF.USIM_AUTH_KEY", 0xAF20);
        b.push(
            StepKind::Update,
            "ADF.USIM/EF.USIM_AUTH_KEY",
            Command::update_binary(BinaryTarget::Current, 0, &auth_key_file(p)),
            None,
            true,
        );
        if let Some(spn) = &spn {
            b.select("ADF.USIM/EF.SPN", 0x6F46);
            b.update(
                "ADF.USIM/EF.SPN",
                Command::update_binary(BinaryTarget::Current, 0, spn),
            );
            b.read_back(
                "ADF.USIM/EF.SPN",
                Command::read_binary(BinaryTarget::Current, 0, spn.len() as u8),
                spn,
            );
        }
        b.update(
            "ADF.USIM/EF.AD",
            Command::update_binary(BinaryTarget::Sfi(0x03), 0, &ad),
        );
        b.update(
            "ADF.USIM/EF.ACC",
            Command::update_binary(BinaryTarget::Sfi(0x06), 0, &acc),
        );
        if let Some(hplmn) = &hplmn {
            b.update(
                "ADF.USIM/EF.HPLMNwAcT",
                Command::update_binary(BinaryTarget::Sfi(0x13), 0, hplmn),
            );
        }

        // 5. The commit: EF.IMSI, last of all writes. From here on the card is "written".
        let commit_step = b.update(
            "ADF.USIM/EF.IMSI",
            Command::update_binary(BinaryTarget::Sfi(0x07), 0, &imsi),
        );

        // 6. Read back the SFI files (no SELECT needed) and prove the key.
        b.read_back(
            "ADF.USIM/EF.AD",
            Command::read_binary(BinaryTarget::Sfi(0x03), 0, ad.len() as u8),
            &ad,
        );
        b.read_back(
            "ADF.USIM/EF.ACC",
            Command::read_binary(BinaryTarget::Sfi(0x06), 0, acc.len() as u8),
            &acc,
        );
        if let Some(hplmn) = &hplmn {
            b.read_back(
                "ADF.USIM/EF.HPLMNwAcT",
                Command::read_binary(BinaryTarget::Sfi(0x13), 0, hplmn.len() as u8),
                hplmn,
            );
        }
        let marker_step = b.read_back(
            "ADF.USIM/EF.IMSI",
            Command::read_binary(BinaryTarget::Sfi(0x07), 0, imsi.len() as u8),
            &imsi,
        );
        b.push(
            StepKind::Authenticate,
            "ADF.USIM",
            Command::authenticate_3g(&challenge.rand, &challenge.autn),
            None,
            false,
        );

        Ok(Script {
            family: self.name().to_string(),
            iccid: p.iccid.clone(),
            steps: b.steps,
            commit_step,
            marker_step,
        })
    }
}
