//! A written card read as any independent reader would: only standard commands (SELECT by path
//! or AID with FCP, GET RESPONSE, READ BINARY, READ RECORD, AUTHENTICATE), one APDU at a time,
//! and decoders written here from the specifications — TS 102 221 (FCP), TS 31.102 (USIM files),
//! TS 31.103 (ISIM files), TS 51.011 (SPN, AD), TS 24.008 (PLMN, BCD numbers), TS 23.003 (IMS
//! identities), TS 33.102 (c2, c3) — with Milenage from the `milenage` crate. Nothing of
//! simflow-card's commands, encoders or decoders is used, so a fault shared by the writer and
//! its own read-back cannot hide here.

use super::*;
use ::milenage::Milenage;
use simflow_card::profile::{SysmoIsimSja2, SysmoUsimSjs1};

const USIM_AID_PREFIX: [u8; 7] = [0xA0, 0x00, 0x00, 0x00, 0x87, 0x10, 0x02];
const ISIM_AID_PREFIX: [u8; 7] = [0xA0, 0x00, 0x00, 0x00, 0x87, 0x10, 0x04];

/// The card's answer to one command, after GET RESPONSE or the Le retry T=0 asks for.
fn exchange(reader: &mut Reader, apdu: Vec<u8>) -> (Vec<u8>, u16) {
    let answer = reader.transmit_raw(&apdu).expect("the card answers");
    let last = match answer.sw1 {
        0x61 => {
            let get_response = vec![0x00, 0xC0, 0x00, 0x00, answer.sw2];
            reader.transmit_raw(&get_response).expect("GET RESPONSE")
        }
        0x6C => {
            let mut again = apdu;
            *again.last_mut().expect("an Le") = answer.sw2;
            reader.transmit_raw(&again).expect("the repeated command")
        }
        _ => answer,
    };
    let sw = last.sw();
    (last.data, sw)
}

/// Split BER-TLVs with one-byte tags (as FCPs use them); lengths up to 81 xx.
fn tlvs(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while bytes.len() >= 2 && bytes[0] != 0xFF {
        let (len, skip) = if bytes[1] == 0x81 {
            (usize::from(bytes[2]), 3)
        } else {
            (usize::from(bytes[1]), 2)
        };
        out.push((bytes[0], bytes[skip..skip + len].to_vec()));
        bytes = &bytes[skip + len..];
    }
    out
}

/// What a reader needs of an FCP: the record length (0 for transparent) and the size.
#[derive(Debug)]
struct FileInfo {
    record_len: usize,
    size: usize,
}

fn file_info(fcp: &[u8]) -> FileInfo {
    let (tag, body) = tlvs(fcp).into_iter().next().expect("an FCP");
    assert_eq!(tag, 0x62, "an FCP template");
    let items = tlvs(&body);
    let value = |wanted: u8| {
        items
            .iter()
            .find(|(tag, _)| *tag == wanted)
            .map(|(_, value)| value.clone())
            .unwrap_or_default()
    };
    let descriptor = value(0x82);
    let record_len = if descriptor.len() >= 5 {
        usize::from(u16::from_be_bytes([descriptor[2], descriptor[3]]))
    } else {
        0
    };
    let size = value(0x80)
        .iter()
        .fold(0usize, |acc, &byte| acc << 8 | usize::from(byte));
    FileInfo { record_len, size }
}

/// SELECT by path from the MF (P1 = 08), FCP back.
fn select_path(reader: &mut Reader, path: &[u16]) -> FileInfo {
    let mut apdu = vec![0x00, 0xA4, 0x08, 0x04, (path.len() * 2) as u8];
    for fid in path {
        apdu.extend(fid.to_be_bytes());
    }
    apdu.push(0x00);
    let (fcp, sw) = exchange(reader, apdu);
    assert_eq!(sw, 0x9000, "SELECT {path:04X?}");
    file_info(&fcp)
}

/// SELECT an application by AID prefix, then one of its EFs by FID.
fn select_in_app(reader: &mut Reader, aid_prefix: &[u8], fid: u16) -> FileInfo {
    let mut apdu = vec![0x00, 0xA4, 0x04, 0x04, aid_prefix.len() as u8];
    apdu.extend(aid_prefix);
    apdu.push(0x00);
    let (_, sw) = exchange(reader, apdu);
    assert_eq!(sw, 0x9000, "SELECT application");
    let [hi, lo] = fid.to_be_bytes();
    let (fcp, sw) = exchange(reader, vec![0x00, 0xA4, 0x00, 0x04, 0x02, hi, lo, 0x00]);
    assert_eq!(sw, 0x9000, "SELECT {fid:04X}");
    file_info(&fcp)
}

