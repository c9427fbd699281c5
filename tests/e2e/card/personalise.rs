//! Happy paths: identify a blank card, personalise it, verify it; two readers at once.

use super::*;
use simflow_card::profile::{AuthCheck, SysmoUsimSjs1, WrittenState};

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
async fn a_blank_sjs1_is_identified_by_select_through_pcscd() {
    let lease = lease(1).await;
    let reader = lease.reader().clone();
    let blank = BlankInReader::insert(SysmoUsimSjs1::NAME, &reader, |_| {});
    let (identity, atr, apdus) = blocking(move || {
        let mut reader = connect(&reader.name)?;
        let identity = reader.identify_blank()?;
        Ok::<_, ReaderError>((identity, reader.atr().to_vec(), reader.apdu_count()))
    })
    .await
    .expect("identifies");
    assert_eq!(identity.iccid, blank.p.iccid);
    assert_eq!(
        profile::detect_family(&atr).map(|family| family.name()),
        Some(SysmoUsimSjs1::NAME)
    );
    assert_eq!(
        apdus, 5,
        "EF.ICCID has no SFI here: SELECT, then READ BINARY"
    );
}

/// Identify a blank of `family` through pcscd, write it, probe it; check the APDUs on the wire,
/// the answer to the challenge and the card's files.
async fn a_blank_personalises_in(family: &str, wire_apdus: u64) {
    let lease = lease(1).await;
    let reader = lease.reader().clone();
    let blank = BlankInReader::insert(family, &reader, |_| {});
    let script = blank.script();
    assert_eq!(script.family, family);

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
        "{family} personalisation through pcscd: {} script steps, {apdus} APDUs on the wire (T=0 GET RESPONSE included)",
        script.steps.len()
    );
    assert_eq!(apdus as usize, script.steps.len() + 1);
    assert_eq!(apdus, wire_apdus);
    let answer = &responses.last().expect("authenticate answered").data;
    assert_eq!(
        profile::check_auth_answer(&blank.keys.ki, &blank.keys.opc, &blank.challenge, answer),
        Ok(AuthCheck::Authenticated)
    );
    assert_eq!(
        profile::classify_written_state(&script, &probe),
        Ok(WrittenState::WrittenByThisScript)
    );
    assert_eq!(
        blank.sim.snapshot().imsi().as_deref(),
        Some(blank.p.imsi.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sja2_script_personalises_a_blank_sja2_in_48_apdus_and_verifies() {
    a_blank_personalises_in(SysmoIsimSja2::NAME, 48).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sjs1_script_personalises_a_blank_sjs1_in_32_apdus_and_verifies() {
    a_blank_personalises_in(SysmoUsimSjs1::NAME, 32).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_with_slow_writes_still_personalises() {
    let lease = lease(1).await;
    let reader = lease.reader().clone();
    let iccid = test_iccid();
    let keys = TestKeys::generate();
    let delay = Duration::from_millis(30);
    let faults = simflow_softsim::Faults {
        update_delay: Some(delay),
        ..Default::default()
    };
    let sim = SoftSim::with_faults(CardImage::blank(&iccid, TEST_ADM1), faults).expect("image");
    let _card = sim.insert(reader.vpcd_addr());
    let challenge = challenge(&keys);
    let script = write_script(&personalisation(&iccid, &keys, TEST_ADM1), &challenge);
    let updates = script
        .steps
        .iter()
        .filter(|step| step.kind == simflow_card::profile::StepKind::Update)
        .count();

    let (elapsed, responses) = blocking(move || {
        let mut reader = connect(&reader.name)?;
        let started = std::time::Instant::now();
        let responses = run_script(&mut reader, &script)?;
        Ok::<_, ReaderError>((started.elapsed(), responses))
    })
    .await
    .expect("a slow card is still written");
    assert!(
        elapsed >= delay * updates as u32,
        "{elapsed:?} for {updates} slow updates"
    );
    let answer = &responses.last().expect("answered").data;
    assert_eq!(
        profile::check_auth_answer(&keys.ki, &keys.opc, &challenge, answer),
        Ok(AuthCheck::Authenticated)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reader_fetches_61xx_responses_and_corrects_a_wrong_le() {
    use simflow_card::apdu::{BinaryTarget, Command};
    let lease = lease(1).await;
    let reader = lease.reader().clone();
    let iccid = test_iccid();
    let sim = SoftSim::new(CardImage::blank(&iccid, TEST_ADM1)).expect("image");
    let _card = sim.insert(reader.vpcd_addr());

    let (iccid_read, fcp, apdus) = blocking(move || {
        let mut reader = connect(&reader.name)?;
        // Le 0x20 for a 10-byte file: the card answers 6C0A, the reader repeats with Le 0x0A.
        let iccid_read =
            reader.transmit(&Command::read_binary(BinaryTarget::Sfi(0x02), 0, 0x20).to_bytes())?;
        // SELECT with FCP on a T=0 card: 61xx, then GET RESPONSE.
        let fcp = reader.transmit(&Command::select_by_fid(0x2FE2).to_bytes())?;
        Ok::<_, ReaderError>((iccid_read, fcp, reader.apdu_count()))
    })
    .await
    .expect("transmits");
    assert_eq!(iccid_read.sw(), 0x9000);
    assert_eq!(
        simflow_card::encoding::decode_iccid(&iccid_read.data).expect("ICCID"),
        iccid
    );
    assert_eq!(fcp.sw(), 0x9000);
    let fcp = simflow_card::fcp::Fcp::parse(&fcp.data).expect("FCP");
    assert_eq!(
        (fcp.fid, fcp.size, fcp.sfi),
        (Some(0x2FE2), Some(10), Some(0x02))
    );
    assert_eq!(apdus, 4, "two commands, each needing a second APDU");
}

/// A log sink shared with the test.
#[derive(Clone, Default)]
struct CapturedLog(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Marker the child prints before its verdict.
const LOG_CHECK_MARKER: &str = "SIMFLOW_LOG_CHECK=";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_or_adm_reaches_the_reader_log_even_at_trace_level() {
    // tracing's call-site interest is process-wide, so other tests running beside this one could
    // hide events from a per-thread subscriber. The check therefore runs in a child process (this
    // test binary, running only the helper below) on a reader leased here.
    let lease = lease(1).await;
    let reader = lease.reader().clone();
    let output = blocking(move || {
        std::process::Command::new(std::env::current_exe().expect("test binary path"))
            .args([
                "--exact",
                "card::personalise::child_personalises_with_trace_logging",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                "SIMFLOW_TEST_READER",
                format!("{}\t{}", reader.name, reader.port),
            )
            .output()
            .expect("child runs")
    })
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let at = stdout
        .find(LOG_CHECK_MARKER)
        .unwrap_or_else(|| panic!("child printed no verdict: {stdout}"));
    let verdict = stdout[at + LOG_CHECK_MARKER.len()..]
        .lines()
        .next()
        .unwrap_or_default();
    assert_eq!(verdict, "ok", "{stdout}");
}

/// Run in a child process by `no_key_or_adm_reaches_the_reader_log_even_at_trace_level`.
/// Prints a verdict, never the log itself (it would show the test keys if the check failed).
#[test]
#[ignore = "helper run in a child process with a process-wide trace subscriber"]
fn child_personalises_with_trace_logging() {
    let log = CapturedLog::default();
    let sink = log.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .init();
    let leased = std::env::var("SIMFLOW_TEST_READER").expect("parent passes the reader");
    let (name, port) = leased.split_once('\t').expect("name and port");
    let reader = simflow_tests::pcsc::VirtualReader {
        name: name.to_string(),
        port: port.parse().expect("port"),
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let iccid = test_iccid();
    let keys = TestKeys::generate();
    let sim = SoftSim::new(CardImage::blank(&iccid, TEST_ADM1)).expect("image");
    let _card = runtime.block_on(async { sim.insert(reader.vpcd_addr()) });
    let script = write_script(
        &personalisation(&iccid, &keys, TEST_ADM1),
        &challenge(&keys),
    );
    let outcome =
        connect(&reader.name).and_then(|mut reader| run_script(&mut reader, &script).map(|_| ()));

    let text = String::from_utf8(log.0.lock().expect("log").clone())
        .expect("UTF-8 log")
        .to_lowercase();
    let adm_hex = hex::encode(Adm1::parse(TEST_ADM1).expect("ADM").bytes());
    let leaked = [hex::encode(keys.ki), hex::encode(keys.opc), adm_hex]
        .iter()
        .any(|secret| text.contains(secret));
    let verdict = match (outcome, leaked) {
        (Err(error), _) => format!("script failed: {}", error.code()),
        (Ok(()), true) => "a secret reached the log".to_string(),
        (Ok(()), false) if !text.contains("step (secret)") || !text.contains("ef.imsi") => {
            "steps were not logged".to_string()
        }
        (Ok(()), false) => "ok".to_string(),
    };
    println!("{LOG_CHECK_MARKER}{verdict}");
}
