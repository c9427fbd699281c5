//! Unit tests of the profile boundary: script shape, secrecy, challenge checks, classification.

use super::*;
use crate::apdu::{Command, Response};

// Test keys are the public 3GPP TS 35.208 test set 1 values.
const K: [u8; 16] = [
    0x46, 0x5b, 0x5c, 0xe8, 0xb1, 0x99, 0xb4, 0x9f, 0xaa, 0x5f, 0x0a, 0x2e, 0xe2, 0x38, 0xa6, 0xbc,
];
const OPC: [u8; 16] = [
    0xcd, 0x63, 0xcb, 0x71, 0x95, 0x4a, 0x9f, 0x4e, 0x48, 0xa5, 0x99, 0x4e, 0x37, 0xa0, 0x2b, 0xaf,
];
const RAND: [u8; 16] = [
    0x23, 0x55, 0x3c, 0xbe, 0x96, 0x37, 0xa8, 0x9d, 0x21, 0x8a, 0xe6, 0x4d, 0xae, 0x47, 0xbf, 0x35,
];

fn personalisation() -> Personalisation {
    Personalisation {
        iccid: "8988211000000530082".into(),
        imsi: "460001234567890".into(),
        msisdn: "+8613800138000".into(),
        ki: K,
        opc: OPC,
        adm1: Adm1::from_digits("55538407").expect("valid ADM1"),
        spn: Some("simflow".into()),
        mcc_mnc: Some(("460".into(), "00".into())),
        smsp: Some("+8613800100500".into()),
    }
}

fn challenge() -> Challenge {
    make_challenge(&K, &OPC, &RAND, &[0, 0, 0, 0, 0, 0x21], &[0x80, 0x00])
}

fn script() -> Script {
    SysmoIsimSja2::default()
        .build_write_script(&personalisation(), &challenge())
        .expect("script builds")
}

fn sjs1_script() -> Script {
    SysmoUsimSjs1::default()
        .build_write_script(&personalisation(), &challenge())
        .expect("script builds")
}

fn print_shape(script: &Script) {
    println!(
        "{} write script: {} APDUs",
        script.family,
        script.steps.len()
    );
    for (kind, count) in script.count_by_kind() {
        println!("  {kind:?}: {count}");
    }
    for step in &script.steps {
        println!("  {:2} {:?} {}", step.index, step.kind, step.target);
    }
}

/// The data of the step that updates `target`.
fn update_data<'a>(script: &'a Script, target: &str) -> &'a [u8] {
    let step = script
        .steps
        .iter()
        .find(|s| s.kind == StepKind::Update && s.target == target)
        .unwrap_or_else(|| panic!("no update of {target}"));
    crate::apdu::Command::from_bytes(&step.apdu)
        .map(|command| &step.apdu[step.apdu.len() - command.data.len()..])
        .expect("a command APDU")
}

#[test]
fn the_sja2_script_writes_usim_isim_and_the_gsm_copy_in_47_apdus() {
    let script = script();
    print_shape(&script);
    assert_eq!(script.steps.len(), 47);
    assert_eq!(
        script.count_by_kind(),
        vec![
            (StepKind::Select, 13),
            (StepKind::Verify, 1),
            (StepKind::Update, 16),
            (StepKind::ReadBack, 16),
            (StepKind::Authenticate, 1),
        ]
    );
    let targets: Vec<&str> = script.steps.iter().map(|s| s.target.as_str()).collect();
    for target in [
        "DF.GSM/EF.AD",
        "ADF.ISIM/EF.ISIM_AUTH_KEY",
        "ADF.ISIM/EF.IMPI",
        "ADF.ISIM/EF.IMPU",
        "ADF.ISIM/EF.DOMAIN",
        "ADF.USIM/EF.FPLMN",
        "ADF.USIM/EF.EHPLMN",
    ] {
        assert!(targets.contains(&target), "{target} is written");
    }
}

