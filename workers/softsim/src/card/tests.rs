//! Pure card-model tests: APDU in, APDU out, including whole simflow-card scripts.

use super::*;
use crate::image::FactoryState;
use simflow_card::apdu::{BinaryTarget, Response};
use simflow_card::encoding::Adm1;
use simflow_card::fcp::Fcp;
use simflow_card::milenage;
use simflow_card::profile::{
    self, AuthCheck, CardFamily, Personalisation, Script, StepKind, SysmoIsimSja2, SysmoUsimSjs1,
    WrittenState,
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

fn card_from(image: &CardImage) -> CardModel {
    let mut card = CardModel::from_image(image, false).expect("valid image");
    card.reset();
    card
}

fn blank_card() -> CardModel {
    card_from(&CardImage::blank(ICCID, ADM))
}

fn sjs1_card() -> CardModel {
    card_from(&CardImage::blank_of(SysmoUsimSjs1::NAME, ICCID, ADM))
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

/// Run a script built with `challenge(0x21)`: every step answers as it expects, and the card's
/// answer to the challenge proves the test keys.
fn personalise_and_authenticate(card: &mut CardModel, script: &Script) {
    let responses = run(card, &script.steps).expect("every step answers as expected");
    let answer = &responses.last().expect("authenticate answered").data;
    assert_eq!(
        profile::check_auth_answer(&K, &OPC, &challenge(0x21), answer),
        Ok(AuthCheck::Authenticated)
    );
}

#[test]
fn a_blank_card_identifies_as_blank() {
    let mut card = blank_card();
    let steps = profile::identification_for(card.atr());
    let responses = run(&mut card, &steps).expect("identify runs");
    let identity = profile::parse_identity(&steps, &responses).expect("parses");
    assert_eq!(identity.iccid, ICCID);
    assert!(identity.blank);
}

#[test]
fn a_finished_card_identifies_as_written() {
    let mut card =
        CardModel::from_image(&CardImage::finished(ICCID, ADM, "460009876543210"), false)
            .expect("image");
    card.reset();
    let steps = profile::identify_script();
    let responses = run(&mut card, &steps).expect("identify runs");
    let identity = profile::parse_identity(&steps, &responses).expect("parses");
    assert!(!identity.blank);
    assert_eq!(identity.imsi.as_deref(), Some("460009876543210"));
}

#[test]
fn the_sja2_script_personalises_the_card_and_proves_the_key() {
    let mut card = blank_card();
    let script = script(ADM, 0x21);
    personalise_and_authenticate(&mut card, &script);
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
    // DF.GSM sees the USIM's IMSI (one file), but keeps its own EF.AD (written separately).
    assert_eq!(
        snapshot.file("DF.GSM/EF.IMSI"),
        snapshot.file("ADF.USIM/EF.IMSI")
    );
    assert_eq!(snapshot.file("DF.GSM/EF.AD"), Some(&[0u8, 0, 0, 2][..]));
    assert_eq!(
        snapshot.file("ADF.USIM/EF.EHPLMN").map(<[u8]>::to_vec),
        Some(hex::decode("64f000ffffffffffffffffff").expect("hex"))
    );
    assert_eq!(snapshot.file("ADF.USIM/EF.FPLMN"), Some(&[0xFF; 12][..]));

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
    let steps = profile::identify_by_sfi();
    let identity = profile::parse_identity(&steps, &run(&mut card, &steps).expect("identify"))
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
    assert_eq!(fcp.record_count, Some(6));
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

/// Send raw bytes (hex) and return the raw answer: for tests of the exact status words.
fn raw(card: &mut CardModel, apdu: &str) -> Vec<u8> {
    card.process(&hex::decode(apdu).expect("hex"))
}

fn sw_of(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[bytes.len() - 2], bytes[bytes.len() - 1]])
}

#[test]
fn the_sjs1_script_personalises_an_sjs1_and_its_keys_live_in_df_gsm() {
    let mut card = sjs1_card();
    assert_eq!(hex::encode(card.atr()), profile::SJS1_ATR);
    let script = SysmoUsimSjs1::default()
        .build_write_script(&personalisation(ADM), &challenge(0x21))
        .expect("script");
    personalise_and_authenticate(&mut card, &script);
    let snapshot = card.snapshot();
    assert_eq!(snapshot.family, "sysmoUSIM-SJS1");
    assert_eq!(snapshot.file("DF.GSM/EF.Ki"), Some(&K[..]));
    assert_eq!(snapshot.file("DF.GSM/EF.OPc").map(|opc| opc[0]), Some(0x01));
    // ADF.USIM's files are DF.GSM's: the IMSI written by SFI in the USIM is DF.GSM's.
    assert_eq!(
        snapshot.file("DF.GSM/EF.IMSI"),
        snapshot.file("ADF.USIM/EF.IMSI")
    );
    assert_eq!(snapshot.file("DF.GSM/EF.FPLMN"), Some(&[0xFF; 12][..]));
    assert!(snapshot.file("ADF.USIM/EF.EHPLMN").is_none());
}

#[test]
fn blanks_ship_with_the_factory_state_of_their_family() {
    let sja2 = blank_card().snapshot();
    assert_eq!(
        sja2.file("ADF.USIM/EF.EHPLMN").map(|f| f[..3].to_vec()),
        Some(vec![0x00, 0xF1, 0x10])
    );
    assert_eq!(
        sja2.file("DF.SYSTEM/EF.SIM_AUTH_KEY").map(|key| key[0]),
        Some(0x14)
    );
    assert_eq!(
        sja2.file("ADF.ISIM/EF.ISIM_AUTH_KEY").map(|key| key[0]),
        Some(0x14)
    );
    assert_eq!(
        sja2.file("ADF.USIM/EF.HPLMNwAcT").map(<[u8]>::len),
        Some(60)
    );
    let sjs1 = sjs1_card().snapshot();
    assert_eq!(
        sjs1.file("ADF.USIM/EF.FPLMN").map(hex::encode).as_deref(),
        Some("62f20162f20262f20362f207")
    );
    let mut image = CardImage::blank(ICCID, ADM);
    image.factory = FactoryState {
        ehplmn: Some(vec!["46000".into(), "46002".into()]),
        fplmn: Some(vec!["310150".into()]),
        key_config: Some(0x04),
        ..FactoryState::default()
    };
    let custom = card_from(&image).snapshot();
    assert_eq!(
        custom
            .file("ADF.USIM/EF.EHPLMN")
            .map(hex::encode)
            .as_deref(),
        Some("64f00064f020ffffffffffff")
    );
    assert_eq!(
        custom.file("ADF.USIM/EF.FPLMN").map(hex::encode).as_deref(),
        Some("130051ffffffffffffffffff")
    );
    assert_eq!(
        custom.file("ADF.USIM/EF.USIM_AUTH_KEY").map(|key| key[0]),
        Some(0x04)
    );
    image.factory.fplmn = Some(vec!["0010".into()]);
    assert!(matches!(
        CardModel::from_image(&image, false),
        Err(ImageError::BadPlmn("fplmn"))
    ));
}

#[test]
fn ef_arr_rules_decide_reads_and_updates() {
    let mut card = blank_card();
    // EF.ARR itself is readable: record 3 of ADF.USIM's says read PIN1, update ADM1.
    assert_eq!(sw_of(&raw(&mut card, "00a4040c07a0000000871002")), 0x9000);
    let arr = transmit(&mut card, &hex::decode("00b203bc6e").expect("hex"));
    assert_eq!(arr.sw(), 0x9000);
    assert_eq!(&arr.data[..3], &[0x80, 0x01, 0x01]);
    // PIN1 is disabled on a blank, so PIN1 reads work; updates need ADM1.
    assert_eq!(sw_of(&raw(&mut card, "00b0870009")), 0x9000);
    assert_eq!(sw_of(&raw(&mut card, "00d6860002ffff")), 0x6982);
    // FPLMN is the handset's (record 4: update with PIN1).
    assert_eq!(
        sw_of(&raw(&mut card, "00d68d000cffffffffffffffffffffffff")),
        0x9000
    );
    // Key files: compact rule 03 1A 1A, ADM1 for read and update.
    assert_eq!(sw_of(&raw(&mut card, "00a4000c02af20")), 0x9000);
    assert_eq!(sw_of(&raw(&mut card, "00b0000021")), 0x6982);
    let verify = Command::verify_adm1(Adm1::parse(ADM).expect("adm").bytes()).to_bytes();
    assert_eq!(transmit(&mut card, &verify).sw(), 0x9000);
    assert_eq!(sw_of(&raw(&mut card, "00b0000021")), 0x9000);
    // The ICCID is never updatable (MF EF.ARR record 2), ADM1 or not.
    assert_eq!(
        sw_of(&raw(&mut card, "00a4000c022fe2")),
        0x6A82,
        "not from the ADF"
    );
    assert_eq!(
        sw_of(&raw(&mut card, "00a4080c022fe2")),
        0x9000,
        "by path from the MF"
    );
    assert_eq!(
        sw_of(&raw(&mut card, "00d600000a00000000000000000000")),
        0x6982
    );
}

#[test]
fn pin1_is_asked_for_when_enabled_and_unblocked_with_puk1() {
    let mut image = CardImage::blank(ICCID, ADM);
    image.factory = FactoryState {
        pin1_enabled: true,
        pin1: Some("2468".into()),
        puk1: Some("13572468".into()),
        ..FactoryState::default()
    };
    let mut card = card_from(&image);
    let pin = hex::encode(Adm1::parse("2468").expect("digits").bytes());
    let wrong = hex::encode(Adm1::parse("1111").expect("digits").bytes());
    let puk = hex::encode(Adm1::parse("13572468").expect("digits").bytes());
    assert_eq!(sw_of(&raw(&mut card, "00a4040c07a0000000871002")), 0x9000);
    assert_eq!(sw_of(&raw(&mut card, "00b0870009")), 0x6982, "PIN1 first");
    assert_eq!(sw_of(&raw(&mut card, "0020000100")), 0x63C3);
    assert_eq!(
        sw_of(&raw(&mut card, &format!("0020000108{wrong}"))),
        0x63C2
    );
    assert_eq!(sw_of(&raw(&mut card, &format!("0020000108{pin}"))), 0x9000);
    assert_eq!(sw_of(&raw(&mut card, "00b0870009")), 0x9000);
    for tries_left in [2u16, 1, 0] {
        assert_eq!(
            sw_of(&raw(&mut card, &format!("0020000108{wrong}"))),
            0x63C0 | tries_left
        );
    }
    assert_eq!(
        sw_of(&raw(&mut card, &format!("0020000108{pin}"))),
        0x6983,
        "blocked"
    );
    assert_eq!(
        sw_of(&raw(&mut card, &format!("002c000110{wrong}{wrong}"))),
        0x63C9
    );
    assert_eq!(
        sw_of(&raw(&mut card, &format!("002c000110{puk}{wrong}"))),
        0x9000
    );
    assert_eq!(
        sw_of(&raw(&mut card, "00b0870009")),
        0x9000,
        "unblocking verifies"
    );
    card.reset();
    assert_eq!(
        sw_of(&raw(&mut card, &format!("0020000108{wrong}"))),
        0x9000,
        "the new PIN1"
    );
    assert_eq!(card.snapshot().pin1_tries_left, 3);
}

#[test]
fn the_classic_sim_dialect_selects_reads_verifies_and_runs_the_gsm_algorithm() {
    let mut card = blank_card();
    run(&mut card, &script(ADM, 0x21).steps).expect("personalised");
    card.reset();
    let select = raw(&mut card, "a0a40000027f20");
    assert_eq!(select[0], 0x9F, "response waiting, the classic way");
    let response = raw(&mut card, &format!("a0c00000{:02x}", select[1]));
    assert_eq!(sw_of(&response), 0x9000);
    assert_eq!(&response[4..7], &[0x7F, 0x20, 0x02], "FID and type DF");
    assert_eq!(response[13] & 0x80, 0x80, "CHV1 disabled");
    let ef = raw(&mut card, "a0a40000026f07");
    let ef = raw(&mut card, &format!("a0c00000{:02x}", ef[1]));
    assert_eq!(
        &ef[2..7],
        &[0x00, 0x09, 0x6F, 0x07, 0x04],
        "size 9, FID, type EF"
    );
    assert_eq!(ef[8], 0xA1, "update ADM, read CHV1");
    let imsi = raw(&mut card, "a0b0000009");
    assert_eq!(
        imsi[..9],
        encoding::encode_imsi("460001234567890").expect("imsi")
    );
    assert_eq!(sw_of(&raw(&mut card, "a0d6000002ffff")), 0x9804, "no ADM");
    assert_eq!(
        sw_of(&raw(&mut card, "a02000020400000000")),
        0x6700,
        "CHV2 is 8 bytes"
    );
    assert_eq!(
        sw_of(&raw(&mut card, "a0200001083030303030303030")),
        0x9808,
        "CHV1 disabled"
    );
    let run_gsm = raw(&mut card, "a088000010000102030405060708090a0b0c0d0e0f");
    assert_eq!(run_gsm, vec![0x9F, 0x0C]);
    let answer = raw(&mut card, "a0c000000c");
    let rand: [u8; 16] = std::array::from_fn(|i| i as u8);
    let (sres, kc) = milenage::gsm_triplet(&K, &OPC, &rand);
    assert_eq!(&answer[..4], &sres);
    assert_eq!(&answer[4..12], &kc);
    // Applications are not visible to a classic SIM, and a UICC class still works beside it.
    assert_eq!(sw_of(&raw(&mut card, "a0a40000027ff0")), 0x9404);
    assert_eq!(sw_of(&raw(&mut card, "b0a40000027f20")), 0x6E00);
}

#[test]
fn logical_channels_keep_their_own_selection() {
    let mut card = blank_card();
    assert_eq!(raw(&mut card, "0070000001"), vec![0x01, 0x90, 0x00]);
    // Channel 1 selects the ISIM, channel 0 the USIM; each reads its own EF by SFI 07.
    assert_eq!(sw_of(&raw(&mut card, "01a4040c07a0000000871004")), 0x9000);
    assert_eq!(sw_of(&raw(&mut card, "00a4040c07a0000000871002")), 0x9000);
    assert_eq!(
        raw(&mut card, "01b0870003"),
        vec![0x19, 0x02, 0x00, 0x90, 0x00],
        "EF.IST"
    );
    assert_eq!(raw(&mut card, "00b0870009")[..9], [0xFF; 9], "EF.IMSI");
    assert_eq!(sw_of(&raw(&mut card, "0070800100")), 0x9000);
    assert_eq!(sw_of(&raw(&mut card, "01b0870003")), 0x6881, "closed");
    assert_eq!(sw_of(&raw(&mut card, "03b0870003")), 0x6881, "never opened");
}

#[test]
fn get_challenge_terminal_profile_status_and_search_record_answer() {
    let mut card = blank_card();
    let first = raw(&mut card, "0084000008");
    let second = raw(&mut card, "0084000008");
    assert_eq!((first.len(), sw_of(&first)), (10, 0x9000));
    assert_ne!(first, second, "random bytes");
    assert_eq!(sw_of(&raw(&mut card, "0084000000")), 0x6700);
    assert_eq!(
        sw_of(&raw(&mut card, "801000000affffffff7f0000df7f13")),
        0x9000
    );
    assert_eq!(sw_of(&raw(&mut card, "00a4040c07a0000000871004")), 0x9000);
    let status = raw(&mut card, "80f2000100");
    assert_eq!(&status[..2], &[0x84, 0x10]);
    assert_eq!(&status[2..9], &[0xA0, 0x00, 0x00, 0x00, 0x87, 0x10, 0x04]);
    // EF.DIR: the record that starts with the ISIM's application template.
    assert_eq!(sw_of(&raw(&mut card, "00a4000c023f00")), 0x9000);
    let found = transmit(
        &mut card,
        &hex::decode("00a201f4076119 4f10a0000000".replace(' ', "")).expect("hex"),
    );
    assert_eq!((found.sw(), found.data), (0x9000, vec![0x02]));
    assert_eq!(
        sw_of(&raw(&mut card, "00a201f40361ff00")),
        0x6A83,
        "no match"
    );
    // READ RECORD NEXT continues from the record the search found.
    let next = transmit(&mut card, &hex::decode("00b200f22b").expect("hex"));
    assert_eq!(next.data, vec![0xFF; 43]);
}

#[test]
fn the_sjs1_iccid_has_no_sfi_and_its_usim_files_link_to_df_gsm() {
    let mut card = sjs1_card();
    assert_eq!(sw_of(&raw(&mut card, "00b082000a")), 0x6A82);
    let response = transmit(&mut card, &Command::select_by_fid(0x2FE2).to_bytes());
    assert_eq!(Fcp::parse(&response.data).expect("FCP").sfi, None);
    assert_eq!(sw_of(&raw(&mut card, "00a4040c07a0000000871002")), 0x9000);
    let acc = transmit(&mut card, &Command::select_by_fid(0x6F78).to_bytes());
    assert_eq!(Fcp::parse(&acc.data).expect("FCP").sfi, Some(0x06));
    let verify = Command::verify_adm1(Adm1::parse(ADM).expect("adm").bytes()).to_bytes();
    assert_eq!(transmit(&mut card, &verify).sw(), 0x9000);
    assert_eq!(
        sw_of(&raw(&mut card, "00d6860002 0200".replace(' ', "").as_str())),
        0x9000
    );
    assert_eq!(
        card.snapshot().file("DF.GSM/EF.ACC"),
        Some(&[0x02, 0x00][..])
    );
}
