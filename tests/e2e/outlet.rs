//! The outlet writer node through everything real: the central workers on RabbitMQ and
//! PostgreSQL, the node consuming its own queue as its own broker user, pcscd with vpcd readers,
//! and software SIMs in them. The counter flow from read to activation, each reader error,
//! a card pulled at every step, a node killed mid-write, duplicates, expiry, a wrong key, and
//! an outlet trying another outlet's queue.

use std::time::Duration;

use simflow_card::profile::{CardFamily, Script, SysmoIsimSja2, SysmoUsimSjs1};
use simflow_reader::ReaderError;
use simflow_runtime::amqp::{EventWatch, JobRoute, ReceivedEvent};
use simflow_runtime::outlet::OutletConnection;
use simflow_schemas::card::CardReadRequest;
use simflow_schemas::registry::{JobSet, OutletWorkJob};
use simflow_schemas::writecard::{
    OrderCancel, OrderPresubmit, OrderSubmit, WriteRequest, WriteScriptEnvelope,
};
use simflow_softsim::{CardImage, Faults, InsertedCard, SoftSim};
use simflow_tests::pcsc::{ReaderLease, VirtualReader};
use simflow_tests::process::SimflowProcess;
use simflow_tests::writing::{FIRST_MSISDN, ScratchDir, TestCard, WriteWorld, capture_work_as};
use uuid::Uuid;

use crate::card::lease;
use crate::support::{ANSWER, send};

/// How long a write through the node may take end to end (pulls and re-insertions included).
const WRITE: Duration = Duration::from_secs(40);

pub(crate) fn request(order_id: Uuid, outlet: &str, card: &TestCard, msisdn: u64) -> WriteRequest {
    WriteRequest {
        order_id,
        outlet_code: outlet.into(),
        staff_id: "C0601".into(),
        iccid: card.iccid.clone(),
        msisdn: msisdn.to_string(),
        customer_name: "李小龙".into(),
        package_code: "3G-96".into(),
    }
}

pub(crate) fn sim(card: &TestCard, faults: Faults) -> SoftSim {
    SoftSim::with_faults(CardImage::blank(&card.iccid, &card.adm1), faults).expect("card image")
}

/// A world of outlet HX01 with one card (its card data imported when `with_card_data`), one
/// leased reader and a scratch directory named `name` for the node's files. The lease is
/// returned last: keep it for the whole test.
async fn hx01_with_a_reader(
    name: &str,
    with_card_data: bool,
    settings_change: impl FnOnce(&mut simflow_runtime::Settings),
) -> anyhow::Result<(WriteWorld, VirtualReader, ScratchDir, ReaderLease)> {
    let world = WriteWorld::new(1, usize::from(with_card_data), &["HX01"], settings_change).await?;
    let readers = lease(1).await;
    let reader = readers.reader().clone();
    let dir = ScratchDir::new(name)?;
    Ok((world, reader, dir, readers))
}

/// The write request of a fresh order at HX01 for the world's first card and first number.
fn first_card_at_hx01(world: &WriteWorld, order_id: Uuid) -> WriteRequest {
    request(order_id, "HX01", &world.cards[0], FIRST_MSISDN)
}

/// Inserts the card and waits until pcscd shows it in the reader. vpcd accepts the card's TCP
/// connection before pcscd powers the card up; after many quick pulls and swaps on one reader
/// that power-up was seen to stall, so a card pcscd does not show within 5 s is put in again.
pub(crate) async fn insert(sim: &SoftSim, reader: &VirtualReader) -> InsertedCard {
    for _ in 0..3 {
        let mut inserted = sim.insert(reader.vpcd_addr());
        tokio::time::timeout(Duration::from_secs(10), inserted.connected())
            .await
            .expect("vpcd takes the card's connection");
        let name = reader.name.clone();
        let seen = tokio::task::spawn_blocking(move || {
            simflow_reader::Reader::open(&name)
                .and_then(|reader| reader.wait_for_card(Duration::from_secs(5)))
                .is_ok()
        })
        .await
        .expect("reader check");
        if seen {
            return inserted;
        }
        eprintln!(
            "pcscd did not show the card in {}; inserting it again",
            reader.name
        );
        inserted.remove().await;
        wait_empty(reader).await;
    }
    panic!("pcscd never showed the card in {}", reader.name);
}

/// Waits until pcscd shows the reader empty (a card swapped faster than pcscd polls looks
/// like no swap at all).
async fn wait_empty(reader: &VirtualReader) {
    let name = reader.name.clone();
    let empty = tokio::task::spawn_blocking(move || {
        simflow_reader::Reader::open(&name)
            .map(|reader| reader.wait_for_empty(Duration::from_secs(5)))
            .unwrap_or(false)
    })
    .await
    .expect("reader check");
    assert!(empty, "the reader still shows a card");
}

