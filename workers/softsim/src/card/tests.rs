//! Pure card-model tests: APDU in, APDU out, including whole simflow-card scripts.

use super::*;
use simflow_card::apdu::{BinaryTarget, Response};
use simflow_card::encoding::Adm1;
use simflow_card::profile::{
    self, AuthCheck, CardFamily, Personalisation, Script, StepKind, SysmoIsimSja2, WrittenState,
};

// Test keys: the public 3GPP TS 35.208 test set 1.
const K: [u8; 16] = [
    0x46, 0x5b, 0x5c, 0xe8, 0xb1, 0x99, 0xb4, 0x9f, 0xaa, 0x5f, 0x0a, 0x2e, 0xe2, 0x38, 0xa6, 0xbc,
];
const OPC: [u8; 16] = [
    0xcd, 0x63, 0xcb, 0x71, 0x95, 0x4a, 0x9f, 0x4e, 0x48, 0xa5, 0x99, 0x4e, 0x37, 0xa0, 0x2b, 0xaf,
];
const ICCID: &str = "8988211000000530082";
const ADM: &str = "55538407";

fn blank_card() -> CardModel {
    let mut card =
        CardModel::from_image(&CardImage::blank(ICCID, ADM), false).expect("valid image");
    card.reset();
    card
}

/// Send one APDU the way the reader does: GET RESPONSE after 61xx, repeat with Le after 6Cxx.
fn transmit(card: &mut CardModel, apdu: &[u8]) -> Response {
    let mut response =
        Response::from_bytes(&card.process(apdu)).expect("two status bytes at least");
    if response.sw1 == 0x6C {
        let mut again = apdu.to_vec();
        *again.last_mut().expect("non-empty") = response.sw2;
        response = Response::from_bytes(&card.process(&again)).expect("status");
    }
    let mut data = Vec::new();
    while response.sw1 == 0x61 {
        data.extend(&response.data);
        let get = Command::get_response(response.sw2).to_bytes();
        response = Response::from_bytes(&card.process(&get)).expect("status");
    }
    data.extend(&response.data);
    Response { data, ..response }
}

fn personalisation(adm: &str) -> Personalisation {
    Personalisation {
        iccid: ICCID.into(),
        imsi: "460001234567890".into(),
        msisdn: "+8613800138000".into(),
        ki: K,
        opc: OPC,
        adm1: Adm1::parse(adm).expect("valid ADM"),
        spn: Some("中国移动".into()),
        mcc_mnc: Some(("460".into(), "00".into())),
        smsp: Some("+8613800100500".into()),
    }
}

fn challenge(sqn_last: u8) -> profile::Challenge {
    profile::make_challenge(
        &K,
        &OPC,
        &[0x5A; 16],
        &[0, 0, 0, 0, 0, sqn_last],
        &[0x80, 0],
    )
}

fn script(adm: &str, sqn_last: u8) -> Script {
    SysmoIsimSja2::default()
        .build_write_script(&personalisation(adm), &challenge(sqn_last))
        .expect("script")
}

/// Run steps, checking SW and read-back data like the reader; stop at the first mismatch.
fn run(card: &mut CardModel, steps: &[profile::Step]) -> Result<Vec<Response>, (u16, Response)> {
    let mut responses = Vec::new();
    for step in steps {
        let response = transmit(card, &step.apdu);
        let data_ok = step
            .expect_data
            .as_ref()
            .is_none_or(|expected| expected == &response.data);
        if response.sw() != step.expect_sw || !data_ok {
            return Err((step.index, response));
        }
        responses.push(response);
    }
    Ok(responses)
}

#[test]
fn a_blank_card_identifies_as_blank() {
    let mut card = blank_card();
    let responses = run(&mut card, &profile::identify_script()).expect("identify runs");
    let identity = profile::parse_identity(&responses).expect("parses");
    assert_eq!(identity.iccid, ICCID);
    assert!(identity.blank);
}

