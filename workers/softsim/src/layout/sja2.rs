//! The sysmoISIM-SJA2's file system, from pySim's export of a real card
//! (`tests/card_sanitizer/card_backup_3b9f…4ba9_…script` in osmocom/pysim): FIDs, SFIs, sizes,
//! record structures, EF.ARR records and the references to them, and shipped contents.
//!
//! What the export does not show and we chose:
//! - DF.GSM and DF.TELECOM reference an EF.ARR 6F06 that the export does not list. Ours has the
//!   ADF.USIM's records, except that the two that need PIN2 for updates (5 and 7) also accept
//!   ADM1 (an OR template): pySim writes DF.TELECOM/EF.MSISDN with only ADM1 verified.
//! - DF.GSM's subscriber files are links to ADF.USIM's (the EF.IMSI pySim writes under DF.GSM
//!   is what the USIM reads), except those the factory state names as separate copies
//!   (EF.AD by default: Osmocom OS#5830).
//! - The files listed are those a handset, pySim-read and our script use, not all 300.

use super::*;
use crate::card::auth::KeySource;
use simflow_card::profile::{
    AUTH_KEY_CFG_MILENAGE_OPC, SJA2_ISIM_AID, SJA2_USIM_AID, SysmoIsimSja2,
};

pub(crate) const NAME: &str = SysmoIsimSja2::NAME;

/// This family's table.
pub(crate) const TABLE: Table = Table::new(NAME, build, factory_defaults, key_file_contents);

use Sec::{Compact, Rec};
use Shape::{C, L, T};

/// Compact rules of the sysmocom key files: read and update with ADM1.
const ADM_READ_UPDATE: &[u8] = &[0x03, 0x1A, 0x1A];
/// Compact rule of a DF that states nothing.
const DF_OPEN: &[u8] = &[0x00];

/// A sysmocom key file: cfg ‖ K ‖ OP(c), read and updated with ADM1.
const fn key_file(label: &'static str, fid: u16) -> Spec {
    ef(label, fid, T(33), None, Compact(ADM_READ_UPDATE))
}

/// sysmocom's SQN configuration file (AF30) as a real SJA2 ships it.
const fn sqn_file(label: &'static str) -> Spec {
    ef(label, 0xAF30, T(206), None, Compact(ADM_READ_UPDATE))
        .with(Content::Hex("d50300020000000000020000"))
}

const MF_ARR: &[&str] = &[
    "800101a40683010a950108800106900080016097008401d4a40683010a950108",
    "80010190008001029700800118a40683010a9501088401d4a40683010a950108",
    "800101a40683010195010880011aa40683010a9501088401d4a40683010a950108",
    "800101900080011aa40683010a9501088401d4a40683010a950108",
    "8001019000800102a406830101950108800118a40683010a9501088401d4a40683010a950108",
];

/// ADF.USIM's EF.ARR (records 10-12 unused).
pub(crate) const USIM_ARR: &[&str] = &[
    "8001079000800160a4068301019501088401d4a40683010a950108",
    "8001019000800102a406830101950108800118a40683010a9501088401d4a40683010a950108",
    "800101a40683010195010880011aa40683010a9501088401d4a40683010a950108",
    "800103a406830101950108800118a40683010a9501088401d4a40683010a950108",
    "840132a406830101950108800101a406830101950108800102a406830181950108800118a40683010a95010880012097008401d4a40683010a950108",
    "800101900080011aa40683010a9501088401d4a40683010a950108",
    "800101a406830101950108800102a406830181950108800118a40683010a9501088401d4a40683010a950108",
    "840132a406830101950108800103a406830101950108800118a40683010a9501088401d4a40683010a950108",
    "800101a40683010a950108800102a40683010a950108800110a40683010a950108800108a40683010a950108",
];

/// Our EF.ARR for DF.GSM and DF.TELECOM: ADF.USIM's, with ADM1 as an alternative to PIN2.
pub(crate) const CLASSIC_ARR: &[&str] = &[
    "8001079000800160a4068301019501088401d4a40683010a950108",
    "8001019000800102a406830101950108800118a40683010a9501088401d4a40683010a950108",
    "800101a40683010195010880011aa40683010a9501088401d4a40683010a950108",
    "800103a406830101950108800118a40683010a9501088401d4a40683010a950108",
    "840132a406830101950108800101a406830101950108800102a010a406830181950108a40683010a950108800118a40683010a95010880012097008401d4a40683010a950108",
    "800101900080011aa40683010a9501088401d4a40683010a950108",
    "800101a406830101950108800102a010a406830181950108a40683010a950108800118a40683010a9501088401d4a40683010a950108",
    "840132a406830101950108800103a406830101950108800118a40683010a9501088401d4a40683010a950108",
    "800101a40683010a950108800102a40683010a950108800110a40683010a950108800108a40683010a950108",
];