/// Asks outlet `outlet` to read the card in its writer; the central answer (`card.read`).
async fn read_at(world: &mut WriteWorld, outlet: &str) -> anyhow::Result<serde_json::Value> {
    let request_id = Uuid::new_v4();
    world
        .env
        .client
        .publish_job(
            &CardReadRequest {
                request_id,
                outlet_code: outlet.into(),
                staff_id: "C0601".into(),
            },
            &Uuid::new_v4().to_string(),
            JobRoute::Default,
        )
        .await?;
    let mut events = collect(&mut world.watch, 1, WRITE, |event| {
        event.routing_key == "card.read" && event.body["request_id"] == request_id.to_string()
    })
    .await?;
    Ok(events.remove(0).body)
}

/// Events until `count` satisfy `wanted` (others are dropped), within `timeout`.
async fn collect(
    watch: &mut EventWatch,
    count: usize,
    timeout: Duration,
    wanted: impl Fn(&ReceivedEvent) -> bool,
) -> anyhow::Result<Vec<ReceivedEvent>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut found = Vec::new();
    while found.len() < count {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let event = watch.next(left).await?;
        if wanted(&event) {
            found.push(event);
        }
    }
    Ok(found)
}

/// The write outcome (`card.written` or `card.write_failed`) of an order.
pub(crate) async fn write_outcome(
    watch: &mut EventWatch,
    order_id: Uuid,
) -> anyhow::Result<ReceivedEvent> {
    let order = order_id.to_string();
    let mut events = collect(watch, 1, WRITE, |event| {
        matches!(
            event.routing_key.as_str(),
            "card.written" | "card.write_failed"
        ) && event.body["order_id"] == order.as_str()
    })
    .await?;
    Ok(events.remove(0))
}

pub(crate) async fn publish_write(
    world: &WriteWorld,
    job: &WriteRequest,
) -> anyhow::Result<String> {
    let message_id = Uuid::new_v4().to_string();
    world
        .env
        .client
        .publish_job(job, &message_id, JobRoute::Default)
        .await?;
    Ok(message_id)
}

async fn order_numbers(world: &WriteWorld, order_id: Uuid) -> anyhow::Result<(String, String)> {
    Ok(
        sqlx::query_as("SELECT imsi, msisdn FROM writecard.orders WHERE order_id = $1")
            .bind(order_id)
            .fetch_one(&world.env.pool)
            .await?,
    )
}

