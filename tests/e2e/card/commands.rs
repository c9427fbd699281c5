//! The soft SIM's commands through the real pcscd: the classic SIM dialect (CLA A0), TERMINAL
//! PROFILE, MANAGE CHANNEL, GET CHALLENGE, STATUS, SEARCH RECORD, VERIFY / UNBLOCK PIN, and the
//! access rules of EF.ARR. Exact status words are checked on single APDUs
//! (`Reader::transmit_raw`), so nothing in between answers for the card.

use super::*;
use simflow_card::apdu::Response;
use simflow_card::profile::SysmoIsimSja2;

/// Send one APDU given as hex, as it is; the raw answer.
fn raw(reader: &mut Reader, apdu: &str) -> Response {
    let bytes = hex::decode(apdu.replace(' ', "")).expect("hex APDU");
    reader.transmit_raw(&bytes).expect("the card answers")
}

/// Send each APDU (hex) as it is; the status words.
async fn status_words(reader: Reader, apdus: Vec<String>) -> Vec<u16> {
    blocking(move || {
        let mut reader = reader;
        apdus
            .iter()
            .map(|apdu| raw(&mut reader, apdu).sw())
            .collect()
    })
    .await
}

/// Digits as a PIN block (ASCII, FF-padded), hex.
fn pin_block(digits: &str) -> String {
    hex::encode(Adm1::from_digits(digits).expect("digits").bytes())
}