const ISIM_ARR: &[&str] = &[
    "800103a406830101950108800118a40683010a9501088401d4a40683010a950108",
    "800101900080011aa40683010a9501088401d4a40683010a950108",
    "800101a40683010195010880011aa40683010a9501088401d4a40683010a950108",
    "800103a406830101950108800118a40683010a9501088401d4a40683010a950108",
];

/// Unused entries of a PLMN-with-AcT file, as blanks ship them.
pub(crate) const UNUSED_PLMN_WITH_ACT: Content = Content::Repeat("ffffff0000");

const MF_FILES: &[Spec] = &[
    ef("EF.DIR", 0x2F00, L(43, 8), Some(0x1E), Rec(4)).with(Content::Records(&[
        "61294f10a0000000871002ffffffff890709000050055553696d31730ea00c80011781025f608203454150",
        "61194f10a0000000871004ffffffff890709000050054953696d31",
    ])),
    ef("EF.ICCID", 0x2FE2, T(10), Some(0x02), Rec(2)),
    ef("EF.PL", 0x2F05, T(10), Some(0x05), Rec(5)),
    ef("EF.ARR", 0x2F06, L(110, 5), Some(0x06), Rec(4)).with(Content::Records(MF_ARR)),
    ef("EF.UMPC", 0x2F08, T(5), Some(0x08), Rec(4)).with(Content::Hex("3cff02ffff")),
];

const TELECOM_FILES: &[Spec] = &[
    ef("EF.ARR", 0x6F06, L(110, 9), None, Rec(6)).with(Content::Records(CLASSIC_ARR)),
    ef("EF.ADN", 0x6F3A, L(34, 250), None, Rec(3)),
    ef("EF.MSISDN", 0x6F40, L(34, 6), None, Rec(5)),
    ef("EF.SMSP", 0x6F42, L(52, 2), None, Rec(5)),
    ef("EF.SMSS", 0x6F43, T(2), None, Rec(5)),
];

const SYSTEM_FILES: &[Spec] = &[
    key_file("EF.SIM_AUTH_KEY", 0x6F20),
    ef(
        "EF.MILENAGE_CFG",
        0x6F21,
        T(85),
        None,
        Compact(ADM_READ_UPDATE),
    )
    .with(Content::Hex(
        "40002040600000000000000000000000000000000000000000000000000000000000000001000000\
         00000000000000000000000002000000000000000000000000000000040000000000000000000000\
         0000000008",
    )),
];

const USIM_FILES: &[Spec] = &[
    ef("EF.ARR", 0x6F06, L(110, 12), Some(0x17), Rec(6)).with(Content::Records(USIM_ARR)),
    ef("EF.LI", 0x6F05, T(10), Some(0x02), Rec(2)),
    ef("EF.IMSI", 0x6F07, T(9), Some(0x07), Rec(3)),
    ef("EF.Keys", 0x6F08, T(33), Some(0x08), Rec(4)).with(Content::Hex("07")),
    ef("EF.KeysPS", 0x6F09, T(33), Some(0x09), Rec(4)).with(Content::Hex("07")),
    ef("EF.PLMNwAcT", 0x6F60, T(60), Some(0x0A), Rec(4)).with(UNUSED_PLMN_WITH_ACT),
    ef("EF.HPPLMN", 0x6F31, T(1), Some(0x12), Rec(3)).with(Content::Hex("05")),
    ef("EF.ACMmax", 0x6F37, T(3), None, Rec(4)).with(Content::Fill(0x00)),
    ef("EF.UST", 0x6F38, T(20), Some(0x04), Rec(3))
        .with(Content::Hex("beff9f9de73e0408400170330000002e00000000")),
    ef("EF.ACM", 0x6F39, C(3, 20), Some(0x1C), Rec(5)).with(Content::Fill(0x00)),
    ef("EF.GID1", 0x6F3E, T(10), None, Rec(3)),
    ef("EF.GID2", 0x6F3F, T(10), None, Rec(3)),
    ef("EF.SPN", 0x6F46, T(17), None, Rec(6)),
    ef("EF.PUCT", 0x6F41, T(5), None, Rec(4)).with(Content::Hex("ffffff0000")),
    ef("EF.CBMI", 0x6F45, T(20), None, Rec(4)),
    ef("EF.ACC", 0x6F78, T(2), Some(0x06), Rec(3)),
    ef("EF.FPLMN", 0x6F7B, T(12), Some(0x0D), Rec(4)),
    ef("EF.LOCI", 0x6F7E, T(11), Some(0x0B), Rec(4)).with(Content::Hex("ffffffffffffff0000ff01")),
    ef("EF.AD", 0x6FAD, T(4), Some(0x03), Rec(6)),
    ef("EF.ECC", 0x6FB7, L(16, 5), Some(0x01), Rec(6)).with(Content::Records(&[
        "ffffffffffffffffffffffffffffff00",
        "ffffffffffffffffffffffffffffff00",
        "ffffffffffffffffffffffffffffff00",
        "ffffffffffffffffffffffffffffff00",
        "ffffffffffffffffffffffffffffff00",
    ])),
    ef("EF.PSLOCI", 0x6F73, T(14), Some(0x0C), Rec(4))
        .with(Content::Hex("ffffffffffffffffff000000ff01")),
    ef("EF.EST", 0x6F56, T(9), Some(0x05), Rec(7)).with(Content::Fill(0x00)),
    ef("EF.START-HFN", 0x6F5B, T(6), Some(0x0F), Rec(4)).with(Content::Hex("f00000f00000")),
    ef("EF.THRESHOLD", 0x6F5C, T(3), Some(0x10), Rec(3)),
    ef("EF.OPLMNwAcT", 0x6F61, T(60), Some(0x11), Rec(3)).with(UNUSED_PLMN_WITH_ACT),
    ef("EF.HPLMNwAcT", 0x6F62, T(60), Some(0x13), Rec(3)).with(UNUSED_PLMN_WITH_ACT),
    ef("EF.EHPLMN", 0x6FD9, T(12), Some(0x1D), Rec(3)),
    key_file("EF.USIM_AUTH_KEY", 0xAF20),
    sqn_file("EF.USIM_SQN"),
];