async fn card_state(world: &WriteWorld, iccid: &str) -> anyhow::Result<String> {
    Ok(
        sqlx::query_scalar("SELECT state FROM inventory.cards WHERE iccid = $1")
            .bind(iccid)
            .fetch_one(&world.env.pool)
            .await?,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_outlets_write_at_once_and_the_orders_run_to_activation_and_cancellation()
-> anyhow::Result<()> {
    let mut world = WriteWorld::new(2, 2, &["HX01", "HX02"], |_| {}).await?;
    let readers = lease(2).await;
    let dir = ScratchDir::new("outlets")?;
    let hx01 = world.start_node(world.node_settings("HX01", &readers.readers()[0].name, &dir.0)?);
    let hx02 = world.start_node(world.node_settings("HX02", &readers.readers()[1].name, &dir.0)?);
    let sims = [
        sim(&world.cards[0], Faults::default()),
        sim(&world.cards[1], Faults::default()),
    ];
    let _in_hx01 = insert(&sims[0], &readers.readers()[0]).await;
    let _in_hx02 = insert(&sims[1], &readers.readers()[1]).await;

    // Read first, as the counter app does: both cards blank, writable here.
    for (outlet, iccid) in [
        ("HX01", world.cards[0].iccid.clone()),
        ("HX02", world.cards[1].iccid.clone()),
    ] {
        let read = read_at(&mut world, outlet).await?;
        assert_eq!(read["iccid"], iccid.as_str());
        assert_eq!(read["writable"], true, "{read}");
        assert_eq!(read["card_type"], "USIM128K_NORMAL");
    }

    // Both writes at once.
    let orders = [Uuid::new_v4(), Uuid::new_v4()];
    publish_write(
        &world,
        &request(orders[0], "HX01", &world.cards[0], FIRST_MSISDN),
    )
    .await?;
    publish_write(
        &world,
        &request(orders[1], "HX02", &world.cards[1], FIRST_MSISDN + 1),
    )
    .await?;
    let ids: Vec<String> = orders.iter().map(Uuid::to_string).collect();
    let written = collect(&mut world.watch, 2, WRITE, |event| {
        event.routing_key == "card.written"
            && ids.iter().any(|id| event.body["order_id"] == id.as_str())
    })
    .await?;
    assert_eq!(written.len(), 2);
    for (index, order_id) in orders.iter().enumerate() {
        let (imsi, msisdn) = order_numbers(&world, *order_id).await?;
        assert_eq!(msisdn, (FIRST_MSISDN + index as u64).to_string());
        assert_eq!(
            sims[index].snapshot().imsi().as_deref(),
            Some(imsi.as_str()),
            "card {index} holds its order's IMSI"
        );
        assert_eq!(
            card_state(&world, &world.cards[index].iccid).await?,
            "written"
        );
    }

    // Order 0 runs to activation: pre-submit (fees, acceptance form), submit.
    let presubmitted = send(
        &world.env,
        &mut world.watch,
        &OrderPresubmit {
            order_id: orders[0],
            staff_id: "C0601".into(),
        },
    )
    .await?;
    assert_eq!(
        presubmitted.routing_key, "order.presubmitted",
        "{}",
        presubmitted.body
    );
    let form = presubmitted.body["acceptance_form"]
        .as_str()
        .unwrap_or_default();
    assert!(form.contains(&world.cards[0].iccid) && form.contains(&FIRST_MSISDN.to_string()));
    assert!(
        form.contains("李**"),
        "the customer's name is masked: {form}"
    );
    assert!(!form.contains("李小龙"));
    let activated = send(
        &world.env,
        &mut world.watch,
        &OrderSubmit {
            order_id: orders[0],
            staff_id: "C0601".into(),
        },
    )
    .await?;
    assert_eq!(
        activated.routing_key, "order.activated",
        "{}",
        activated.body
    );
    let (imsi, _) = order_numbers(&world, orders[0]).await?;
    assert_eq!(activated.body["imsi"], imsi.as_str());
    assert_eq!(activated.body["iccid"], world.cards[0].iccid.as_str());
    let text = activated.body.to_string().to_lowercase();
    assert!(
        !text.contains(&world.cards[0].ki.to_lowercase()),
        "no key in the activation"
    );
    assert_eq!(card_state(&world, &world.cards[0].iccid).await?, "sold");

    // Order 1 is cancelled after the write: the number goes back, the written card is withdrawn.
    let cancelled = send(
        &world.env,
        &mut world.watch,
        &OrderCancel {
            order_id: orders[1],
            staff_id: "C0601".into(),
            reason: "customer changed their mind".into(),
        },
    )
    .await?;
    assert_eq!(
        cancelled.routing_key, "order.cancelled",
        "{}",
        cancelled.body
    );
    assert_ne!(cancelled.body["card_disposition"], "blank");
    assert_ne!(card_state(&world, &world.cards[1].iccid).await?, "blank");

    // The clerk saw "done" on both nodes.
    for node in [&hx01, &hx02] {
        let state = node.health.snapshot()["reader"].state.clone();
        assert!(state.contains("写卡成功"), "{state}");
    }
    hx01.stop().await?;
    hx02.stop().await?;
    world.stop().await
}

/// Reads through the node: an empty reader, a finished card and a mute card, each with the
/// deck's words, and a blank card answered as writable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_through_the_node_answers_with_the_decks_reader_errors() -> anyhow::Result<()> {
    let (mut world, reader, dir, _readers) = hx01_with_a_reader("reads", true, |_| {}).await?;
    let mut settings = world.node_settings("HX01", &reader.name, &dir.0)?;
    settings.card_wait_seconds = 2;
    let node = world.start_node(settings);

    // No card within the wait.
    let empty = read_at(&mut world, "HX01").await?;
    assert_eq!(empty["writable"], false);
    assert_eq!(empty["problem"]["code"], "NO_CARD");
    assert_eq!(
        empty["problem"]["message_zh"],
        "连接写卡器失败，请尝试重新插入白卡！"
    );

    // A finished card (already written).
    let finished = SoftSim::new(CardImage::finished(
        &world.cards[0].iccid,
        &world.cards[0].adm1,
        "001010123456789",
    ))?;
    let inserted = insert(&finished, &reader).await;
    let answer = read_at(&mut world, "HX01").await?;
    assert_eq!(answer["writable"], false);
    assert_eq!(answer["problem"]["message_zh"], "请更换白卡！");
    inserted.remove().await;
    wait_empty(&reader).await;

    // A mute card.
    let mute = sim(
        &world.cards[0],
        Faults {
            mute: true,
            ..Faults::default()
        },
    );
    let inserted = mute.insert(reader.vpcd_addr());
    let name = reader.name.clone();
    let shown_mute = tokio::task::spawn_blocking(move || {
        simflow_reader::Reader::open(&name)
            .map(|reader| reader.wait_for_card(Duration::from_secs(10)))
            .is_ok_and(|state| matches!(state, Err(ReaderError::CardUnusable { .. })))
    })
    .await?;
    assert!(shown_mute, "pcscd shows the mute card as mute");
    let answer = read_at(&mut world, "HX01").await?;
    assert_eq!(answer["problem"]["message_zh"], "请更换白卡！", "{answer}");
    inserted.remove().await;
    wait_empty(&reader).await;

    // The blank card itself.
    let blank = sim(&world.cards[0], Faults::default());
    let inserted = insert(&blank, &reader).await;
    let answer = read_at(&mut world, "HX01").await?;
    assert_eq!(answer["writable"], true, "{answer}");
    assert_eq!(answer["iccid"], world.cards[0].iccid.as_str());
    assert_eq!(blank.snapshot().imsi(), None, "a read writes nothing");
    inserted.remove().await;
    node.stop().await?;
    world.stop().await
}

/// A node whose PC/SC service is missing (its process points at a socket that does not exist)
/// answers reads with 写卡器驱动未安装。 and says so on /healthz.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_pcsc_service_says_the_driver_is_not_installed() -> anyhow::Result<()> {
    let mut world = WriteWorld::new(1, 1, &["HX01"], |_| {}).await?;
    let dir = ScratchDir::new("nodriver")?;
    let settings = world.node_settings("HX01", "simflow vpcd 0 00 00", &dir.0)?;
    let process = start_node_process(
        &world,
        &settings,
        &[("PCSCLITE_CSOCK_NAME", "/nonexistent/pcscd.comm")],
    )?;
    let read = read_at(&mut world, "HX01").await?;
    assert_eq!(read["problem"]["code"], "READER_DRIVER_MISSING");
    assert_eq!(read["problem"]["message_zh"], "写卡器驱动未安装。");
    process.terminate()?;
    drop(process);
    world.stop().await
}

