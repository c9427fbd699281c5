//! The sysmoUSIM-SJS1's file system, from pySim's export of a real card
//! (`tests/card_sanitizer/card_backup_3b9f…01a5_…script` in osmocom/pysim) and pySim's SJS1
//! support: keys in DF.GSM (EF.Ki 00FF, EF.OPc 00F7), ADF.USIM (FID 7FFF) listing DF.GSM's
//! subscriber files as links (their FCPs name the DF.GSM path), no ISIM, no EF.EHPLMN, no SFI on
//! EF.ICCID, and blanks shipped with four FPLMN entries.
//!
//! What the export does not show and we chose: ADF.USIM's EF.ARR has the SJA2's records, DF.GSM
//! and DF.TELECOM share the EF.ARR we give the SJA2's, and ADM1 may read and update EF.Ki and
//! EF.OPc (compact rule 03 1A 1A, as on the SJA2's key files).

use super::sja2::{CLASSIC_ARR, UNUSED_PLMN_WITH_ACT, USIM_ARR};
use super::*;
use crate::card::auth::KeySource;
use simflow_card::profile::{OPC_FILE_HOLDS_OPC, SJS1_USIM_AID, SysmoUsimSjs1};

pub(crate) const NAME: &str = SysmoUsimSjs1::NAME;

/// This family's table.
pub(crate) const TABLE: Table = Table::new(NAME, build, factory_defaults, key_file_contents);

use Sec::{Compact, Rec};
use Shape::{C, L, T};

const ADM_READ_UPDATE: &[u8] = &[0x03, 0x1A, 0x1A];

const MF_ARR: &[&str] = &[
    "800101a40683010a95010880010690008001609700",
    "80010190008001029700800118a40683010a950108",
    "800101a40683010195010880011aa40683010a950108",
    "800101900080011aa40683010a950108",
    "8001019000800102a406830101950108800118a40683010a950108",
];

const MF_FILES: &[Spec] = &[
    ef("EF.DIR", 0x2F00, L(38, 2), Some(0x1E), Rec(4)).with(Content::Records(&[
        "61194f10a0000000871002ffffffff890709000050055553696d31",
    ])),
    ef("EF.ICCID", 0x2FE2, T(10), None, Rec(4)),
    ef("EF.PL", 0x2F05, T(10), Some(0x05), Rec(5)),
    ef("EF.ARR", 0x2F06, L(110, 5), None, Rec(4)).with(Content::Records(MF_ARR)),
];

const TELECOM_FILES: &[Spec] = &[
    ef("EF.ARR", 0x6F06, L(110, 9), None, Rec(6)).with(Content::Records(CLASSIC_ARR)),
    ef("EF.MSISDN", 0x6F40, L(34, 2), None, Rec(5)),
    ef("EF.SMSP", 0x6F42, L(52, 2), None, Rec(5)),
    ef("EF.SMSS", 0x6F43, T(2), None, Rec(5)),
];

const GSM_FILES: &[Spec] = &[
    ef("EF.ARR", 0x6F06, L(110, 9), None, Rec(6)).with(Content::Records(CLASSIC_ARR)),
    ef("EF.LP", 0x6F05, T(5), None, Rec(2)),
    ef("EF.IMSI", 0x6F07, T(9), None, Rec(3)),
    ef("EF.Kc", 0x6F20, T(9), None, Rec(4)).with(Content::Hex("ffffffffffffffff07")),
    ef("EF.PLMNsel", 0x6F30, T(60), None, Rec(4)),
    ef("EF.HPPLMN", 0x6F31, T(1), None, Rec(7)).with(Content::Hex("05")),
    ef("EF.ACMmax", 0x6F37, T(3), None, Rec(4)).with(Content::Fill(0x00)),
    ef("EF.SST", 0x6F38, T(15), None, Rec(7)).with(Content::Hex("ff3fffff3f003f1ff00c00c0f00000")),
    ef("EF.ACM", 0x6F39, C(3, 20), None, Rec(5)).with(Content::Fill(0x00)),
    ef("EF.GID1", 0x6F3E, T(10), None, Rec(7)),
    ef("EF.GID2", 0x6F3F, T(10), None, Rec(7)),
    ef("EF.SPN", 0x6F46, T(17), None, Rec(6)),
    ef("EF.PUCT", 0x6F41, T(5), None, Rec(4)).with(Content::Hex("ffffff0000")),
    ef("EF.CBMI", 0x6F45, T(10), None, Rec(4)),
    ef("EF.ACC", 0x6F78, T(2), None, Rec(7)),
    ef("EF.FPLMN", 0x6F7B, T(12), None, Rec(4)),
    ef("EF.LOCI", 0x6F7E, T(11), None, Rec(4)).with(Content::Hex("ffffffffffffff0000ff01")),
    ef("EF.AD", 0x6FAD, T(4), None, Rec(6)),
    ef("EF.Phase", 0x6FAE, T(1), None, Rec(6)).with(Content::Hex("03")),
    ef("EF.PLMNwAcT", 0x6F60, T(60), None, Rec(4)).with(UNUSED_PLMN_WITH_ACT),
    ef("EF.OPLMNwAcT", 0x6F61, T(60), None, Rec(7)).with(UNUSED_PLMN_WITH_ACT),
    ef("EF.HPLMNwAcT", 0x6F62, T(60), None, Rec(7)).with(UNUSED_PLMN_WITH_ACT),
    ef("EF.Ki", 0x00FF, T(16), None, Compact(ADM_READ_UPDATE)),
    ef("EF.OPc", 0x00F7, T(17), None, Compact(ADM_READ_UPDATE)),
];

