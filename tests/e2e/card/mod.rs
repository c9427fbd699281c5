//! The card side end to end: software SIMs in pcscd's vpcd readers, driven through the real
//! PC/SC stack by `simflow-reader`, with scripts from `simflow-card`. No mocks of PC/SC.
//!
//! Reader calls are blocking, so tests run them with `spawn_blocking` on a multi-thread runtime
//! (the soft SIM answers on the runtime meanwhile), as the outlet node will.

mod commands;
mod errors;
mod families;
mod faults;
mod files;
mod independent;
mod personalise;

use simflow_card::encoding::Adm1;
use simflow_card::profile::{self, CardFamily, Challenge, Personalisation, Script, SysmoIsimSja2};
use simflow_reader::{Reader, ReaderError};
use simflow_softsim::{CardImage, InsertedCard, SoftSim};
use simflow_tests::pcsc::{self, ReaderLease};
use std::time::Duration;

/// The ADM1 every test card ships with.
pub const TEST_ADM1: &str = "55538407";

/// How long a test waits for pcscd to see an inserted card. Generous: it bounds a wait that
/// normally ends in well under a second, but a CI run with six tests at once on two cores once
/// kept pcscd from reporting a card for longer than 5 s (two card tests failed that way).
pub const CARD_WAIT: Duration = Duration::from_secs(20);

/// Run blocking reader work off the async runtime.
pub async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work)
        .await
        .expect("blocking task panicked")
}

/// Lease readers without blocking the runtime.
pub async fn lease(count: usize) -> ReaderLease {
    blocking(move || pcsc::lease_readers(count))
        .await
        .expect("virtual readers available")
}

/// A unique, Luhn-valid test ICCID (89 88 21 prefix as pySim's examples, random body).
pub fn test_iccid() -> String {
    let body: u64 = rand::random::<u64>() % 10_000_000_000;
    let digits = format!("89882110{body:010}");
    let check = simflow_card::encoding::luhn_check_digit(&digits).expect("digits");
    format!("{digits}{check}")
}

/// Freshly generated subscriber keys (never real ones).
pub struct TestKeys {
    pub ki: [u8; 16],
    pub opc: [u8; 16],
}

impl TestKeys {
    pub fn generate() -> Self {
        TestKeys {
            ki: rand::random(),
            opc: rand::random(),
        }
    }
}

/// The personalisation a central worker would send for this card.
pub fn personalisation(iccid: &str, keys: &TestKeys, adm1: &str) -> Personalisation {
    let imsi_tail: u64 = rand::random::<u64>() % 10_000_000_000;
    Personalisation {
        iccid: iccid.to_string(),
        imsi: format!("46000{imsi_tail:010}"),
        msisdn: "+8613800138000".into(),
        ki: keys.ki,
        opc: keys.opc,
        adm1: Adm1::parse(adm1).expect("test ADM1 parses"),
        spn: Some("simflow".into()),
        mcc_mnc: Some(("460".into(), "00".into())),
        smsp: Some("+8613800100500".into()),
    }
}

/// A challenge for a blank card (its SQN is 0, so any SQN above is fresh).
pub fn challenge(keys: &TestKeys) -> Challenge {
    profile::make_challenge(
        &keys.ki,
        &keys.opc,
        &rand::random(),
        &[0, 0, 0, 0, 0, 0x21],
        &[0x80, 0x00],
    )
}

/// The SJA2 write script for a card.
pub fn write_script(p: &Personalisation, challenge: &Challenge) -> Script {
    write_script_for(&SysmoIsimSja2::default(), p, challenge)
}

/// The write script of `family` for a card.
pub fn write_script_for(
    family: &dyn CardFamily,
    p: &Personalisation,
    challenge: &Challenge,
) -> Script {
    family
        .build_write_script(p, challenge)
        .expect("script builds")
}

/// A fresh card's subscription: a new ICCID, generated keys, the personalisation and the
/// challenge its write script is built from.
pub struct Subscription {
    pub iccid: String,
    pub keys: TestKeys,
    pub p: Personalisation,
    pub challenge: Challenge,
}

impl Subscription {
    pub fn new() -> Self {
        let iccid = test_iccid();
        let keys = TestKeys::generate();
        let p = personalisation(&iccid, &keys, TEST_ADM1);
        let challenge = challenge(&keys);
        Subscription {
            iccid,
            keys,
            p,
            challenge,
        }
    }
}

/// A blank of `family` with a fresh ICCID and generated keys, in the leased reader; with the
/// personalisation and challenge its write script is built from.
pub struct BlankInReader {
    pub sim: SoftSim,
    pub card: InsertedCard,
    pub keys: TestKeys,
    pub p: Personalisation,
    pub challenge: Challenge,
}

impl BlankInReader {
    /// Insert a blank of `family` (shipped as `image` says beyond ICCID and ADM1).
    pub fn insert(
        family: &str,
        reader: &pcsc::VirtualReader,
        image: impl FnOnce(&mut CardImage),
    ) -> Self {
        let sub = Subscription::new();
        let mut card_image = CardImage::blank_of(family, &sub.iccid, TEST_ADM1);
        image(&mut card_image);
        let sim = SoftSim::new(card_image).expect("image");
        let card = sim.insert(reader.vpcd_addr());
        BlankInReader {
            sim,
            card,
            keys: sub.keys,
            p: sub.p,
            challenge: sub.challenge,
        }
    }

    /// This card's write script in its own family.
    pub fn script(&self) -> Script {
        let family =
            profile::family_by_name(self.sim.snapshot().family.as_str()).expect("a known family");
        write_script_for(family.as_ref(), &self.p, &self.challenge)
    }
}

/// The outlet node's card work on this reader (no console), for driving
/// `simflow_outlet::card` directly.
pub fn card_work(reader: &str) -> simflow_outlet::card::CardWork {
    simflow_outlet::card::CardWork {
        reader: reader.to_string(),
        card_wait: CARD_WAIT,
        reinsert_wait: CARD_WAIT,
        status: simflow_outlet::Status::new(Default::default(), false),
    }
}

/// Run the outlet node's write of `script` (not recovering) on the card in `reader`; the
/// outcome and whether the journal was asked to record that writing starts.
pub async fn node_writes(
    reader: &str,
    script: Script,
) -> (
    Result<simflow_schemas::writecard::WriteOutcome, simflow_outlet::card::Interrupted>,
    bool,
) {
    let work = card_work(reader);
    blocking(move || {
        let stop = simflow_runtime::shutdown::CancellationToken::new();
        let mut marked = false;
        let outcome = simflow_outlet::card::write_card(&work, &script, false, &stop, &mut || {
            marked = true;
            Ok(())
        });
        (outcome, marked)
    })
    .await
}

/// Open the reader, wait for the card and connect, as the outlet does.
pub fn connect(reader_name: &str) -> Result<Reader, ReaderError> {
    let mut reader = Reader::open(reader_name)?;
    reader.wait_for_card(CARD_WAIT)?;
    reader.connect()?;
    Ok(reader)
}

/// Run a script and collect every response; the last one answers the challenge.
pub fn run_script(
    reader: &mut Reader,
    script: &Script,
) -> Result<Vec<simflow_card::apdu::Response>, ReaderError> {
    let mut responses = Vec::with_capacity(script.steps.len());
    reader.run_steps(&script.steps, |_, response| {
        responses.push(response.clone())
    })?;
    Ok(responses)
}