fn start_node_process(
    world: &WriteWorld,
    settings: &simflow_outlet::OutletSettings,
    extra: &[(&str, &str)],
) -> anyhow::Result<SimflowProcess> {
    use secrecy::ExposeSecret;
    let mut env = vec![
        ("SIMFLOW__OUTLET__CODE".to_owned(), settings.code.clone()),
        (
            "SIMFLOW__OUTLET__READER".to_owned(),
            settings.reader.clone(),
        ),
        (
            "SIMFLOW__OUTLET__KEY_FILE".to_owned(),
            settings.key_file.display().to_string(),
        ),
        (
            "SIMFLOW__OUTLET__JOURNAL".to_owned(),
            settings.journal.display().to_string(),
        ),
        (
            "SIMFLOW__OUTLET__BROKER_URI".to_owned(),
            settings
                .broker_uri
                .as_ref()
                .map(|uri| uri.expose_secret().to_owned())
                .unwrap_or_default(),
        ),
        (
            "SIMFLOW__OUTLET__CARD_WAIT_SECONDS".to_owned(),
            settings.card_wait_seconds.to_string(),
        ),
        (
            "SIMFLOW__OUTLET__REINSERT_WAIT_SECONDS".to_owned(),
            settings.reinsert_wait_seconds.to_string(),
        ),
    ];
    env.extend(
        extra
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned())),
    );
    SimflowProcess::start_with(&world.env.settings, &["outlet", "run"], &env)
}

/// The card pulled after every possible APDU of a write (identification, script, GET RESPONSE)
/// and put back: each write ends either written with the order's IMSI (the node read the card
/// back and ran the script again) or failed with the card untouched and still blank. Never a
/// card with another number, never a number on two cards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_card_pulled_at_every_step_ends_written_or_untouched() -> anyhow::Result<()> {
    let keys = crate::card::TestKeys::generate();
    let p = crate::card::personalisation(&crate::card::test_iccid(), &keys, "12345678");
    let sample = crate::card::write_script(&p, &crate::card::challenge(&keys));
    let identification = SysmoIsimSja2::default().identify_script().len();
    // Identification, every script step, and the GET RESPONSE of the AUTHENTICATE.
    let apdus = (identification + sample.steps.len() + 1) as u64;
    let mut world = WriteWorld::new(apdus, apdus as usize, &["HX01"], |_| {}).await?;
    let readers = lease(1).await;
    let reader = readers.reader().clone();
    let dir = ScratchDir::new("pulls")?;
    let node = world.start_node(world.node_settings("HX01", &reader.name, &dir.0)?);
    let mut imsis = std::collections::BTreeSet::new();
    let mut outcomes = Vec::new();
    for pull_after in 1..=apdus {
        let card = world.cards[(pull_after - 1) as usize].clone();
        let sim = sim(
            &card,
            Faults {
                pull_after_apdus: Some(pull_after),
                reinsert_after: Some(Duration::from_millis(1200)),
                ..Faults::default()
            },
        );
        let inserted = insert(&sim, &reader).await;
        let order_id = Uuid::new_v4();
        publish_write(
            &world,
            &request(order_id, "HX01", &card, FIRST_MSISDN + pull_after),
        )
        .await?;
        let outcome = write_outcome(&mut world.watch, order_id).await?;
        let on_card = sim.snapshot().imsi();
        match outcome.routing_key.as_str() {
            "card.written" => {
                let (imsi, _) = order_numbers(&world, order_id).await?;
                assert_eq!(
                    on_card.as_deref(),
                    Some(imsi.as_str()),
                    "pull after {pull_after}"
                );
                assert!(imsis.insert(imsi), "an IMSI on two cards");
                assert_eq!(card_state(&world, &card.iccid).await?, "written");
            }
            _ => {
                assert_eq!(
                    outcome.body["card_state"], "untouched",
                    "pull after {pull_after}: {}",
                    outcome.body
                );
                assert_eq!(
                    on_card, None,
                    "pull after {pull_after}: an untouched card is blank"
                );
                assert_eq!(card_state(&world, &card.iccid).await?, "blank");
            }
        }
        outcomes.push((pull_after, outcome.routing_key.clone()));
        inserted.remove().await;
        wait_empty(&reader).await;
    }
    // A pull during the identification (before anything is written) fails the write untouched;
    // from the first script APDU on, the node follows the card back and finishes it.
    for (pull_after, key) in &outcomes {
        if *pull_after > identification as u64 {
            assert_eq!(key, "card.written", "pull after APDU {pull_after}");
        }
    }
    node.stop().await?;
    world.stop().await
}

