//! The sysmoUSIM-SJS1 family: an older programmable 3G UICC with a USIM and no ISIM.
//!
//! What differs from the SJA2, from pySim's `SysmoUSIMSJS1` (legacy `cards.py` and
//! `sysmocom_sjs1.py`) and its export of a real SJS1:
//! - The keys live in DF.GSM, shared with ADF.USIM: EF.Ki (7F20/00FF, K, 16 bytes) and EF.OPc
//!   (7F20/00F7, 17 bytes: 01 = OPc follows, 00 = OP follows). Milenage serves both contexts.
//! - ADF.USIM's subscriber files are links to DF.GSM's (their FCPs name the DF.GSM path), so
//!   writing them once by SFI in ADF.USIM serves both applications; there is no separate copy.
//! - EF.ICCID has no short file identifier (its FCP says 88 00), so the card is checked and
//!   identified by SELECT, not by SFI.
//! - No EF.EHPLMN (USIM service 71 is off); blanks ship with vendor entries in EF.FPLMN.
//! - ADM1 is key reference 0A, as on the SJA2 (pySim verifies both the same way).
//!
//! This module only builds the script; the software SIM models the card.

use super::builder::{
    Encoded, IccidRead, ScriptBuilder, UsimLayout, check_card_and_verify_adm1, write_telecom,
    write_usim_files,
};
use super::{CardFamily, Challenge, FamilyOptions, Personalisation, ProfileError, Script};

/// The ATR of the sysmoUSIM-SJS1 known to pySim.
pub const SJS1_ATR: &str = "3b9f96801fc78031a073be21136743200718000001a5";

/// The USIM AID of an SJS1 as its EF.DIR lists it.
pub const SJS1_USIM_AID: [u8; 16] = [
    0xA0, 0x00, 0x00, 0x00, 0x87, 0x10, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0x89, 0x07, 0x09, 0x00, 0x00,
];

/// First byte of EF.OPc: the 16 bytes that follow are OPc (not OP).
pub const OPC_FILE_HOLDS_OPC: u8 = 0x01;

/// The sysmoUSIM-SJS1 family.
#[derive(Debug, Clone)]
pub struct SysmoUsimSjs1 {
    pub layout: UsimLayout,
    pub options: FamilyOptions,
}

impl Default for SysmoUsimSjs1 {
    fn default() -> Self {
        SysmoUsimSjs1 {
            layout: UsimLayout::sysmocom(&SJS1_USIM_AID, None),
            options: FamilyOptions::default(),
        }
    }
}

impl SysmoUsimSjs1 {
    /// The family name scripts carry.
    pub const NAME: &'static str = "sysmoUSIM-SJS1";
}

impl CardFamily for SysmoUsimSjs1 {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn matches_atr(&self, atr: &[u8]) -> bool {
        hex::encode(atr) == SJS1_ATR
    }

    fn build_write_script(
        &self,
        p: &Personalisation,
        challenge: &Challenge,
    ) -> Result<Script, ProfileError> {
        let enc = Encoded::new(p, &self.layout, &self.options)?;
        let mut b = ScriptBuilder::default();

        // 1. The right card (EF.ICCID by SELECT: no SFI on this card), then ADM1.
        check_card_and_verify_adm1(&mut b, p, &enc, IccidRead::BySelect);
        // 2. DF.TELECOM.
        write_telecom(&mut b, &enc);
        // 3. The keys in DF.GSM (a sibling of DF.TELECOM); the AUTHENTICATE below proves both.
        b.select("DF.GSM", 0x7F20);
        b.write_key_file("DF.GSM/EF.Ki", 0x00FF, &p.ki, false);
        let mut opc_file = Vec::with_capacity(17);
        opc_file.push(OPC_FILE_HOLDS_OPC);
        opc_file.extend_from_slice(&p.opc);
        b.write_key_file("DF.GSM/EF.OPc", 0x00F7, &opc_file, false);
        // 4. ADF.USIM: the subscriber files (links to DF.GSM's), EF.IMSI last of all writes.
        b.select_application("ADF.USIM", &self.layout.usim_aid);
        let (commit_step, marker_step) = write_usim_files(&mut b, &enc);
        // 5. Prove the keys.
        b.authenticate("ADF.USIM", challenge);
        Ok(b.finish(self.name(), p, commit_step, marker_step))
    }
}
