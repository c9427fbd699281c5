//! Happy paths: identify a blank card, personalise it, verify it; two readers at once.

use super::*;
use simflow_card::profile::{AuthCheck, WrittenState};
use simflow_softsim::{CardImage, SoftSim};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blank_soft_sim_is_identified_through_pcscd() {
    let lease = lease(1).await;
    let reader = lease.reader().clone();
    let iccid = test_iccid();
    let sim = SoftSim::new(CardImage::blank(&iccid, TEST_ADM1)).expect("image");
    let _card = sim.insert(reader.vpcd_addr());

    let (identity, atr) = blocking(move || {
        let mut reader = connect(&reader.name)?;
        let identity = reader.identify_blank()?;
        Ok::<_, ReaderError>((identity, reader.atr().to_vec()))
    })
    .await
    .expect("identifies");

    assert_eq!(identity.iccid, iccid);
    assert!(identity.blank);
    assert_eq!(
        profile::detect_family(&atr).map(|family| family.name()),
        Some("sysmoISIM-SJA2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sja2_script_personalises_a_blank_card_in_under_30_apdus_and_verifies() {
    let lease = lease(1).await;
    let reader = lease.reader().clone();
    let iccid = test_iccid();
    let keys = TestKeys::generate();
    let sim = SoftSim::new(CardImage::blank(&iccid, TEST_ADM1)).expect("image");
    let _card = sim.insert(reader.vpcd_addr());
    let p = personalisation(&iccid, &keys, TEST_ADM1);
    let challenge = challenge(&keys);
    let script = write_script(&p, &challenge);
    assert!(script.steps.len() < 30);

    let script_for_reader = script.clone();
    let (responses, apdus, probe) = blocking(move || {
        let mut reader = connect(&reader.name)?;
        reader.identify_blank()?;
        let before = reader.apdu_count();
        let responses = run_script(&mut reader, &script_for_reader)?;
        let apdus = reader.apdu_count() - before;
        let mut probe = Vec::new();
        reader.run_steps(&profile::probe_script(&script_for_reader), |_, response| {
            probe.push(response.clone())
        })?;
        Ok::<_, ReaderError>((responses, apdus, probe))
    })
    .await
    .expect("the script runs");

    println!(
        "SJA2 personalisation through pcscd: {} script steps, {apdus} APDUs on the wire (T=0 GET RESPONSE included)",
        script.steps.len()
    );
    assert_eq!(apdus as usize, script.steps.len() + 1);
    let answer = &responses.last().expect("authenticate answered").data;
    assert_eq!(
        profile::check_auth_answer(&keys.ki, &keys.opc, &challenge, answer),
        Ok(AuthCheck::Authenticated)
    );
    assert_eq!(
        profile::classify_written_state(&script, &probe),
        Ok(WrittenState::WrittenByThisScript)
    );
    assert_eq!(sim.snapshot().imsi().as_deref(), Some(p.imsi.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_readers_work_at_once() {
    let lease = lease(2).await;
    let mut jobs = Vec::new();
    let mut sims = Vec::new();
    for reader in lease.readers() {
        let iccid = test_iccid();
        let keys = TestKeys::generate();
        let sim = SoftSim::new(CardImage::blank(&iccid, TEST_ADM1)).expect("image");
        let card = sim.insert(reader.vpcd_addr());
        let p = personalisation(&iccid, &keys, TEST_ADM1);
        let challenge = challenge(&keys);
        let script = write_script(&p, &challenge);
        let name = reader.name.clone();
        let job = tokio::task::spawn_blocking(move || {
            let mut reader = connect(&name)?;
            let identity = reader.identify_blank()?;
            let responses = run_script(&mut reader, &script)?;
            Ok::<_, ReaderError>((identity, responses))
        });
        jobs.push((job, keys, challenge, iccid));
        sims.push((sim, card, p.imsi.clone()));
    }
    for (job, keys, challenge, iccid) in jobs {
        let (identity, responses) = job.await.expect("join").expect("personalises");
        assert_eq!(identity.iccid, iccid);
        let answer = &responses.last().expect("answered").data;
        assert_eq!(
            profile::check_auth_answer(&keys.ki, &keys.opc, &challenge, answer),
            Ok(AuthCheck::Authenticated)
        );
    }
    for (sim, _card, imsi) in &sims {
        assert_eq!(sim.snapshot().imsi().as_deref(), Some(imsi.as_str()));
    }
}