/// A card type mapped to the sysmoUSIM-SJS1 at the centre: the script routed to the outlet is an
/// SJS1 script, the node writes the SJS1 in the reader with it, and the centre accepts the card's
/// answer to the challenge.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_card_type_mapped_to_the_sjs1_is_written_with_an_sjs1_script() -> anyhow::Result<()> {
    let mut world = WriteWorld::new(1, 1, &["HX01"], |settings| {
        let key = "writecard.card_families.USIM128K_NORMAL";
        if let Ok(changed) = settings.with_value(key, SysmoUsimSjs1::NAME) {
            *settings = changed;
        }
    })
    .await?;
    let readers = lease(1).await;
    let reader = readers.reader().clone();
    let dir = ScratchDir::new("sjs1")?;
    let card = world.cards[0].clone();
    let order_id = Uuid::new_v4();
    let (message_id, envelope) = capture_script(
        &world,
        "HX01",
        &request(order_id, "HX01", &card, FIRST_MSISDN),
    )
    .await?;
    let plaintext = world.outlets[0].keys.open(&envelope.sealed_script)?;
    let script: Script = serde_json::from_slice(&plaintext)?;
    assert_eq!(script.family, SysmoUsimSjs1::NAME);
    let sim = SoftSim::new(CardImage::blank_of(
        SysmoUsimSjs1::NAME,
        &card.iccid,
        &card.adm1,
    ))?;
    let inserted = insert(&sim, &reader).await;
    let node = world.start_node(world.node_settings("HX01", &reader.name, &dir.0)?);
    deliver_to_hx01(&world, &envelope, &message_id).await?;
    let outcome = write_outcome(&mut world.watch, order_id).await?;
    assert_eq!(outcome.routing_key, "card.written", "{}", outcome.body);
    let (imsi, _) = order_numbers(&world, order_id).await?;
    assert_eq!(sim.snapshot().imsi().as_deref(), Some(imsi.as_str()));
    assert_eq!(card_state(&world, &card.iccid).await?, "written");
    inserted.remove().await;
    node.stop().await?;
    world.stop().await
}

/// A node process in the middle of a write: the world's first card (with slow writes) sits in
/// `reader`, the node takes the order's script, and this returns once the card has taken
/// three writes, before EF.IMSI, with the card, its insertion, the order and the process.
async fn node_mid_write(
    world: &WriteWorld,
    reader: &VirtualReader,
    settings: &simflow_outlet::OutletSettings,
) -> anyhow::Result<(SoftSim, InsertedCard, Uuid, SimflowProcess)> {
    let sim = sim(
        &world.cards[0],
        Faults {
            update_delay: Some(Duration::from_millis(250)),
            ..Faults::default()
        },
    );
    let inserted = insert(&sim, reader).await;
    let process = start_node_process(world, settings, &[])?;
    let order_id = Uuid::new_v4();
    publish_write(world, &first_card_at_hx01(world, order_id)).await?;
    let deadline = tokio::time::Instant::now() + WRITE;
    while sim.counters().ins(0xD6) + sim.counters().ins(0xDC) < 3 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the node never started writing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((sim, inserted, order_id, process))
}