#[test]
fn a_finished_card_identifies_as_written() {
    let mut card =
        CardModel::from_image(&CardImage::finished(ICCID, ADM, "460009876543210"), false)
            .expect("image");
    card.reset();
    let responses = run(&mut card, &profile::identify_script()).expect("identify runs");
    let identity = profile::parse_identity(&responses).expect("parses");
    assert!(!identity.blank);
    assert_eq!(identity.imsi.as_deref(), Some("460009876543210"));
}

#[test]
fn the_sja2_script_personalises_the_card_and_proves_the_key() {
    let mut card = blank_card();
    let script = script(ADM, 0x21);
    let responses = run(&mut card, &script.steps).expect("every step answers as expected");
    let answer = &responses.last().expect("authenticate answered").data;
    assert_eq!(
        profile::check_auth_answer(&K, &OPC, &challenge(0x21), answer),
        Ok(AuthCheck::Authenticated)
    );
    assert_eq!(
        card.counters().total as usize,
        script.steps.len() + 1,
        "one GET RESPONSE for AUTHENTICATE"
    );
    let snapshot = card.snapshot();
    assert_eq!(snapshot.imsi().as_deref(), Some("460001234567890"));
    assert_eq!(
        snapshot.file("ADF.USIM/EF.USIM_AUTH_KEY").map(|key| key[0]),
        Some(0x14)
    );

    // Re-running the same script is harmless; the reused SQN only makes the card resynchronise.
    card.reset();
    let responses = run(&mut card, &script.steps).expect("idempotent re-run");
    let answer = &responses.last().expect("answered").data;
    assert!(matches!(
        profile::check_auth_answer(&K, &OPC, &challenge(0x21), answer),
        Ok(AuthCheck::Resynchronised { .. })
    ));
    assert_eq!(
        profile::classify_written_state(
            &script,
            &run(&mut card, &profile::probe_script(&script)).expect("probe")
        ),
        Ok(WrittenState::WrittenByThisScript)
    );
}

#[test]
fn a_write_interrupted_before_the_imsi_leaves_the_card_blank_and_partly_written() {
    let mut card = blank_card();
    let script = script(ADM, 0x21);
    run(&mut card, &script.steps[..script.commit_step as usize]).expect("first part runs");
    card.power_off();
    card.reset();
    let identity =
        profile::parse_identity(&run(&mut card, &profile::identify_script()).expect("identify"))
            .expect("parses");
    assert!(identity.blank);
    let probe = run(&mut card, &profile::probe_script(&script)).expect("probe");
    assert!(matches!(
        profile::classify_written_state(&script, &probe),
        Ok(WrittenState::PartlyWritten {
            matches_script: true,
            ..
        })
    ));
    card.reset();
    run(&mut card, &script.steps).expect("the script completes on a second run");
}

#[test]
fn a_wrong_adm_is_blocked_after_three_tries() {
    let mut card = blank_card();
    let script = script("11111111", 0x21);
    for tries_left in [2u16, 1, 0] {
        card.reset();
        let (index, response) = run(&mut card, &script.steps).expect_err("VERIFY fails");
        assert_eq!(script.steps[index as usize].kind, StepKind::Verify);
        assert_eq!(response.sw(), 0x63C0 | tries_left);
    }
    // Blocked for good: even the right ADM is refused now, and nothing was written.
    card.reset();
    let right = self::script(ADM, 0x21);
    let (_, response) = run(&mut card, &right.steps).expect_err("blocked");
    assert_eq!(response.sw(), 0x6983);
    assert_eq!(card.snapshot().adm_tries_left, 0);
    assert!(card.snapshot().imsi().is_none());
}

#[test]
fn the_wrong_adm_fault_makes_the_card_data_files_adm_fail() {
    let mut card = CardModel::from_image(&CardImage::blank(ICCID, ADM), true).expect("image");
    card.reset();
    let (_, response) = run(&mut card, &script(ADM, 0x21).steps).expect_err("VERIFY fails");
    assert_eq!(response.sw(), 0x63C2);
}

