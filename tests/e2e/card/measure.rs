//! Numbers, not assertions: APDUs and host-side milliseconds per personalised card over vpcd,
//! with and without the soft SIM re-arming TCP_QUICKACK.
//! Run with `cargo test -p simflow-tests --test e2e card::measure -- --nocapture`.

use super::*;
use simflow_softsim::{CardImage, SoftSim};
use std::time::Instant;

const CARDS: usize = 3;

async fn personalise_cards(quickack: bool) -> (f64, u64) {
    let lease = lease(1).await;
    let reader = lease.reader().clone();
    let mut total_ms = 0.0;
    let mut apdus = 0;
    for _ in 0..CARDS {
        let iccid = test_iccid();
        let keys = TestKeys::generate();
        let mut sim = SoftSim::new(CardImage::blank(&iccid, TEST_ADM1)).expect("image");
        if !quickack {
            sim = sim.without_quickack();
        }
        let card = sim.insert(reader.vpcd_addr());
        let script = write_script(
            &personalisation(&iccid, &keys, TEST_ADM1),
            &challenge(&keys),
        );
        let name = reader.name.clone();
        let (elapsed, sent) = blocking(move || {
            let mut reader = connect(&name)?;
            let started = Instant::now();
            reader.identify_blank()?;
            run_script(&mut reader, &script)?;
            Ok::<_, ReaderError>((started.elapsed(), reader.apdu_count()))
        })
        .await
        .expect("personalises");
        total_ms += elapsed.as_secs_f64() * 1000.0;
        apdus = sent;
        card.remove().await;
        let name = reader.name.clone();
        blocking(move || Reader::open(&name).map(|reader| reader.wait_for_empty(CARD_WAIT)))
            .await
            .expect("reader");
    }
    (total_ms / CARDS as f64, apdus)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personalisation_time_per_card_is_printed_with_and_without_quickack() {
    let (with_ms, apdus) = personalise_cards(true).await;
    let (without_ms, _) = personalise_cards(false).await;
    println!(
        "card personalisation over vpcd, identify + SJA2 script + verification, {CARDS} cards each:"
    );
    println!("  APDUs on the wire per card: {apdus} (identify 4, script 28, GET RESPONSE 1)");
    println!(
        "  with TCP_QUICKACK re-armed:  {with_ms:8.1} ms per card ({:.2} ms per APDU)",
        with_ms / apdus as f64
    );
    println!(
        "  without TCP_QUICKACK:        {without_ms:8.1} ms per card ({:.2} ms per APDU)",
        without_ms / apdus as f64
    );
}