const USIM_LINKS: &[Link] = &[Link {
    label: "EF.USIM_AUTH_KEY_2G",
    fid: 0xAF22,
    sfi: None,
    sec: Compact(ADM_READ_UPDATE),
    target: "DF.SYSTEM/EF.SIM_AUTH_KEY",
}];

const GSM_FILES: &[Spec] = &[
    ef("EF.ARR", 0x6F06, L(110, 9), None, Rec(6)).with(Content::Records(CLASSIC_ARR)),
    ef("EF.LP", 0x6F05, T(5), None, Rec(2)),
    ef("EF.Kc", 0x6F20, T(9), None, Rec(4)).with(Content::Hex("ffffffffffffffff07")),
    ef("EF.PLMNsel", 0x6F30, T(60), None, Rec(4)),
    ef("EF.HPPLMN", 0x6F31, T(1), None, Rec(7)).with(Content::Hex("05")),
    ef("EF.ACMmax", 0x6F37, T(3), None, Rec(4)).with(Content::Fill(0x00)),
    ef("EF.SST", 0x6F38, T(15), None, Rec(7)).with(Content::Hex("ff33ffff3f003f0f300cf0c3f00000")),
    ef("EF.ACM", 0x6F39, C(3, 20), None, Rec(5)).with(Content::Fill(0x00)),
    ef("EF.PUCT", 0x6F41, T(5), None, Rec(4)).with(Content::Hex("ffffff0000")),
    ef("EF.CBMI", 0x6F45, T(20), None, Rec(4)),
    ef("EF.Phase", 0x6FAE, T(1), None, Rec(6)).with(Content::Hex("03")),
    ef("EF.ECC", 0x6FB7, T(15), None, Rec(6)),
];

/// DF.GSM's subscriber files: the ADF.USIM files, as DF.GSM presents them.
const GSM_LINKS: &[Link] = &[
    gsm_link("EF.IMSI", 0x6F07, 3, "ADF.USIM/EF.IMSI"),
    gsm_link("EF.GID1", 0x6F3E, 7, "ADF.USIM/EF.GID1"),
    gsm_link("EF.GID2", 0x6F3F, 7, "ADF.USIM/EF.GID2"),
    gsm_link("EF.SPN", 0x6F46, 6, "ADF.USIM/EF.SPN"),
    gsm_link("EF.ACC", 0x6F78, 7, "ADF.USIM/EF.ACC"),
    gsm_link("EF.FPLMN", 0x6F7B, 4, "ADF.USIM/EF.FPLMN"),
    gsm_link("EF.LOCI", 0x6F7E, 4, "ADF.USIM/EF.LOCI"),
    gsm_link("EF.AD", 0x6FAD, 6, "ADF.USIM/EF.AD"),
    gsm_link("EF.PLMNwAcT", 0x6F60, 4, "ADF.USIM/EF.PLMNwAcT"),
    gsm_link("EF.OPLMNwAcT", 0x6F61, 7, "ADF.USIM/EF.OPLMNwAcT"),
    gsm_link("EF.HPLMNwAcT", 0x6F62, 7, "ADF.USIM/EF.HPLMNwAcT"),
];

/// A DF.GSM entry for an ADF.USIM file: no SFI, a record of DF.GSM's EF.ARR.
const fn gsm_link(label: &'static str, fid: u16, record: u8, target: &'static str) -> Link {
    Link {
        label,
        fid,
        sfi: None,
        sec: Rec(record),
        target,
    }
}

