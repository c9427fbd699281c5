//! Unhappy cards: pulled mid-write, already written, wrong ADM, mute.

use super::*;
use simflow_card::profile::{AuthCheck, StepKind, SysmoIsimSja2, WrittenState};
use simflow_reader::ClerkMessage;
use simflow_schemas::writecard::WriteOutcome;
use simflow_softsim::{CardImage, CardState, Faults, SoftSim};

/// A blank of `family` pulled right after the script step `(kind, target)` (a clerk puts it
/// back two seconds later): the reader reports the removal in the deck's words; the card that
/// comes back still reads as blank, its evidence files are `written_before_pull`, and the same
/// script run again from the start finishes it.
async fn a_pulled_card_resumes(
    family: &str,
    pulled_after: (StepKind, &str),
    written_before_pull: &[&str],
) {
    let lease = lease(1).await;
    let reader = lease.reader().clone();
    let sub = Subscription::new();
    let family_impl = profile::family_by_name(family).expect("known family");
    let script = write_script_for(family_impl.as_ref(), &sub.p, &sub.challenge);
    let step = script
        .steps
        .iter()
        .position(|step| (step.kind, step.target.as_str()) == pulled_after)
        .expect("the script has the step");
    let identification = family_impl.identify_script().len();
    let faults = Faults {
        pull_after_apdus: Some((identification + step + 1) as u64),
        // A clerk takes a second or two to put the card back; pcscd notices a removal at its
        // next poll (0.4 s), so a faster re-insertion would look like no removal at all.
        reinsert_after: Some(Duration::from_secs(2)),
        ..Faults::default()
    };
    let image = CardImage::blank_of(family, &sub.iccid, TEST_ADM1);
    let sim = SoftSim::with_faults(image, faults).expect("image");
    let mut card = sim.insert(reader.vpcd_addr());

    let name = reader.name.clone();
    let first_script = script.clone();
    let error = blocking(move || {
        let mut reader = connect(&name)?;
        reader.identify_blank()?;
        run_script(&mut reader, &first_script).map(|_| ())
    })
    .await
    .expect_err("the card is pulled mid-write");
    assert_eq!(error.code(), "CARD_REMOVED", "{error}");
    assert_eq!(error.clerk_message(), ClerkMessage::ReinsertCard);
    assert_eq!(
        error.clerk_message().zh(),
        "连接写卡器失败，请尝试重新插入白卡！"
    );

    card.wait_for(|state| state == CardState::Inserted).await;
    let name = reader.name.clone();
    let (identity, state, responses) = blocking(move || {
        let mut reader = connect(&name)?;
        let identity = reader.identify()?;
        let mut probe = Vec::new();
        reader.run_steps(&profile::probe_script(&script), |_, response| {
            probe.push(response.clone())
        })?;
        let state = profile::classify_written_state(&script, &probe).expect("classifies");
        let responses = run_script(&mut reader, &script)?;
        Ok::<_, ReaderError>((identity, state, responses))
    })
    .await
    .expect("the re-run completes");
    assert!(
        identity.blank,
        "EF.IMSI is written last, so an interrupted card is still blank"
    );
    assert_eq!(
        state,
        WrittenState::PartlyWritten {
            written: written_before_pull.iter().map(|t| t.to_string()).collect(),
            matches_script: true
        }
    );
    let answer = &responses.last().expect("answered").data;
    assert_eq!(
        profile::check_auth_answer(&sub.keys.ki, &sub.keys.opc, &sub.challenge, answer),
        Ok(AuthCheck::Authenticated)
    );
    assert_eq!(sim.snapshot().imsi().as_deref(), Some(sub.p.imsi.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sja2_pulled_after_its_isim_is_written_is_reported_as_removed_and_resumes() {
    a_pulled_card_resumes(
        "sysmoISIM-SJA2",
        (StepKind::ReadBack, "ADF.ISIM/EF.IMPU"),
        &[
            "DF.TELECOM/EF.MSISDN",
            "ADF.ISIM/EF.IMPI",
            "ADF.ISIM/EF.DOMAIN",
            "ADF.ISIM/EF.IMPU",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sjs1_pulled_after_its_keys_are_written_is_reported_as_removed_and_resumes() {
    a_pulled_card_resumes(
        "sysmoUSIM-SJS1",
        (StepKind::Update, "DF.GSM/EF.OPc"),
        &["DF.TELECOM/EF.MSISDN"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_card_is_refused_with_please_use_another_blank_card() {
    let lease = lease(1).await;
    let reader = lease.reader().clone();
    let sim = SoftSim::new(CardImage::finished(
        &test_iccid(),
        TEST_ADM1,
        "460001112223334",
    ))
    .expect("image");
    let _card = sim.insert(reader.vpcd_addr());

    let error = blocking(move || connect(&reader.name)?.identify_blank())
        .await
        .expect_err("a finished card is not blank");
    assert_eq!(error.code(), "CARD_NOT_BLANK");
    assert_eq!(error.clerk_message().zh(), "请更换白卡！");
    assert_eq!(error.clerk_message().en(), "Please use another blank card.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_adm_is_blocked_after_three_tries() {
    let lease = lease(1).await;
    let reader = lease.reader().clone();
    let iccid = test_iccid();
    let keys = TestKeys::generate();
    let faults = Faults {
        wrong_adm: true,
        ..Faults::default()
    };
    let sim = SoftSim::with_faults(CardImage::blank(&iccid, TEST_ADM1), faults).expect("image");
    let _card = sim.insert(reader.vpcd_addr());
    let script = write_script(
        &personalisation(&iccid, &keys, TEST_ADM1),
        &challenge(&keys),
    );

    let errors = blocking(move || {
        let mut reader = connect(&reader.name)?;
        let mut errors = Vec::new();
        for _ in 0..4 {
            errors.push(run_script(&mut reader, &script).expect_err("ADM1 is wrong"));
        }
        Ok::<_, ReaderError>(errors)
    })
    .await
    .expect("reader works");

    assert_eq!(
        errors,
        vec![
            ReaderError::AdmRejected { tries_left: 2 },
            ReaderError::AdmRejected { tries_left: 1 },
            ReaderError::AdmRejected { tries_left: 0 },
            ReaderError::AdmBlocked,
        ]
    );
    assert!(
        errors
            .iter()
            .all(|error| error.clerk_message().zh() == "请更换白卡！")
    );
    let snapshot = sim.snapshot();
    assert_eq!(snapshot.adm_tries_left, 0);
    assert_eq!(snapshot.imsi(), None, "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mute_card_is_refused_with_please_use_another_blank_card() {
    let lease = lease(1).await;
    let reader = lease.reader().clone();
    let faults = Faults {
        mute: true,
        ..Faults::default()
    };
    let sim =
        SoftSim::with_faults(CardImage::blank(&test_iccid(), TEST_ADM1), faults).expect("image");
    let mut card = sim.insert(reader.vpcd_addr());
    card.connected().await;

    let error = blocking(move || connect(&reader.name).map(|_| ()))
        .await
        .expect_err("a mute card cannot be used");
    println!("mute card: {error}");
    assert_eq!(error.code(), "CARD_UNUSABLE", "{error}");
    assert_eq!(error.clerk_message().zh(), "请更换白卡！");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_answer_is_refused_with_please_use_another_blank_card() {
    let lease = lease(1).await;
    let reader = lease.reader().clone();
    let faults = Faults {
        garble_apdu: Some(2),
        ..Faults::default()
    };
    let sim =
        SoftSim::with_faults(CardImage::blank(&test_iccid(), TEST_ADM1), faults).expect("image");
    let _card = sim.insert(reader.vpcd_addr());
    let error = blocking(move || connect(&reader.name)?.identify_blank())
        .await
        .expect_err("the EF.ICCID answer has no status word");
    assert_eq!(error.code(), "CARD_UNUSABLE", "{error}");
    assert_eq!(error.clerk_message().zh(), "请更换白卡！");
    assert_eq!(error.clerk_message().en(), "Please use another blank card.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_answer_mid_write_never_leaves_a_half_written_card() {
    let lease = lease(1).await;
    let reader = lease.reader().clone();
    let sub = Subscription::new();
    let script = write_script(&sub.p, &sub.challenge);
    // The answer to the first update of the ISIM (after identification and the steps before).
    let garbled = script
        .steps
        .iter()
        .position(|step| step.target == "ADF.ISIM/EF.IMPI")
        .expect("the script writes EF.IMPI");
    let identification = SysmoIsimSja2::default().identify_script().len();
    let faults = Faults {
        garble_apdu: Some((identification + garbled + 1) as u64),
        ..Faults::default()
    };
    let sim = SoftSim::with_faults(CardImage::blank(&sub.iccid, TEST_ADM1), faults).expect("image");
    let _card = sim.insert(reader.vpcd_addr());
    let (outcome, marked) = node_writes(&reader.name, script).await;
    // The node lost the card's answer, read the card back, found only this script's data and
    // ran the script again: written once, with this subscription, and the key proven.
    let Ok(WriteOutcome::Written { auth_answer, .. }) = outcome else {
        panic!("the write was left half done: {outcome:?}");
    };
    assert!(marked);
    let answer = hex::decode(auth_answer).expect("hex");
    assert_eq!(
        profile::check_auth_answer(&sub.keys.ki, &sub.keys.opc, &sub.challenge, &answer),
        Ok(AuthCheck::Authenticated)
    );
    assert_eq!(sim.snapshot().imsi().as_deref(), Some(sub.p.imsi.as_str()));
}
