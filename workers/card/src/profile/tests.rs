//! Unit tests of the profile boundary: script shape, secrecy, challenge checks, classification.

use super::*;
use crate::apdu::Response;

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

#[test]
fn the_sja2_script_is_under_30_apdus() {
    let script = script();
    println!("sysmoISIM-SJA2 write script: {} APDUs", script.steps.len());
    for (kind, count) in script.count_by_kind() {
        println!("  {kind:?}: {count}");
    }
    for step in &script.steps {
        println!("  {:2} {:?} {}", step.index, step.kind, step.target);
    }
    assert!(script.steps.len() < 30, "{} APDUs", script.steps.len());
    assert_eq!(script.steps.len(), 28);
}

#[test]
fn the_script_writes_the_imsi_last_and_reads_it_back() {
    let script = script();
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
    assert_eq!(script.steps[1].target, "MF/EF.ICCID");
    assert_eq!(script.steps[2].kind, StepKind::Verify);
    for (position, step) in script.steps.iter().enumerate() {
        assert_eq!(step.index as usize, position);
    }
}

#[test]
fn only_adm_and_key_steps_are_secret_and_nothing_secret_prints() {
    let script = script();
    let secret: Vec<&str> = script
        .steps
        .iter()
        .filter(|s| s.secret)
        .map(|s| s.target.as_str())
        .collect();
    assert_eq!(
        secret,
        [
            "ADM1",
            "DF.SYSTEM/EF.SIM_AUTH_KEY",
            "ADF.USIM/EF.USIM_AUTH_KEY"
        ]
    );
    let printed = format!("{script:?} {:?}", personalisation());
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
    assert_eq!(script.steps.len(), 20);
    assert!(script.steps.iter().all(|s| !s.target.contains("SPN")
        && !s.target.contains("SMSP")
        && !s.target.contains("HPLMN")));
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
    let blank = [ok(&[]), ok(&iccid), ok(&[]), ok(&[0xFF; 9])];
    assert_eq!(
        parse_identity(&blank),
        Ok(Identity {
            iccid: "8988211000000530082".into(),
            blank: true,
            imsi: None
        })
    );
    let imsi = crate::encoding::encode_imsi("460001234567890").expect("valid");
    let written = [ok(&[]), ok(&iccid), ok(&[]), ok(&imsi)];
    let identity = parse_identity(&written).expect("parses");
    assert!(!identity.blank);
    assert_eq!(identity.imsi.as_deref(), Some("460001234567890"));
    let not_usim = [ok(&[]), ok(&iccid), Response::new(vec![], 0x6A82)];
    assert!(matches!(
        parse_identity(&not_usim),
        Err(ProfileError::ResponseCount { .. })
    ));
    let not_usim = [ok(&[]), ok(&iccid), Response::new(vec![], 0x6A82), ok(&[])];
    assert!(matches!(
        parse_identity(&not_usim),
        Err(ProfileError::UnexpectedStatus { index: 2, .. })
    ));
}

#[test]
fn the_sja2_family_is_detected_from_its_atr() {
    let atr = hex::decode(SJA2_ATR).expect("hex");
    assert_eq!(
        detect_family(&atr).map(|f| f.name()),
        Some("sysmoISIM-SJA2")
    );
    assert!(detect_family(&[0x3B, 0x00]).is_none());
    assert!(family_by_name("sysmoISIM-SJA2").is_some());
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
    let script = script();
    let probe = probe_script(&script);
    assert!(
        probe
            .iter()
            .all(|s| matches!(s.kind, StepKind::Select | StepKind::ReadBack)
                && !s.secret
                && s.expect_data.is_none())
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
            written: vec!["DF.TELECOM/EF.MSISDN".into(), "DF.TELECOM/EF.SMSP".into()],
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

    let mut wrong_card = probe_answers(&script, &all, &[]);
    wrong_card[1] = ok(&crate::encoding::encode_iccid("8988211000000530090").expect("valid"));
    assert!(matches!(
        classify_written_state(&script, &wrong_card),
        Err(ProfileError::WrongCard { .. })
    ));
}