const ISIM_FILES: &[Spec] = &[
    ef("EF.ARR", 0x6F06, L(50, 4), Some(0x06), Rec(2)).with(Content::Records(ISIM_ARR)),
    ef("EF.IMPI", 0x6F02, T(128), Some(0x02), Rec(3)),
    ef("EF.DOMAIN", 0x6F03, T(50), Some(0x05), Rec(3)),
    ef("EF.IMPU", 0x6F04, L(128, 8), Some(0x04), Rec(3)).with(Content::Records(&[
        "ff", "8000", "8000", "8000", "8000", "8000", "8000", "8000",
    ])),
    ef("EF.AD", 0x6FAD, T(3), Some(0x03), Rec(2)),
    ef("EF.IST", 0x6F07, T(3), Some(0x07), Rec(3)).with(Content::Hex("190200")),
    ef("EF.P-CSCF", 0x6F09, L(128, 8), None, Rec(3)).with(Content::Records(&["80"])),
    key_file("EF.ISIM_AUTH_KEY", 0xAF20),
    key_file("EF.ISIM_AUTH_KEY_2G", 0xAF22),
    sqn_file("EF.ISIM_SQN"),
];

/// The key files of a written card (and their factory configuration byte).
const KEY_FILES: &[&str] = &[
    "DF.SYSTEM/EF.SIM_AUTH_KEY",
    "ADF.USIM/EF.USIM_AUTH_KEY",
    "ADF.ISIM/EF.ISIM_AUTH_KEY",
    "ADF.ISIM/EF.ISIM_AUTH_KEY_2G",
];

/// The files, without factory state.
pub(crate) fn build(image: &CardImage) -> Built {
    let mut fs = FileSystem::default();
    let mf = fs.add_df(
        None,
        "MF",
        0x3F00,
        None,
        FileSecurity::Compact(vec![0x26, 0x1A, 0x00, 0x00]),
    );
    super::add_files(&mut fs, mf, MF_FILES);
    super::add_classic_df(&mut fs, "DF.TELECOM", 0x7F10, TELECOM_FILES);
    let system = fs.add_df(
        Some(MF),
        "DF.SYSTEM",
        0xA515,
        None,
        FileSecurity::Compact(DF_OPEN.to_vec()),
    );
    super::add_files(&mut fs, system, SYSTEM_FILES);
    let usim = fs.add_df(
        Some(MF),
        "ADF.USIM",
        0x7FF0,
        Some(SJA2_USIM_AID.to_vec()),
        FileSecurity::Compact(DF_OPEN.to_vec()),
    );
    super::add_files(&mut fs, usim, USIM_FILES);
    super::add_links(&mut fs, usim, USIM_LINKS, &[]);
    let gsm = super::add_classic_df(&mut fs, "DF.GSM", 0x7F20, GSM_FILES);
    let separate = image
        .factory
        .separate_gsm_files
        .clone()
        .unwrap_or_else(|| vec!["EF.AD".to_string()]);
    super::add_links(&mut fs, gsm, GSM_LINKS, &separate);
    let isim = fs.add_df(
        Some(MF),
        "ADF.ISIM",
        0xFF01,
        Some(SJA2_ISIM_AID.to_vec()),
        FileSecurity::Compact(DF_OPEN.to_vec()),
    );
    super::add_files(&mut fs, isim, ISIM_FILES);
    Built {
        fs,
        family: FamilyModel {
            name: NAME,
            usim_3g: KeySource::KeyFile("ADF.USIM/EF.USIM_AUTH_KEY"),
            gsm: KeySource::KeyFile("ADF.USIM/EF.USIM_AUTH_KEY_2G"),
            isim_3g: Some(KeySource::KeyFile("ADF.ISIM/EF.ISIM_AUTH_KEY")),
            key_config_files: KEY_FILES,
        },
    }
}

/// SJA2 blanks: a vendor EHPLMN (the test network 001-01), no FPLMN, key files configured for
/// Milenage with OPc (as pySim's SJA2 programming assumes: it writes only K and OPc).
pub(crate) fn factory_defaults() -> FactoryDefaults {
    FactoryDefaults {
        ehplmn: vec!["00101".to_string()],
        fplmn: Vec::new(),
        key_config: AUTH_KEY_CFG_MILENAGE_OPC,
    }
}

/// Every key file holds cfg ‖ K ‖ OPc.
pub(crate) fn key_file_contents(ki: &[u8; 16], opc: &[u8; 16]) -> KeyContents {
    let mut content = vec![AUTH_KEY_CFG_MILENAGE_OPC];
    content.extend(ki);
    content.extend(opc);
    KEY_FILES
        .iter()
        .map(|name| (*name, content.clone()))
        .collect()
}