#[test]
fn updates_need_adm_and_security_resets_on_power_up() {
    let mut card = blank_card();
    transmit(
        &mut card,
        &Command::select_by_aid_quiet(&profile::USIM_AID_PREFIX).to_bytes(),
    );
    let update = Command::update_binary(BinaryTarget::Sfi(0x06), 0, &[0, 1]).to_bytes();
    assert_eq!(transmit(&mut card, &update).sw(), 0x6982);
    let verify = Command::verify_adm1(Adm1::parse(ADM).expect("adm").bytes()).to_bytes();
    assert_eq!(transmit(&mut card, &verify).sw(), 0x9000);
    assert_eq!(transmit(&mut card, &update).sw(), 0x9000);
    card.reset();
    transmit(
        &mut card,
        &Command::select_by_aid_quiet(&profile::USIM_AID_PREFIX).to_bytes(),
    );
    assert_eq!(transmit(&mut card, &update).sw(), 0x6982);
    // The ICCID is never writable, and key files are not readable without ADM.
    transmit(&mut card, &verify);
    let iccid_update = Command::update_binary(BinaryTarget::Sfi(0x02), 0, &[0; 10]).to_bytes();
    transmit(&mut card, &Command::select_by_fid_quiet(0x3F00).to_bytes());
    assert_eq!(transmit(&mut card, &iccid_update).sw(), 0x6982);
    card.reset();
    transmit(
        &mut card,
        &Command::select_by_aid_quiet(&profile::USIM_AID_PREFIX).to_bytes(),
    );
    transmit(&mut card, &Command::select_by_fid_quiet(0xAF20).to_bytes());
    assert_eq!(
        transmit(
            &mut card,
            &Command::read_binary(BinaryTarget::Current, 0, 33).to_bytes()
        )
        .sw(),
        0x6982
    );
}

#[test]
fn select_answers_a_parsable_fcp_through_get_response() {
    let mut card = blank_card();
    let raw = card.process(&Command::select_by_fid(0x7F10).to_bytes());
    assert_eq!(raw[0], 0x61);
    let response = transmit(&mut card, &Command::select_by_fid(0x6F40).to_bytes());
    let fcp = Fcp::parse(&response.data).expect("FCP parses");
    assert_eq!(fcp.record_len, Some(34));
    assert_eq!(fcp.record_count, Some(2));
    assert_eq!(fcp.fid, Some(0x6F40));
    // Siblings are selectable directly, files of other DFs are not.
    assert_eq!(
        transmit(&mut card, &Command::select_by_fid_quiet(0xA515).to_bytes()).sw(),
        0x9000
    );
    assert_eq!(
        transmit(&mut card, &Command::select_by_fid_quiet(0x6F42).to_bytes()).sw(),
        0x6A82
    );
    let usim = transmit(
        &mut card,
        &Command {
            p2: 0x04,
            le: Some(0),
            ..Command::select_by_aid_quiet(&profile::USIM_AID_PREFIX)
        }
        .to_bytes(),
    );
    assert!(Fcp::parse(&usim.data).expect("ADF FCP").aid.is_some());
    assert_eq!(
        transmit(&mut card, &Command::select_by_fid_quiet(0x7FFF).to_bytes()).sw(),
        0x9000
    );
}

#[test]
fn a_wrong_le_gets_6cxx_and_the_gsm_context_answers_sres_and_kc() {
    let mut card = blank_card();
    let raw = card.process(&Command::read_binary(BinaryTarget::Sfi(0x02), 0, 20).to_bytes());
    assert_eq!(raw, vec![0x6C, 10]);
    let script = script(ADM, 0x21);
    run(&mut card, &script.steps).expect("personalised");
    let gsm = transmit(
        &mut card,
        &Command::authenticate_gsm(&[0x5A; 16]).to_bytes(),
    );
    let (sres, kc) = milenage::gsm_triplet(&K, &OPC, &[0x5A; 16]);
    let mut expected = vec![4];
    expected.extend(sres);
    expected.push(8);
    expected.extend(kc);
    assert_eq!(gsm.data, expected);
}