/// A leased reader with a blank SJA2 in it (as `image` says), connected; the card's handle.
async fn sja2_in_reader(
    image: impl FnOnce(&mut CardImage),
) -> (ReaderLease, BlankInReader, Reader) {
    let lease = lease(1).await;
    let virtual_reader = lease.reader().clone();
    let blank = BlankInReader::insert(SysmoIsimSja2::NAME, &virtual_reader, image);
    let reader = blocking(move || connect(&virtual_reader.name))
        .await
        .expect("connects");
    (lease, blank, reader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_classic_sim_dialect_selects_reads_verifies_chv_and_runs_the_gsm_algorithm() {
    let ki: [u8; 16] = rand::random();
    let opc: [u8; 16] = rand::random();
    let (_lease, blank, reader) = sja2_in_reader(|image| {
        image.ki = Some(hex::encode(ki));
        image.opc = Some(hex::encode(opc));
        image.factory.pin2 = Some("8642".into());
        image.factory.puk2 = Some("97531864".into());
    })
    .await;
    let rand_bytes: [u8; 16] = rand::random();
    let (select, gsm_response, imsi, chv, unblock, run, answer, status) = blocking(move || {
        let mut reader = reader;
        let select = raw(&mut reader, "a0a4000002 7f20");
        let gsm_response = raw(&mut reader, &format!("a0c00000{:02x}", select.sw2));
        raw(&mut reader, "a0a4000002 6f07");
        let imsi = raw(&mut reader, "a0b0000009");
        let chv = raw(&mut reader, &format!("a020000208{}", pin_block("1111")));
        let unblock = raw(
            &mut reader,
            &format!("a02c000210{}{}", pin_block("97531864"), pin_block("8642")),
        );
        let run = raw(
            &mut reader,
            &format!("a088000010{}", hex::encode(rand_bytes)),
        );
        let answer = raw(&mut reader, "a0c000000c");
        let status = raw(&mut reader, "a0f2000016");
        (
            select,
            gsm_response,
            imsi,
            chv,
            unblock,
            run,
            answer,
            status,
        )
    })
    .await;
    assert_eq!(select.sw1, 0x9F, "the classic SIM's 'response waiting'");
    assert_eq!(gsm_response.sw(), 0x9000);
    assert_eq!(
        &gsm_response.data[4..7],
        &[0x7F, 0x20, 0x02],
        "DF.GSM, a DF"
    );
    assert_eq!(imsi.data, vec![0xFF; 9], "a blank's IMSI");
    assert_eq!(chv.sw(), 0x9804, "a wrong CHV2 with tries left");
    assert_eq!(unblock.sw(), 0x9000);
    assert_eq!(run.sw(), 0x9F0C);
    let (sres, kc) = simflow_card::milenage::gsm_triplet(&ki, &opc, &rand_bytes);
    assert_eq!(answer.sw(), 0x9000);
    assert_eq!(&answer.data[..4], &sres);
    assert_eq!(&answer.data[4..], &kc);
    assert_eq!(
        (status.sw(), &status.data[4..6]),
        (0x9000, &[0x7F, 0x20][..])
    );
    drop(blank);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_profile_manage_channel_get_challenge_status_and_search_record_answer() {
    let (_lease, _blank, reader) = sja2_in_reader(|_| {}).await;
    let answers = blocking(move || {
        let mut reader = reader;
        [
            raw(&mut reader, "8010000009 ffffffff7f0000df7f"),
            raw(&mut reader, "0070000001"),
            raw(&mut reader, "01a4040c07 a0000000871004"),
            raw(&mut reader, "00a4040c07 a0000000871002"),
            raw(&mut reader, "81f2000100"),
            raw(&mut reader, "0070800100"),
            raw(&mut reader, "01b0870003"),
            raw(&mut reader, "0084000008"),
            raw(&mut reader, "0084000008"),
            raw(&mut reader, "00a4000c02 3f00"),
            raw(&mut reader, "00a201f40b 61194f10a0000000871004"),
            raw(&mut reader, "00c0000001"),
            raw(&mut reader, "00a201f403 61ff00"),
        ]
    })
    .await;
    let [
        profile,
        open,
        isim,
        usim,
        status,
        close,
        closed,
        challenge1,
        challenge2,
        mf,
        search,
        found,
        none,
    ] = answers;
    assert_eq!(profile.sw(), 0x9000, "TERMINAL PROFILE");
    assert_eq!(
        (open.sw(), open.data),
        (0x9000, vec![0x01]),
        "channel 1 opened"
    );
    assert_eq!((isim.sw(), usim.sw()), (0x9000, 0x9000));
    // STATUS on channel 1 names the application channel 1 selected: the ISIM.
    assert_eq!(status.sw(), 0x9000);
    assert_eq!(
        &status.data[2..9],
        &[0xA0, 0x00, 0x00, 0x00, 0x87, 0x10, 0x04]
    );
    assert_eq!(close.sw(), 0x9000);
    assert_eq!(closed.sw(), 0x6881, "a closed channel");
    assert_eq!((challenge1.data.len(), challenge1.sw()), (8, 0x9000));
    assert_ne!(challenge1.data, challenge2.data, "GET CHALLENGE is random");
    assert_eq!(mf.sw(), 0x9000);
    assert_eq!(search.sw(), 0x6101, "one matching record");
    assert_eq!(
        (found.sw(), found.data),
        (0x9000, vec![0x02]),
        "EF.DIR record 2: the ISIM"
    );
    assert_eq!(none.sw(), 0x6A83);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin1_is_asked_for_when_enabled_counts_its_tries_and_unblocks_with_puk1() {
    let pin1 = format!("{:04}", rand::random::<u16>() % 10_000);
    let puk1 = format!("{:08}", rand::random::<u32>() % 100_000_000);
    let wrong = if pin1 == "0000" { "1111" } else { "0000" }.to_string();
    let (pin, puk) = (pin1.clone(), puk1.clone());
    let (_lease, _blank, reader) = sja2_in_reader(move |image| {
        image.factory.pin1_enabled = true;
        image.factory.pin1 = Some(pin);
        image.factory.puk1 = Some(puk);
    })
    .await;
    let wrong_verify = format!("0020000108{}", pin_block(&wrong));
    let sws = status_words(
        reader,
        vec![
            "00a4040c07a0000000871002".to_string(),
            "00b0870009".into(),
            "0020000100".into(),
            wrong_verify.clone(),
            format!("0020000108{}", pin_block(&pin1)),
            "00b0870009".into(),
            wrong_verify.clone(),
            wrong_verify.clone(),
            wrong_verify,
            format!("0020000108{}", pin_block(&pin1)),
            format!("002c000110{}{}", pin_block(&puk1), pin_block(&pin1)),
            "00b0870009".into(),
        ],
    )
    .await;
    assert_eq!(
        sws,
        [
            0x9000, // SELECT ADF.USIM
            0x6982, // EF.IMSI needs PIN1
            0x63C3, // VERIFY without data: 3 tries
            0x63C2, // a wrong PIN1
            0x9000, // the right one
            0x9000, // EF.IMSI now reads
            0x63C2, 0x63C1, 0x63C0, // three wrong ones block it
            0x6983, // blocked, even for the right PIN1
            0x9000, // UNBLOCK with PUK1 and a new PIN1
            0x9000, // and EF.IMSI reads again
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_rules_of_ef_arr_are_enforced() {
    let (_lease, _blank, reader) = sja2_in_reader(|_| {}).await;
    let sws = status_words(
        reader,
        vec![
            "00a4040c07a0000000871002".to_string(),
            "00d6860002ffff".into(),
            "00a4000c02af20".into(),
            "00b0000021".into(),
            format!("0020000a08{}", pin_block(TEST_ADM1)),
            "00b0000021".into(),
            "00d6860002ffff".into(),
            "00a4080c022fe2".into(),
            "00d600000affffffffffffffffffff".into(),
        ],
    )
    .await;
    assert_eq!(
        sws,
        [
            0x9000, // SELECT ADF.USIM
            0x6982, // EF.ACC (record 3: update ADM1) without ADM1
            0x9000, // SELECT EF.USIM_AUTH_KEY
            0x6982, // compact 03 1A 1A: reading the key needs ADM1
            0x9000, // VERIFY ADM1
            0x9000, // now it reads
            0x9000, // and EF.ACC updates
            0x9000, // SELECT MF/EF.ICCID by path
            0x6982, // EF.ICCID is never updated (MF record 2), ADM1 or not
        ]
    );
}