#[test]
fn the_sjs1_script_writes_its_keys_in_df_gsm_and_has_no_isim_or_ehplmn() {
    let script = sjs1_script();
    print_shape(&script);
    assert_eq!(script.family, "sysmoUSIM-SJS1");
    assert_eq!(script.steps.len(), 31);
    assert_eq!(update_data(&script, "DF.GSM/EF.Ki"), &K);
    let opc_file = update_data(&script, "DF.GSM/EF.OPc");
    assert_eq!(opc_file[0], OPC_FILE_HOLDS_OPC);
    assert_eq!(&opc_file[1..], &OPC);
    assert!(script.steps.iter().all(|s| !s.target.contains("ISIM")
        && !s.target.contains("EHPLMN")
        && !s.target.contains("AUTH_KEY")));
    // EF.ICCID has no SFI on this card: selected, then read.
    assert_eq!(
        script.steps[1].apdu,
        Command::select_by_fid_quiet(0x2FE2).to_bytes()
    );
    assert_eq!(script.steps[2].target, "MF/EF.ICCID");
}

#[test]
fn every_family_writes_the_imsi_last_and_reads_it_back() {
    for script in [script(), sjs1_script()] {
        let last_update = script
            .steps
            .iter()
            .rev()
            .find(|s| s.kind == StepKind::Update)
            .expect("has updates");
        assert_eq!(last_update.index, script.commit_step);
        assert_eq!(last_update.target, "ADF.USIM/EF.IMSI");
        let marker = &script.steps[script.marker_step as usize];
        assert_eq!(marker.kind, StepKind::ReadBack);
        assert_eq!(marker.target, "ADF.USIM/EF.IMSI");
        assert_eq!(
            script.steps.last().map(|s| s.kind),
            Some(StepKind::Authenticate)
        );
        // The ICCID check comes before the ADM1 try.
        let iccid = script
            .steps
            .iter()
            .position(|s| s.target == "MF/EF.ICCID" && s.kind == StepKind::ReadBack);
        let verify = script.steps.iter().position(|s| s.kind == StepKind::Verify);
        assert!(iccid < verify, "{}", script.family);
        for (position, step) in script.steps.iter().enumerate() {
            assert_eq!(step.index as usize, position);
        }
    }
}

#[test]
fn the_home_network_files_are_written_whole_and_fplmn_is_cleared() {
    let script = script();
    let hplmn = update_data(&script, "ADF.USIM/EF.HPLMNwAcT");
    assert_eq!(hplmn.len(), 60);
    assert_eq!(hex::encode(&hplmn[..10]), "64f000ffffffffff0000");
    assert_eq!(update_data(&script, "ADF.USIM/EF.FPLMN"), &[0xFF; 12]);
    assert_eq!(
        hex::encode(update_data(&script, "ADF.USIM/EF.EHPLMN")),
        "64f000ffffffffffffffffff"
    );
    assert_eq!(update_data(&script, "DF.GSM/EF.AD"), &[0, 0, 0, 2]);
    let cleared = SysmoIsimSja2 {
        options: FamilyOptions {
            ehplmn: EhplmnPolicy::Clear,
        },
        ..SysmoIsimSja2::default()
    }
    .build_write_script(&personalisation(), &challenge())
    .expect("script builds");
    assert_eq!(update_data(&cleared, "ADF.USIM/EF.EHPLMN"), &[0xFF; 12]);
}

#[test]
fn the_isim_gets_identities_derived_from_the_imsi() {
    let script = script();
    let decode = |target: &str| {
        crate::ims::decode_uri_tlv("test", update_data(&script, target))
            .expect("a TLV")
            .expect("written")
    };
    assert_eq!(
        decode("ADF.ISIM/EF.IMPI"),
        "460001234567890@ims.mnc000.mcc460.3gppnetwork.org"
    );
    assert_eq!(
        decode("ADF.ISIM/EF.IMPU"),
        "sip:460001234567890@ims.mnc000.mcc460.3gppnetwork.org"
    );
    assert_eq!(
        decode("ADF.ISIM/EF.DOMAIN"),
        "ims.mnc000.mcc460.3gppnetwork.org"
    );
    assert_eq!(update_data(&script, "ADF.ISIM/EF.IMPI").len(), 128);
    assert_eq!(update_data(&script, "ADF.ISIM/EF.DOMAIN").len(), 50);
    assert_eq!(update_data(&script, "ADF.ISIM/EF.IMPU").len(), 128);
}