const USIM_FILES: &[Spec] = &[
    ef("EF.ARR", 0x6F06, L(110, 12), None, Rec(6)).with(Content::Records(USIM_ARR)),
    ef("EF.LI", 0x6F05, T(10), Some(0x02), Rec(2)),
    ef("EF.Keys", 0x6F08, T(33), Some(0x08), Rec(4)).with(Content::Hex("07")),
    ef("EF.KeysPS", 0x6F09, T(33), Some(0x09), Rec(4)).with(Content::Hex("07")),
    ef("EF.UST", 0x6F38, T(9), Some(0x04), Rec(3)).with(Content::Hex("9e6b1dfc67f6580000")),
];

/// ADF.USIM's view of DF.GSM's subscriber files.
const USIM_LINKS: &[Link] = &[
    usim_link("EF.IMSI", 0x6F07, Some(0x07), 3, "DF.GSM/EF.IMSI"),
    usim_link("EF.PLMNwAcT", 0x6F60, Some(0x0A), 3, "DF.GSM/EF.PLMNwAcT"),
    usim_link("EF.HPPLMN", 0x6F31, Some(0x12), 3, "DF.GSM/EF.HPPLMN"),
    usim_link("EF.ACMmax", 0x6F37, None, 4, "DF.GSM/EF.ACMmax"),
    usim_link("EF.ACM", 0x6F39, Some(0x1C), 5, "DF.GSM/EF.ACM"),
    usim_link("EF.GID1", 0x6F3E, None, 3, "DF.GSM/EF.GID1"),
    usim_link("EF.GID2", 0x6F3F, None, 3, "DF.GSM/EF.GID2"),
    usim_link("EF.SPN", 0x6F46, None, 6, "DF.GSM/EF.SPN"),
    usim_link("EF.PUCT", 0x6F41, None, 4, "DF.GSM/EF.PUCT"),
    usim_link("EF.CBMI", 0x6F45, None, 4, "DF.GSM/EF.CBMI"),
    usim_link("EF.ACC", 0x6F78, Some(0x06), 3, "DF.GSM/EF.ACC"),
    usim_link("EF.FPLMN", 0x6F7B, Some(0x0D), 4, "DF.GSM/EF.FPLMN"),
    usim_link("EF.LOCI", 0x6F7E, Some(0x0B), 4, "DF.GSM/EF.LOCI"),
    usim_link("EF.AD", 0x6FAD, Some(0x03), 6, "DF.GSM/EF.AD"),
    usim_link("EF.OPLMNwAcT", 0x6F61, Some(0x11), 3, "DF.GSM/EF.OPLMNwAcT"),
    usim_link("EF.HPLMNwAcT", 0x6F62, Some(0x13), 3, "DF.GSM/EF.HPLMNwAcT"),
];

const fn usim_link(
    label: &'static str,
    fid: u16,
    sfi: Option<u8>,
    record: u8,
    target: &'static str,
) -> Link {
    Link {
        label,
        fid,
        sfi,
        sec: Rec(record),
        target,
    }
}

/// The files, without factory state.
pub(crate) fn build(_image: &CardImage) -> Built {
    let mut fs = FileSystem::default();
    let mf = fs.add_df(None, "MF", 0x3F00, None, FileSecurity::Compact(vec![0x00]));
    super::add_files(&mut fs, mf, MF_FILES);
    super::add_classic_df(&mut fs, "DF.TELECOM", 0x7F10, TELECOM_FILES);
    super::add_classic_df(&mut fs, "DF.GSM", 0x7F20, GSM_FILES);
    let usim = fs.add_df(
        Some(MF),
        "ADF.USIM",
        0x7FFF,
        Some(SJS1_USIM_AID.to_vec()),
        FileSecurity::Compact(vec![0x00]),
    );
    super::add_files(&mut fs, usim, USIM_FILES);
    super::add_links(&mut fs, usim, USIM_LINKS, &[]);
    let keys = KeySource::KiAndOpc {
        ki: "DF.GSM/EF.Ki",
        opc: "DF.GSM/EF.OPc",
    };
    Built {
        fs,
        family: FamilyModel {
            name: NAME,
            usim_3g: keys.clone(),
            gsm: keys,
            isim_3g: None,
            key_config_files: &["DF.GSM/EF.OPc"],
        },
    }
}

/// SJS1 blanks: the four FPLMN entries a real one shipped with (262-10, -20, -30, -70, as
/// pySim-read shows them) and EF.OPc flagged as OPc.
pub(crate) fn factory_defaults() -> FactoryDefaults {
    FactoryDefaults {
        ehplmn: Vec::new(),
        fplmn: ["26210", "26220", "26230", "26270"]
            .into_iter()
            .map(String::from)
            .collect(),
        key_config: OPC_FILE_HOLDS_OPC,
    }
}

/// EF.Ki holds K; EF.OPc the OPc flag and OPc.
pub(crate) fn key_file_contents(ki: &[u8; 16], opc: &[u8; 16]) -> KeyContents {
    let mut opc_file = vec![OPC_FILE_HOLDS_OPC];
    opc_file.extend(opc);
    vec![("DF.GSM/EF.Ki", ki.to_vec()), ("DF.GSM/EF.OPc", opc_file)]
}
