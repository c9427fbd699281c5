//! Every file the issue names, through pcscd: SELECT with FCP answers the size, structure, SFI
//! and security attributes a real card's FCP shows (from pySim's export of a real
//! sysmoISIM-SJA2 and sysmoUSIM-SJS1), and every EF.ARR a file references exists.

use super::*;
use simflow_card::apdu::{BinaryTarget, Command};
use simflow_card::fcp::{Fcp, FileType};
use simflow_card::profile::{SJA2_ISIM_AID, SJA2_USIM_AID, SysmoIsimSja2, SysmoUsimSjs1};

/// Where a file is: under the MF by a path of FIDs, or in an application by AID and FID.
#[derive(Debug, Clone, Copy)]
enum At {
    Path(&'static [u16]),
    App(&'static [u8], u16),
}

/// A file as the real card's FCP shows it: its name, where it is, structure, size (record
/// length × count for records), SFI, and the record of the EF.ARR it references (`None`: compact
/// rules instead).
type Expected = (&'static str, At, FileType, u32, Option<u8>, Option<u8>);

use FileType::{Cyclic as C, LinearFixed as L, Transparent as T};

const USIM: &[u8] = &SJA2_USIM_AID;
const ISIM: &[u8] = &SJA2_ISIM_AID;

#[rustfmt::skip]
const SJA2_FILES: &[Expected] = &[
    ("MF/EF.ICCID", At::Path(&[0x2FE2]), T, 10, Some(0x02), Some(2)),
    ("MF/EF.DIR", At::Path(&[0x2F00]), L, 344, Some(0x1E), Some(4)),
    ("MF/EF.ARR", At::Path(&[0x2F06]), L, 550, Some(0x06), Some(4)),
    ("MF/EF.PL", At::Path(&[0x2F05]), T, 10, Some(0x05), Some(5)),
    ("DF.GSM/EF.IMSI", At::Path(&[0x7F20, 0x6F07]), T, 9, None, Some(3)),
    ("DF.GSM/EF.Kc", At::Path(&[0x7F20, 0x6F20]), T, 9, None, Some(4)),
    ("DF.GSM/EF.PLMNsel", At::Path(&[0x7F20, 0x6F30]), T, 60, None, Some(4)),
    ("DF.GSM/EF.SST", At::Path(&[0x7F20, 0x6F38]), T, 15, None, Some(7)),
    ("DF.GSM/EF.ACM", At::Path(&[0x7F20, 0x6F39]), C, 60, None, Some(5)),
    ("DF.GSM/EF.GID1", At::Path(&[0x7F20, 0x6F3E]), T, 10, None, Some(7)),
    ("DF.GSM/EF.GID2", At::Path(&[0x7F20, 0x6F3F]), T, 10, None, Some(7)),
    ("DF.GSM/EF.SPN", At::Path(&[0x7F20, 0x6F46]), T, 17, None, Some(6)),
    ("DF.GSM/EF.ACC", At::Path(&[0x7F20, 0x6F78]), T, 2, None, Some(7)),
    ("DF.GSM/EF.FPLMN", At::Path(&[0x7F20, 0x6F7B]), T, 12, None, Some(4)),
    ("DF.GSM/EF.LOCI", At::Path(&[0x7F20, 0x6F7E]), T, 11, None, Some(4)),
    ("DF.GSM/EF.AD", At::Path(&[0x7F20, 0x6FAD]), T, 4, None, Some(6)),
    ("DF.GSM/EF.PLMNwAcT", At::Path(&[0x7F20, 0x6F60]), T, 60, None, Some(4)),
    ("DF.GSM/EF.OPLMNwAcT", At::Path(&[0x7F20, 0x6F61]), T, 60, None, Some(7)),
    ("DF.GSM/EF.HPLMNwAcT", At::Path(&[0x7F20, 0x6F62]), T, 60, None, Some(7)),
    // The export does not list DF.GSM's and DF.TELECOM's EF.ARR, which their files reference:
    // these two are the soft SIM's (see `layout/sja2.rs`), checked to exist and to be rules.
    ("DF.GSM/EF.ARR", At::Path(&[0x7F20, 0x6F06]), L, 990, None, Some(6)),
    ("DF.TELECOM/EF.MSISDN", At::Path(&[0x7F10, 0x6F40]), L, 204, None, Some(5)),
    ("DF.TELECOM/EF.SMSP", At::Path(&[0x7F10, 0x6F42]), L, 104, None, Some(5)),
    ("DF.TELECOM/EF.ARR", At::Path(&[0x7F10, 0x6F06]), L, 990, None, Some(6)),
    ("DF.SYSTEM/EF.SIM_AUTH_KEY", At::Path(&[0xA515, 0x6F20]), T, 33, None, None),
    ("ADF.USIM/EF.IMSI", At::App(USIM, 0x6F07), T, 9, Some(0x07), Some(3)),
    ("ADF.USIM/EF.LI", At::App(USIM, 0x6F05), T, 10, Some(0x02), Some(2)),
    ("ADF.USIM/EF.Keys", At::App(USIM, 0x6F08), T, 33, Some(0x08), Some(4)),
    ("ADF.USIM/EF.KeysPS", At::App(USIM, 0x6F09), T, 33, Some(0x09), Some(4)),
    ("ADF.USIM/EF.UST", At::App(USIM, 0x6F38), T, 20, Some(0x04), Some(3)),
    ("ADF.USIM/EF.EST", At::App(USIM, 0x6F56), T, 9, Some(0x05), Some(7)),
    ("ADF.USIM/EF.SPN", At::App(USIM, 0x6F46), T, 17, None, Some(6)),
    ("ADF.USIM/EF.ACC", At::App(USIM, 0x6F78), T, 2, Some(0x06), Some(3)),
    ("ADF.USIM/EF.FPLMN", At::App(USIM, 0x6F7B), T, 12, Some(0x0D), Some(4)),
    ("ADF.USIM/EF.LOCI", At::App(USIM, 0x6F7E), T, 11, Some(0x0B), Some(4)),
    ("ADF.USIM/EF.AD", At::App(USIM, 0x6FAD), T, 4, Some(0x03), Some(6)),
    ("ADF.USIM/EF.PLMNwAcT", At::App(USIM, 0x6F60), T, 60, Some(0x0A), Some(4)),
    ("ADF.USIM/EF.OPLMNwAcT", At::App(USIM, 0x6F61), T, 60, Some(0x11), Some(3)),
    ("ADF.USIM/EF.HPLMNwAcT", At::App(USIM, 0x6F62), T, 60, Some(0x13), Some(3)),
    ("ADF.USIM/EF.EHPLMN", At::App(USIM, 0x6FD9), T, 12, Some(0x1D), Some(3)),
    ("ADF.USIM/EF.ARR", At::App(USIM, 0x6F06), L, 1320, Some(0x17), Some(6)),
    ("ADF.USIM/EF.USIM_AUTH_KEY", At::App(USIM, 0xAF20), T, 33, None, None),
    ("ADF.USIM/EF.USIM_AUTH_KEY_2G", At::App(USIM, 0xAF22), T, 33, None, None),
    ("ADF.ISIM/EF.IMPI", At::App(ISIM, 0x6F02), T, 128, Some(0x02), Some(3)),
    ("ADF.ISIM/EF.DOMAIN", At::App(ISIM, 0x6F03), T, 50, Some(0x05), Some(3)),
    ("ADF.ISIM/EF.IMPU", At::App(ISIM, 0x6F04), L, 1024, Some(0x04), Some(3)),
    ("ADF.ISIM/EF.IST", At::App(ISIM, 0x6F07), T, 3, Some(0x07), Some(3)),
    ("ADF.ISIM/EF.AD", At::App(ISIM, 0x6FAD), T, 3, Some(0x03), Some(2)),
    ("ADF.ISIM/EF.ARR", At::App(ISIM, 0x6F06), L, 200, Some(0x06), Some(2)),
    ("ADF.ISIM/EF.ISIM_AUTH_KEY", At::App(ISIM, 0xAF20), T, 33, None, None),
];

#[rustfmt::skip]
const SJS1_FILES: &[Expected] = &[
    ("MF/EF.ICCID", At::Path(&[0x2FE2]), T, 10, None, Some(4)),
    ("MF/EF.DIR", At::Path(&[0x2F00]), L, 76, Some(0x1E), Some(4)),
    ("DF.GSM/EF.Ki", At::Path(&[0x7F20, 0x00FF]), T, 16, None, None),
    ("DF.GSM/EF.OPc", At::Path(&[0x7F20, 0x00F7]), T, 17, None, None),
    ("DF.GSM/EF.IMSI", At::Path(&[0x7F20, 0x6F07]), T, 9, None, Some(3)),
    ("DF.GSM/EF.HPLMNwAcT", At::Path(&[0x7F20, 0x6F62]), T, 60, None, Some(7)),
    ("ADF.USIM/EF.IMSI", At::App(USIM, 0x6F07), T, 9, Some(0x07), Some(3)),
    ("ADF.USIM/EF.UST", At::App(USIM, 0x6F38), T, 9, Some(0x04), Some(3)),
    ("ADF.USIM/EF.FPLMN", At::App(USIM, 0x6F7B), T, 12, Some(0x0D), Some(4)),
    ("ADF.USIM/EF.HPLMNwAcT", At::App(USIM, 0x6F62), T, 60, Some(0x13), Some(3)),
];

fn select_commands(at: At) -> Vec<Vec<u8>> {
    match at {
        At::Path(path) => {
            let mut data = Vec::new();
            for fid in path {
                data.extend(fid.to_be_bytes());
            }
            vec![
                Command {
                    data,
                    le: Some(0),
                    ..Command::new(0x00, 0xA4, 0x08, 0x04)
                }
                .to_bytes(),
            ]
        }
        At::App(aid, fid) => vec![
            Command::select_by_aid_quiet(aid).to_bytes(),
            Command::select_by_fid(fid).to_bytes(),
        ],
    }
}

/// SELECT every file and check its FCP; read record 1 of the EF.ARR each references (the
/// EF.ARR of its DF, or the MF's 2F06) and check the record is a rule.
async fn every_file_answers_its_real_fcp(family: &str, files: &'static [Expected]) {
    let lease = lease(1).await;
    let reader = lease.reader().clone();
    let _blank = BlankInReader::insert(family, &reader, |_| {});
    let fcps = blocking(move || {
        let mut reader = connect(&reader.name)?;
        let mut fcps = Vec::new();
        for expected in files {
            let mut answer = None;
            for apdu in select_commands(expected.1) {
                answer = Some(reader.transmit(&apdu)?);
            }
            let answer = answer.expect("a SELECT");
            // The EF.ARR the FCP references, read through the same channel.
            let fcp = Fcp::parse(&answer.data).ok();
            let rule = match fcp.as_ref().and_then(|fcp| fcp.arr_reference.clone()) {
                Some(reference) => {
                    let arr_fid = u16::from_be_bytes([reference[0], reference[1]]);
                    reader.transmit(&Command::select_by_fid_quiet(arr_fid).to_bytes())?;
                    let record =
                        reader.transmit(&Command::read_record(None, reference[2], 0).to_bytes())?;
                    Some(record)
                }
                None => None,
            };
            fcps.push((expected, answer.sw(), fcp, rule));
        }
        Ok::<_, ReaderError>(fcps)
    })
    .await
    .expect("the reader works");
    for ((name, _, file_type, size, sfi, arr_record), sw, fcp, rule) in fcps {
        assert_eq!(sw, 0x9000, "{family} {name} selects");
        let fcp = fcp.unwrap_or_else(|| panic!("{family} {name}: no FCP"));
        assert_eq!(fcp.file_type, *file_type, "{name}");
        assert_eq!(fcp.size, Some(*size), "{name}");
        assert_eq!(fcp.sfi, *sfi, "{name}");
        assert_eq!(
            fcp.arr_reference.as_ref().map(|reference| reference[2]),
            *arr_record,
            "{name}"
        );
        assert_eq!(
            fcp.compact_security.is_some(),
            arr_record.is_none(),
            "{name}: compact rules exactly where no EF.ARR is referenced"
        );
        if let Some(rule) = rule {
            assert_eq!(rule.sw(), 0x9000, "{name}: its EF.ARR record exists");
            assert!(
                simflow_card::arr::AccessRules::parse_expanded(&rule.data).is_ok(),
                "{name}: its EF.ARR record is a rule"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sja2_file_answers_the_fcp_of_a_real_sja2() {
    every_file_answers_its_real_fcp(SysmoIsimSja2::NAME, SJA2_FILES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sjs1_file_answers_the_fcp_of_a_real_sjs1() {
    every_file_answers_its_real_fcp(SysmoUsimSjs1::NAME, SJS1_FILES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blanks_ship_with_the_vendor_presets_a_write_must_replace() {
    let lease = lease(1).await;
    let reader = lease.reader().clone();
    let _blank = BlankInReader::insert(SysmoIsimSja2::NAME, &reader, |_| {});
    let (ehplmn, key_cfg) = blocking(move || {
        let mut reader = connect(&reader.name)?;
        reader.transmit(&Command::select_by_aid_quiet(USIM).to_bytes())?;
        let ehplmn =
            reader.transmit(&Command::read_binary(BinaryTarget::Sfi(0x1D), 0, 12).to_bytes())?;
        reader.transmit(
            &Command::verify_adm1(Adm1::parse(TEST_ADM1).expect("adm").bytes()).to_bytes(),
        )?;
        reader.transmit(&Command::select_by_fid_quiet(0xAF20).to_bytes())?;
        let key = reader.transmit(&Command::read_binary(BinaryTarget::Current, 0, 1).to_bytes())?;
        Ok::<_, ReaderError>((ehplmn.data, key.data))
    })
    .await
    .expect("reads");
    assert_eq!(
        &ehplmn[..3],
        &[0x00, 0xF1, 0x10],
        "a vendor EHPLMN (001-01)"
    );
    assert_eq!(
        key_cfg,
        vec![0x14],
        "key files configured for Milenage with OPc, not FF"
    );
}