#[test]
fn only_adm_and_key_steps_are_secret_and_nothing_secret_prints() {
    let script = script();
    let secret: Vec<(StepKind, &str)> = script
        .steps
        .iter()
        .filter(|s| s.secret)
        .map(|s| (s.kind, s.target.as_str()))
        .collect();
    assert_eq!(
        secret,
        [
            (StepKind::Verify, "ADM1"),
            (StepKind::Update, "DF.SYSTEM/EF.SIM_AUTH_KEY"),
            (StepKind::ReadBack, "DF.SYSTEM/EF.SIM_AUTH_KEY"),
            (StepKind::Update, "ADF.ISIM/EF.ISIM_AUTH_KEY"),
            (StepKind::ReadBack, "ADF.ISIM/EF.ISIM_AUTH_KEY"),
            (StepKind::Update, "ADF.USIM/EF.USIM_AUTH_KEY"),
        ]
    );
    let printed = format!("{script:?} {:?} {:?}", sjs1_script(), personalisation());
    for needle in [
        hex::encode(K),
        hex::encode(OPC),
        "3535353338343037".to_string(),
        "55538407".to_string(),
    ] {
        assert!(!printed.contains(&needle), "debug output leaks {needle}");
    }
    assert!(printed.contains("<redacted>"));
}

#[test]
fn scripts_round_trip_through_json() {
    let script = script();
    let json = serde_json::to_string(&script).expect("serialises");
    let back: Script = serde_json::from_str(&json).expect("deserialises");
    assert_eq!(back, script);
}

#[test]
fn bad_personalisations_are_refused_with_typed_errors() {
    let family = SysmoIsimSja2::default();
    let mut p = personalisation();
    p.imsi = "46000123456789X".into();
    assert_eq!(
        family.build_write_script(&p, &challenge()),
        Err(ProfileError::Encoding(EncodingError::NotDigits {
            field: "IMSI"
        }))
    );
    let mut p = personalisation();
    p.mcc_mnc = Some(("460".into(), "01".into()));
    assert!(matches!(
        family.build_write_script(&p, &challenge()),
        Err(ProfileError::ImsiOutsideHomePlmn { .. })
    ));
    let mut p = personalisation();
    p.iccid = "1234".into();
    assert!(matches!(
        family.build_write_script(&p, &challenge()),
        Err(ProfileError::Encoding(EncodingError::WrongLength { .. }))
    ));
}

#[test]
fn optional_files_are_left_out_when_not_given() {
    let mut p = personalisation();
    p.spn = None;
    p.smsp = None;
    p.mcc_mnc = None;
    let script = SysmoIsimSja2::default()
        .build_write_script(&p, &challenge())
        .expect("script builds");
    assert_eq!(script.steps.len(), 39);
    assert!(script.steps.iter().all(|s| !s.target.contains("SPN")
        && !s.target.contains("SMSP")
        && !s.target.contains("HPLMNwAcT")));
    // Without a home PLMN, EF.EHPLMN is cleared and the ISIM assumes a 2-digit MNC.
    assert_eq!(update_data(&script, "ADF.USIM/EF.EHPLMN"), &[0xFF; 12]);
    assert_eq!(update_data(&script, "ADF.USIM/EF.AD"), &[0, 0, 0, 2]);
}

fn answer_db(k: &[u8; 16], opc: &[u8; 16], rand: &[u8; 16]) -> Vec<u8> {
    let (res, ck, ik, _) = ::milenage::Milenage::new_with_opc(*k, *opc).f2345(rand);
    let mut answer = vec![0xDB, 8];
    answer.extend(res);
    answer.push(16);
    answer.extend(ck);
    answer.push(16);
    answer.extend(ik);
    answer
}

#[test]
fn a_right_res_or_a_valid_auts_proves_the_key() {
    let challenge = challenge();
    assert_eq!(
        check_auth_answer(&K, &OPC, &challenge, &answer_db(&K, &OPC, &RAND)),
        Ok(AuthCheck::Authenticated)
    );

    let sqn_ms = [0, 0, 0, 0, 1, 0x20];
    let mut answer = vec![0xDC, 14];
    answer.extend(crate::milenage::compute_auts(&K, &OPC, &RAND, &sqn_ms));
    assert_eq!(
        check_auth_answer(&K, &OPC, &challenge, &answer),
        Ok(AuthCheck::Resynchronised {
            sqn_ms: sqn_ms.to_vec()
        })
    );
}