/// A node process SIGKILLed in the middle of a write, before EF.IMSI (see [`node_mid_write`]).
async fn kill_node_mid_write(
    world: &WriteWorld,
    reader: &VirtualReader,
    settings: &simflow_outlet::OutletSettings,
) -> anyhow::Result<(SoftSim, InsertedCard, Uuid)> {
    let (sim, inserted, order_id, mut process) = node_mid_write(world, reader, settings).await?;
    process.kill().await?;
    anyhow::ensure!(
        sim.snapshot().imsi().is_none(),
        "the node was killed only after EF.IMSI was written"
    );
    Ok((sim, inserted, order_id))
}

/// The node is stopped (SIGTERM, as systemd stops it for an upgrade) while it writes: it
/// finishes the card first, publishes the outcome, and exits 0; its journal needs no recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_stopped_mid_write_finishes_the_card_first() -> anyhow::Result<()> {
    let (mut world, reader, dir, _readers) = hx01_with_a_reader("stopped", true, |_| {}).await?;
    let settings = world.node_settings("HX01", &reader.name, &dir.0)?;
    let (sim, _inserted, order_id, mut process) =
        node_mid_write(&world, &reader, &settings).await?;
    assert!(
        sim.snapshot().imsi().is_none(),
        "stopped before EF.IMSI was written"
    );
    process.terminate()?;
    let status = tokio::time::timeout(WRITE, process.wait()).await??;
    assert!(
        status.success(),
        "the node exits 0 after its card: {status}"
    );

    let outcome = write_outcome(&mut world.watch, order_id).await?;
    assert_eq!(outcome.routing_key, "card.written", "{}", outcome.body);
    let (imsi, _) = order_numbers(&world, order_id).await?;
    assert_eq!(sim.snapshot().imsi().as_deref(), Some(imsi.as_str()));
    let steps = journal_steps(&settings.journal).await?;
    assert!(
        !steps.iter().any(|step| step == "recovering"),
        "finished by the stopping node, not by a recovery: {steps:?}"
    );
    world.stop().await
}

/// The node process is killed (SIGKILL) while it writes: the broker gives the script back, the
/// restarted node finds "writing" in its journal, reads the card, finishes the write, and the
/// card is written exactly once with the order's number.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_mid_write_resumes_from_its_journal() -> anyhow::Result<()> {
    let (mut world, reader, dir, _readers) = hx01_with_a_reader("killed", true, |_| {}).await?;
    let settings = world.node_settings("HX01", &reader.name, &dir.0)?;
    let (sim, _inserted, order_id) = kill_node_mid_write(&world, &reader, &settings).await?;

    let mut restarted = start_node_process(&world, &settings, &[])?;
    let outcome = write_outcome(&mut world.watch, order_id).await?;
    assert_eq!(outcome.routing_key, "card.written", "{}", outcome.body);
    let (imsi, _) = order_numbers(&world, order_id).await?;
    assert_eq!(sim.snapshot().imsi().as_deref(), Some(imsi.as_str()));
    // Published once: nothing more for this order.
    let more = world.watch.drain(Duration::from_secs(2)).await;
    assert!(
        more.iter()
            .all(|event| event.body["order_id"] != order_id.to_string()
                || event.message_id == outcome.message_id),
        "a second, different outcome: {more:?}"
    );
    restarted.terminate()?;
    assert!(restarted.wait().await?.success());
    let steps = journal_steps(&settings.journal).await?;
    assert!(steps.iter().any(|step| step == "recovering"), "{steps:?}");
    assert_eq!(
        steps.iter().filter(|step| *step == "writing").count(),
        1,
        "{steps:?}"
    );
    world.stop().await
}

async fn journal_steps(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let journal = simflow_outlet::journal::Journal::open(path).await?;
    let script: String = {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display())).await?;
        let id = sqlx::query_scalar("SELECT script_id FROM scripts")
            .fetch_one(&pool)
            .await?;
        pool.close().await;
        id
    };
    let steps = journal
        .steps(Uuid::parse_str(&script)?)
        .await?
        .into_iter()
        .map(|(step, _)| step)
        .collect();
    journal.close().await;
    Ok(steps)
}

/// Put a captured script on HX01's queue again, under its message id.
pub(crate) async fn deliver_to_hx01(
    world: &WriteWorld,
    envelope: &WriteScriptEnvelope,
    message_id: &str,
) -> anyhow::Result<()> {
    world
        .env
        .client
        .publish_job(envelope, message_id, JobRoute::Outlet("HX01"))
        .await?;
    Ok(())
}

/// The envelope the central worker routes for `job`, taken off the outlet's queue.
pub(crate) async fn capture_script(
    world: &WriteWorld,
    code: &str,
    job: &WriteRequest,
) -> anyhow::Result<(String, WriteScriptEnvelope)> {
    let mut capture = world.capture_outlet_work(code)?;
    publish_write(world, job).await?;
    let work = capture.next(ANSWER).await?;
    capture.stop().await?;
    let OutletWorkJob::WriteScript(envelope) = work.job else {
        anyhow::bail!("not a script: {:?}", work.job.message_type())
    };
    Ok((work.message_id, envelope))
}