/// READ BINARY of the whole selected transparent EF.
fn read_binary(reader: &mut Reader, info: &FileInfo) -> Vec<u8> {
    let (data, sw) = exchange(reader, vec![0x00, 0xB0, 0x00, 0x00, info.size as u8]);
    assert_eq!(sw, 0x9000, "READ BINARY");
    data
}

/// READ RECORD `number` (absolute) of the selected linear EF.
fn read_record(reader: &mut Reader, info: &FileInfo, number: u8) -> Vec<u8> {
    let (data, sw) = exchange(
        reader,
        vec![0x00, 0xB2, number, 0x04, info.record_len as u8],
    );
    assert_eq!(sw, 0x9000, "READ RECORD");
    data
}

/// Semi-octets, low nibble first, up to the first F (TS 24.008 BCD).
fn bcd_digits(bytes: &[u8]) -> String {
    bytes
        .iter()
        .flat_map(|byte| [byte & 0x0F, byte >> 4])
        .take_while(|&nibble| nibble != 0x0F)
        .map(|nibble| char::from(b'0' + nibble))
        .collect()
}

/// EF.IMSI (TS 31.102 §4.2.2): a length byte, then the parity nibble and the digits.
fn imsi_of(bytes: &[u8]) -> String {
    let len = usize::from(bytes[0]);
    let digits = bcd_digits(&bytes[1..=len]);
    digits[1..].to_string()
}

/// A PLMN identity (TS 24.008 §10.5.1.13) as "MCC-MNC".
fn plmn_of(bytes: &[u8]) -> Option<String> {
    if bytes[..3] == [0xFF; 3] {
        return None;
    }
    let mcc = format!("{}{}{}", bytes[0] & 0x0F, bytes[0] >> 4, bytes[1] & 0x0F);
    let mut mnc = format!("{}{}", bytes[2] & 0x0F, bytes[2] >> 4);
    if bytes[1] >> 4 != 0x0F {
        mnc.push(char::from(b'0' + (bytes[1] >> 4)));
    }
    Some(format!("{mcc}-{mnc}"))
}

/// The dialling number of an EF.MSISDN record (TS 31.102 §4.2.26): its last 14 bytes.
fn msisdn_of(record: &[u8]) -> String {
    let number = &record[record.len() - 14..];
    let len = usize::from(number[0]);
    let digits = bcd_digits(&number[2..1 + len]);
    if number[1] & 0x70 == 0x10 {
        format!("+{digits}")
    } else {
        digits
    }
}

/// The name of EF.SPN (TS 51.011 §10.3.11): GSM default alphabet (ASCII-compatible for our
/// names) after the display condition byte.
fn spn_of(bytes: &[u8]) -> String {
    bytes[1..]
        .iter()
        .take_while(|&&byte| byte != 0xFF)
        .map(|&byte| char::from(byte))
        .collect()
}

/// The text of a tag-80 TLV (TS 31.103 §4.2.2-4.2.4).
fn uri_of(bytes: &[u8]) -> String {
    assert_eq!(bytes[0], 0x80, "a tag-80 TLV");
    String::from_utf8(bytes[2..2 + usize::from(bytes[1])].to_vec()).expect("UTF-8")
}