#[test]
fn a_wrong_key_or_garbage_is_refused() {
    let challenge = challenge();
    let mut other_k = K;
    other_k[3] ^= 0x40;
    assert!(matches!(
        check_auth_answer(&K, &OPC, &challenge, &answer_db(&other_k, &OPC, &RAND)),
        Err(AuthCheckError::WrongKey(_))
    ));
    let mut answer = vec![0xDC, 14];
    answer.extend(crate::milenage::compute_auts(
        &other_k, &OPC, &RAND, &[0; 6],
    ));
    assert!(matches!(
        check_auth_answer(&K, &OPC, &challenge, &answer),
        Err(AuthCheckError::WrongKey(_))
    ));
    assert!(matches!(
        check_auth_answer(&K, &OPC, &challenge, &[0xDB, 8, 1]),
        Err(AuthCheckError::Malformed(_))
    ));
    assert!(matches!(
        check_auth_answer(&K, &OPC, &challenge, &[]),
        Err(AuthCheckError::Malformed(_))
    ));
}

fn ok(data: &[u8]) -> Response {
    Response::new(data.to_vec(), 0x9000)
}

#[test]
fn identity_tells_blank_from_written() {
    let iccid = crate::encoding::encode_iccid("8988211000000530082").expect("valid");
    let steps = identify_by_sfi();
    let blank = [ok(&[]), ok(&iccid), ok(&[]), ok(&[0xFF; 9])];
    assert_eq!(
        parse_identity(&steps, &blank),
        Ok(Identity {
            iccid: "8988211000000530082".into(),
            blank: true,
            imsi: None
        })
    );
    let imsi = crate::encoding::encode_imsi("460001234567890").expect("valid");
    let written = [ok(&[]), ok(&[]), ok(&iccid), ok(&[]), ok(&imsi)];
    let identity = parse_identity(&identify_script(), &written).expect("parses");
    assert!(!identity.blank);
    assert_eq!(identity.imsi.as_deref(), Some("460001234567890"));
    let not_usim = [ok(&[]), ok(&iccid), Response::new(vec![], 0x6A82)];
    assert!(matches!(
        parse_identity(&steps, &not_usim),
        Err(ProfileError::ResponseCount { .. })
    ));
    let not_usim = [ok(&[]), ok(&iccid), Response::new(vec![], 0x6A82), ok(&[])];
    assert!(matches!(
        parse_identity(&steps, &not_usim),
        Err(ProfileError::UnexpectedStatus { index: 2, .. })
    ));
    let garbled = [ok(&[]), ok(&iccid[..4]), ok(&[]), ok(&[0xFF; 9])];
    assert!(matches!(
        parse_identity(&steps, &garbled),
        Err(ProfileError::Encoding(EncodingError::WrongLength { .. }))
    ));
}

#[test]
fn each_family_is_detected_from_its_atr_and_identified_its_own_way() {
    let sja2 = hex::decode(SJA2_ATR).expect("hex");
    let sjs1 = hex::decode(SJS1_ATR).expect("hex");
    assert_eq!(
        detect_family(&sja2).map(|f| f.name()),
        Some("sysmoISIM-SJA2")
    );
    assert_eq!(
        detect_family(&sjs1).map(|f| f.name()),
        Some("sysmoUSIM-SJS1")
    );
    assert!(detect_family(&[0x3B, 0x00]).is_none());
    assert!(family_by_name("sysmoISIM-SJA2").is_some());
    assert!(family_by_name("sysmoUSIM-SJS1").is_some());
    assert_eq!(identification_for(&sja2).len(), 4);
    assert_eq!(identification_for(&sjs1).len(), 5);
    assert_eq!(identification_for(&[0x3B, 0x00]), identify_script());
}