/// The same script delivered twice (a duplicate publish): the card is written once and the
/// second delivery is answered from the journal without touching the card.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_duplicate_script_is_answered_from_the_journal() -> anyhow::Result<()> {
    let (mut world, reader, dir, _readers) = hx01_with_a_reader("duplicate", true, |_| {}).await?;
    let order_id = Uuid::new_v4();
    let (message_id, envelope) =
        capture_script(&world, "HX01", &first_card_at_hx01(&world, order_id)).await?;
    let sim = sim(&world.cards[0], Faults::default());
    let inserted = insert(&sim, &reader).await;
    let node = world.start_node(world.node_settings("HX01", &reader.name, &dir.0)?);
    deliver_to_hx01(&world, &envelope, &message_id).await?;
    let first = write_outcome(&mut world.watch, order_id).await?;
    assert_eq!(first.routing_key, "card.written", "{}", first.body);
    let apdus = sim.counters().total;
    inserted.remove().await;
    // Again, with the card gone: the stored answer, no card needed.
    deliver_to_hx01(&world, &envelope, &message_id).await?;
    let again = write_outcome(&mut world.watch, order_id).await?;
    assert_eq!(again.routing_key, "card.written");
    assert_eq!(
        again.message_id, first.message_id,
        "the same outcome, not a new one"
    );
    assert_eq!(
        sim.counters().total,
        apdus,
        "the card was not touched again"
    );
    let written: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM inventory.card_ledger WHERE iccid = $1 AND state_after = 'written'",
    )
    .bind(&world.cards[0].iccid)
    .fetch_one(&world.env.pool)
    .await?;
    assert_eq!(written, 1, "written once in the ledger");
    node.stop().await?;
    world.stop().await
}

/// A script that reaches the writer after its `not_after` (an old script published again) is
/// answered as expired and the card is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_script_is_refused_by_the_node_and_the_card_left_blank() -> anyhow::Result<()> {
    let (mut world, reader, dir, _readers) = hx01_with_a_reader("expired", true, |settings| {
        if let Ok(changed) = settings.with_value("writecard.script_ttl_seconds", 1) {
            *settings = changed;
        }
    })
    .await?;
    let order_id = Uuid::new_v4();
    let (message_id, envelope) =
        capture_script(&world, "HX01", &first_card_at_hx01(&world, order_id)).await?;
    // Wait until the script's own deadline has passed (the broker's TTL is longer).
    let left = (envelope.not_after - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(100)).await;
    assert!(chrono::Utc::now() > envelope.not_after);
    let sim = sim(&world.cards[0], Faults::default());
    let _inserted = insert(&sim, &reader).await;
    let node = world.start_node(world.node_settings("HX01", &reader.name, &dir.0)?);
    deliver_to_hx01(&world, &envelope, &message_id).await?;
    let outcome = write_outcome(&mut world.watch, order_id).await?;
    assert_eq!(outcome.routing_key, "card.write_failed");
    assert_eq!(outcome.body["reason"]["code"], "SCRIPT_EXPIRED");
    assert_eq!(outcome.body["card_state"], "untouched");
    assert_eq!(sim.counters().total, 0, "the node did not touch the card");
    assert_eq!(card_state(&world, &world.cards[0].iccid).await?, "blank");
    node.stop().await?;
    world.stop().await
}

/// A node holding another key than the one provisioned cannot open its scripts: it refuses
/// them, the broker dead-letters them to the central side, and ops hear of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_script_sealed_for_another_key_is_refused_and_reaches_ops() -> anyhow::Result<()> {
    let (mut world, reader, dir, _readers) = hx01_with_a_reader("wrongkey", true, |_| {}).await?;
    let mut settings = world.node_settings("HX01", &reader.name, &dir.0)?;
    settings.key_file = dir.0.join("other.key");
    simflow_outlet::generate_key_file(&settings.key_file)?;
    let sim = sim(&world.cards[0], Faults::default());
    let _inserted = insert(&sim, &reader).await;
    let node = world.start_node(settings);
    let order_id = Uuid::new_v4();
    publish_write(&world, &first_card_at_hx01(&world, order_id)).await?;
    let failed = collect(&mut world.watch, 1, WRITE, |event| {
        event.routing_key.ends_with(".failed")
    })
    .await?;
    assert_eq!(
        failed[0].body["reason"]["code"], "OUTLET_REFUSED_WORK",
        "{}",
        failed[0].body
    );
    assert_eq!(sim.counters().total, 0, "the card was never touched");
    assert_eq!(card_state(&world, &world.cards[0].iccid).await?, "blank");
    node.stop().await?;
    world.stop().await
}