/// Everything read back from a written card.
#[derive(Debug, Default)]
struct ReadBack {
    iccid: String,
    usim_imsi: String,
    gsm_imsi: String,
    msisdn: String,
    usim_spn: String,
    gsm_spn: String,
    usim_mnc_len: u8,
    gsm_mnc_len: u8,
    acc: Vec<u8>,
    hplmn_with_act: Vec<(Option<String>, u16)>,
    ehplmn: Option<Vec<Option<String>>>,
    fplmn: Vec<Option<String>>,
    isim: Option<(String, String, String)>,
    answers: Vec<(&'static str, Vec<u8>, u16)>,
}

fn entries(bytes: &[u8], len: usize) -> Vec<Option<String>> {
    bytes.chunks(len).map(plmn_of).collect()
}

/// AUTHENTICATE in the application with this AID prefix; P2 80 (GSM) or 81 (3G).
fn authenticate(reader: &mut Reader, aid: &[u8], p2: u8, data: &[u8]) -> (Vec<u8>, u16) {
    let mut select = vec![0x00, 0xA4, 0x04, 0x0C, aid.len() as u8];
    select.extend(aid);
    assert_eq!(exchange(reader, select).1, 0x9000);
    let mut apdu = vec![0x00, 0x88, 0x00, p2, data.len() as u8];
    apdu.extend(data);
    apdu.push(0x00);
    exchange(reader, apdu)
}

fn read_everything(
    reader: &mut Reader,
    has_isim: bool,
    rand: &[u8; 16],
    autn: &[u8; 16],
    isim_autn: &[u8; 16],
) -> ReadBack {
    let mut found = ReadBack::default();
    let info = select_path(reader, &[0x2FE2]);
    found.iccid = bcd_digits(&read_binary(reader, &info));
    let info = select_path(reader, &[0x7F20, 0x6F07]);
    found.gsm_imsi = imsi_of(&read_binary(reader, &info));
    let info = select_path(reader, &[0x7F20, 0x6F46]);
    found.gsm_spn = spn_of(&read_binary(reader, &info));
    let info = select_path(reader, &[0x7F20, 0x6FAD]);
    found.gsm_mnc_len = read_binary(reader, &info)[3] & 0x0F;
    let info = select_path(reader, &[0x7F10, 0x6F40]);
    found.msisdn = msisdn_of(&read_record(reader, &info, 1));
    let info = select_in_app(reader, &USIM_AID_PREFIX, 0x6F07);
    found.usim_imsi = imsi_of(&read_binary(reader, &info));
    let info = select_in_app(reader, &USIM_AID_PREFIX, 0x6F46);
    found.usim_spn = spn_of(&read_binary(reader, &info));
    let info = select_in_app(reader, &USIM_AID_PREFIX, 0x6FAD);
    found.usim_mnc_len = read_binary(reader, &info)[3] & 0x0F;
    let info = select_in_app(reader, &USIM_AID_PREFIX, 0x6F78);
    found.acc = read_binary(reader, &info);
    let info = select_in_app(reader, &USIM_AID_PREFIX, 0x6F62);
    found.hplmn_with_act = read_binary(reader, &info)
        .chunks(5)
        .map(|entry| (plmn_of(entry), u16::from_be_bytes([entry[3], entry[4]])))
        .collect();
    let info = select_in_app(reader, &USIM_AID_PREFIX, 0x6F7B);
    found.fplmn = entries(&read_binary(reader, &info), 3);
    if has_isim {
        let info = select_in_app(reader, &USIM_AID_PREFIX, 0x6FD9);
        found.ehplmn = Some(entries(&read_binary(reader, &info), 3));
        let info = select_in_app(reader, &ISIM_AID_PREFIX, 0x6F02);
        let impi = uri_of(&read_binary(reader, &info));
        let info = select_in_app(reader, &ISIM_AID_PREFIX, 0x6F03);
        let domain = uri_of(&read_binary(reader, &info));
        let info = select_in_app(reader, &ISIM_AID_PREFIX, 0x6F04);
        let impu = uri_of(&read_record(reader, &info, 1));
        found.isim = Some((impi, impu, domain));
    }
    let mut three_g = vec![16];
    three_g.extend(rand);
    three_g.push(16);
    three_g.extend(autn);
    let (data, sw) = authenticate(reader, &USIM_AID_PREFIX, 0x81, &three_g);
    found.answers.push(("USIM 3G", data, sw));
    let mut gsm = vec![16];
    gsm.extend(rand);
    let (data, sw) = authenticate(reader, &USIM_AID_PREFIX, 0x80, &gsm);
    found.answers.push(("USIM GSM", data, sw));
    if has_isim {
        let mut ims = vec![16];
        ims.extend(rand);
        ims.push(16);
        ims.extend(isim_autn);
        let (data, sw) = authenticate(reader, &ISIM_AID_PREFIX, 0x81, &ims);
        found.answers.push(("ISIM IMS AKA", data, sw));
    }
    found
}

/// AUTN for these keys, RAND, SQN (AMF 8000), computed here with the `milenage` crate.
fn autn_for(k: &[u8; 16], opc: &[u8; 16], rand: &[u8; 16], sqn: &[u8; 6]) -> [u8; 16] {
    let mut m = Milenage::new_with_opc(*k, *opc);
    let amf = [0x80, 0x00];
    let mac = m.f1(rand, sqn, &amf);
    let (_, _, _, ak) = m.f2345(rand);
    let mut autn = [0u8; 16];
    for (slot, (sqn, ak)) in autn.iter_mut().zip(sqn.iter().zip(ak)) {
        *slot = sqn ^ ak;
    }
    autn[6..8].copy_from_slice(&amf);
    autn[8..].copy_from_slice(&mac);
    autn
}

/// Write a blank of `family` with its own script, then read it with the independent reader.
async fn an_independent_reader_finds_every_ordered_value_on(family: &str) {
    let lease = lease(1).await;
    let virtual_reader = lease.reader().clone();
    let blank = BlankInReader::insert(family, &virtual_reader, |_| {});
    let script = blank.script();
    let has_isim = family == SysmoIsimSja2::NAME;
    let (k, opc) = (blank.keys.ki, blank.keys.opc);
    let rand: [u8; 16] = rand::random();
    // SQNs above the one the script's challenge used (0x21): fresh for the USIM and the ISIM.
    let autn = autn_for(&k, &opc, &rand, &[0, 0, 0, 0, 0, 0x41]);
    let isim_autn = autn_for(&k, &opc, &rand, &[0, 0, 0, 0, 0, 0x61]);
    let found = blocking(move || {
        let mut reader = connect(&virtual_reader.name).expect("connects");
        run_script(&mut reader, &script).expect("the script writes the card");
        reader.reset().expect("reset: nothing stays verified");
        read_everything(&mut reader, has_isim, &rand, &autn, &isim_autn)
    })
    .await;

    let p = &blank.p;
    assert_eq!(found.iccid, p.iccid);
    assert_eq!(found.usim_imsi, p.imsi);
    assert_eq!(found.gsm_imsi, p.imsi, "DF.GSM's IMSI");
    assert_eq!(found.msisdn, p.msisdn);
    assert_eq!(found.usim_spn, "simflow");
    assert_eq!(found.gsm_spn, "simflow", "DF.GSM's SPN");
    assert_eq!(
        (found.usim_mnc_len, found.gsm_mnc_len),
        (2, 2),
        "EF.AD in both places"
    );
    let last_digit = p.imsi.as_bytes()[p.imsi.len() - 1] - b'0';
    assert_eq!(found.acc, (1u16 << last_digit).to_be_bytes().to_vec());
    assert_eq!(found.hplmn_with_act.len(), 12, "60 bytes, twelve entries");
    assert_eq!(
        found.hplmn_with_act[0],
        (Some("460-00".to_string()), 0xFFFF)
    );
    assert!(
        found.hplmn_with_act[1..]
            .iter()
            .all(|(plmn, act)| plmn.is_none() && *act == 0)
    );
    assert!(found.fplmn.iter().all(Option::is_none), "FPLMN empty");
    if has_isim {
        let ehplmn = found.ehplmn.as_ref().expect("EF.EHPLMN");
        assert_eq!(
            ehplmn[0].as_deref(),
            Some("460-00"),
            "the home network, not the vendor's"
        );
        assert!(ehplmn[1..].iter().all(Option::is_none));
        let domain = "ims.mnc000.mcc460.3gppnetwork.org";
        assert_eq!(
            found.isim,
            Some((
                format!("{}@{domain}", p.imsi),
                format!("sip:{}@{domain}", p.imsi),
                domain.to_string()
            ))
        );
    }
    let mut m = Milenage::new_with_opc(k, opc);
    let (res, ck, ik, _) = m.f2345(&rand);
    let kc: Vec<u8> = (0..8)
        .map(|i| ck[i] ^ ck[i + 8] ^ ik[i] ^ ik[i + 8])
        .collect();
    let sres: Vec<u8> = (0..4).map(|i| res[i] ^ res[i + 4]).collect();
    let mut expected_3g = vec![0xDB, 8];
    expected_3g.extend(res);
    expected_3g.push(16);
    expected_3g.extend(ck);
    expected_3g.push(16);
    expected_3g.extend(ik);
    for (context, data, sw) in &found.answers {
        assert_eq!(*sw, 0x9000, "{context}");
        if context.starts_with("USIM GSM") {
            let mut expected = vec![4];
            expected.extend(&sres);
            expected.push(8);
            expected.extend(&kc);
            assert_eq!(data, &expected, "{context}: SRES and Kc");
        } else {
            assert_eq!(
                &data[..expected_3g.len()],
                &expected_3g[..],
                "{context}: RES, CK, IK"
            );
        }
    }
    assert_eq!(found.answers.len(), if has_isim { 3 } else { 2 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_reader_finds_every_ordered_value_on_a_written_sja2() {
    an_independent_reader_finds_every_ordered_value_on(SysmoIsimSja2::NAME).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_reader_finds_every_ordered_value_on_a_written_sjs1() {
    an_independent_reader_finds_every_ordered_value_on(SysmoUsimSjs1::NAME).await;
}