/// Answers to the probe: what a card would show, given which read-back targets hold our data,
/// which hold other data, and the rest blank.
fn probe_answers(script: &Script, ours: &[&str], other: &[&str]) -> Vec<Response> {
    probe_script(script)
        .iter()
        .map(|step| {
            let original = &script.steps[step.index as usize];
            match (&original.expect_data, step.kind) {
                (Some(expected), StepKind::ReadBack) => {
                    if step.target.ends_with("EF.ICCID") || ours.contains(&step.target.as_str()) {
                        ok(expected)
                    } else if other.contains(&step.target.as_str()) {
                        let mut data = expected.clone();
                        data[1] ^= 0x11;
                        ok(&data)
                    } else {
                        ok(&vec![0xFF; expected.len()])
                    }
                }
                _ => ok(&[]),
            }
        })
        .collect()
}

#[test]
fn the_probe_has_no_writes_and_no_secrets() {
    for script in [script(), sjs1_script()] {
        let probe = probe_script(&script);
        assert!(
            probe
                .iter()
                .all(|s| matches!(s.kind, StepKind::Select | StepKind::ReadBack)
                    && !s.secret
                    && s.expect_data.is_none())
        );
        assert!(probe.iter().any(|s| s.target == "ADF.USIM/EF.IMSI"));
    }
}

#[test]
fn only_files_unique_to_the_subscription_are_evidence() {
    let evidence: Vec<String> = script()
        .steps
        .iter()
        .filter(|s| s.kind == StepKind::ReadBack && s.evidence)
        .map(|s| s.target.clone())
        .collect();
    assert_eq!(
        evidence,
        [
            "MF/EF.ICCID",
            "DF.TELECOM/EF.MSISDN",
            "ADF.ISIM/EF.IMPI",
            "ADF.ISIM/EF.DOMAIN",
            "ADF.ISIM/EF.IMPU",
            "ADF.USIM/EF.IMSI"
        ]
    );
}

#[test]
fn classification_tells_untouched_partial_full_and_other() {
    let script = script();
    let all: Vec<&str> = script
        .steps
        .iter()
        .filter(|s| s.kind == StepKind::ReadBack && !s.target.ends_with("ICCID"))
        .map(|s| s.target.as_str())
        .collect();
    let classify = |ours: &[&str], other: &[&str]| {
        classify_written_state(&script, &probe_answers(&script, ours, other)).expect("classifies")
    };

    assert_eq!(classify(&[], &[]), WrittenState::Untouched);
    assert_eq!(classify(&all, &[]), WrittenState::WrittenByThisScript);
    assert_eq!(
        classify(&["DF.TELECOM/EF.MSISDN", "DF.TELECOM/EF.SMSP"], &[]),
        WrittenState::PartlyWritten {
            written: vec!["DF.TELECOM/EF.MSISDN".into()],
            matches_script: true
        }
    );
    assert!(matches!(
        classify(&[], &["DF.TELECOM/EF.MSISDN"]),
        WrittenState::PartlyWritten {
            matches_script: false,
            ..
        }
    ));
    assert!(matches!(
        classify(&[], &["ADF.USIM/EF.IMSI"]),
        WrittenState::WrittenWithOtherData { .. }
    ));
    // Vendor data in shared files (a factory EHPLMN, FPLMN entries, EF.AD) is no evidence.
    assert_eq!(
        classify(
            &[],
            &["ADF.USIM/EF.EHPLMN", "ADF.USIM/EF.FPLMN", "DF.GSM/EF.AD"]
        ),
        WrittenState::Untouched
    );
    let all_but_fplmn: Vec<&str> = all
        .iter()
        .copied()
        .filter(|target| *target != "ADF.USIM/EF.FPLMN")
        .collect();
    assert_eq!(
        classify(&all_but_fplmn, &["ADF.USIM/EF.FPLMN"]),
        WrittenState::WrittenByThisScript
    );

    let mut wrong_card = probe_answers(&script, &all, &[]);
    wrong_card[1] = ok(&crate::encoding::encode_iccid("8988211000000530090").expect("valid"));
    assert!(matches!(
        classify_written_state(&script, &wrong_card),
        Err(ProfileError::WrongCard { .. })
    ));
}

#[test]
fn a_script_tells_the_number_it_writes_into_ef_msisdn() {
    assert_eq!(script().msisdn().as_deref(), Some("+8613800138000"));
    assert_eq!(sjs1_script().msisdn().as_deref(), Some("+8613800138000"));
    let mut without = script();
    without
        .steps
        .retain(|step| !step.target.ends_with("EF.MSISDN"));
    assert_eq!(without.msisdn(), None);
}