/// An outlet's broker user cannot consume another outlet's queue: the node stops with the
/// broker's refusal instead of retrying forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outlet_cannot_read_another_outlets_queue() -> anyhow::Result<()> {
    let world = WriteWorld::new(1, 1, &["HX01", "HX02"], |_| {}).await?;
    let connection = OutletConnection {
        uri: world.outlet_uri("HX01")?,
        failover_uris: Vec::new(),
        outlet_code: "HX02".into(),
        user: simflow_runtime::outlet::outlet_user(&world.env.vhost, "HX01"),
        tls: None,
    };
    let refused = simflow_runtime::outlet::check_access(&connection).await;
    assert!(refused.is_err(), "HX01 may not touch HX02's queue");
    let ended = capture_work_as(connection).ended(ANSWER).await?;
    let error = ended.expect_err("the broker refuses");
    assert!(error.to_string().contains("refused"), "{error}");
    // Its own queue is fine.
    simflow_runtime::outlet::check_access(&OutletConnection {
        uri: world.outlet_uri("HX01")?,
        failover_uris: Vec::new(),
        outlet_code: "HX01".into(),
        user: simflow_runtime::outlet::outlet_user(&world.env.vhost, "HX01"),
        tls: None,
    })
    .await?;
    world.stop().await
}

/// The missing card data file: the write request is dead-lettered WRITE_SCRIPT_MISSING, the
/// file is imported, the dead letter replayed, and the node writes the card.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replaying_a_missing_script_after_the_import_writes_the_card() -> anyhow::Result<()> {
    let (mut world, reader, dir, _readers) = hx01_with_a_reader("replay", false, |_| {}).await?;
    let node = world.start_node(world.node_settings("HX01", &reader.name, &dir.0)?);
    let sim = sim(&world.cards[0], Faults::default());
    let _inserted = insert(&sim, &reader).await;
    let order_id = Uuid::new_v4();
    let message_id = publish_write(&world, &first_card_at_hx01(&world, order_id)).await?;
    let failed = world.watch.next_for(&message_id, ANSWER).await?;
    assert_eq!(failed.body["reason"]["code"], "WRITE_SCRIPT_MISSING");
    assert_eq!(
        failed.body["reason"]["message_zh"],
        "写卡脚本内容不存在，请把号卡文件维护到数据库！"
    );
    assert_eq!(sim.counters().total, 0);
    world.import_card_data(&world.cards.clone()).await?;
    simflow_runtime::deadletter::replay(
        world.env.client.connection(),
        &world.env.pool,
        simflow_schemas::topology::JobQueue::WriteCard,
        &simflow_runtime::deadletter::Selection::MessageId(message_id),
    )
    .await?;
    let outcome = write_outcome(&mut world.watch, order_id).await?;
    assert_eq!(outcome.routing_key, "card.written", "{}", outcome.body);
    let (imsi, _) = order_numbers(&world, order_id).await?;
    assert_eq!(sim.snapshot().imsi().as_deref(), Some(imsi.as_str()));
    node.stop().await?;
    world.stop().await
}

/// The node is killed mid-write and stays down until its script has expired in the queue (the
/// central side already told the clerk the write timed out). On restart the journal says a
/// write was under way: the node reads the card, finishes it and reports it without any
/// delivery, and the central side records the card as written with the order's IMSI.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_down_until_its_script_expired_finishes_the_write_from_its_journal()
-> anyhow::Result<()> {
    let (mut world, reader, dir, _readers) =
        hx01_with_a_reader("expired-crash", true, |settings| {
            if let Ok(changed) = settings.with_value("writecard.script_ttl_seconds", 4) {
                *settings = changed;
            }
        })
        .await?;
    let settings = world.node_settings("HX01", &reader.name, &dir.0)?;
    let (sim, _inserted, order_id) = kill_node_mid_write(&world, &reader, &settings).await?;
    // The script expires while the node is down; the clerk hears the write timed out.
    let expired = write_outcome(&mut world.watch, order_id).await?;
    assert_eq!(expired.routing_key, "card.write_failed", "{}", expired.body);
    assert_eq!(expired.body["reason"]["code"], "SCRIPT_EXPIRED");

    let mut restarted = start_node_process(&world, &settings, &[])?;
    let finished = write_outcome(&mut world.watch, order_id).await?;
    assert_eq!(finished.routing_key, "card.written", "{}", finished.body);
    let (imsi, _) = order_numbers(&world, order_id).await?;
    assert_eq!(sim.snapshot().imsi().as_deref(), Some(imsi.as_str()));
    assert_eq!(card_state(&world, &world.cards[0].iccid).await?, "written");
    restarted.terminate()?;
    assert!(restarted.wait().await?.success());
    world.stop().await
}
