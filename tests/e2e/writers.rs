//! The writer ledger (写卡器发放明细) end to end: the steps as jobs through the broker (a
//! redelivered job answered from the inbox, a repeated step answered `already`), and the
//! centre's check of the reader with the real pcscd, vpcd and the software SIM: a write from the
//! reader issued to the outlet passes; one from a reader not issued there is recorded and
//! flagged (`flag`), or gets no script until the branch issues that reader (`refuse`).

use std::time::Duration;

use simflow_runtime::amqp::{EventWatch, ReceivedEvent};
use simflow_schemas::writers::{WriterIssue, WriterPurchase, WriterReturn, WriterWriteOff};
use simflow_softsim::Faults;
use simflow_tests::writing::{FIRST_MSISDN, ScratchDir, WriteWorld};
use uuid::Uuid;

use crate::card::lease;
use crate::outlet::{insert, publish_write, request, sim, write_outcome};
use crate::support::{ANSWER, rejection_code, send, send_with_id};

const HEXI: &str = "130041";

fn purchase(serial: &str) -> WriterPurchase {
    WriterPurchase {
        writer_serial: serial.into(),
        model: "ACR39U".into(),
        purchase_ref: "SC-2026-0412".into(),
        branch: HEXI.into(),
        staff_id: "M0001".into(),
    }
}

fn issue(serial: &str, outlet: &str) -> WriterIssue {
    WriterIssue {
        writer_serial: serial.into(),
        branch: HEXI.into(),
        outlet_code: outlet.into(),
        staff_id: "S0601".into(),
    }
}

fn serial(prefix: &str) -> String {
    format!("{prefix}-{}", &Uuid::new_v4().simple().to_string()[..8])
}

async fn ledger_entries(world: &WriteWorld, serial: &str) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM inventory.writer_ledger WHERE writer_serial = $1")
            .bind(serial)
            .fetch_one(&world.env.pool)
            .await?,
    )
}

/// Purchases `serial` for Hexi and issues it to `outlet`.
async fn issued_writer(world: &mut WriteWorld, serial: &str, outlet: &str) -> anyhow::Result<()> {
    let bought = send(&world.env, &mut world.watch, &purchase(serial)).await?;
    assert_eq!(bought.routing_key, "writer.purchased", "{}", bought.body);
    let issued = send(&world.env, &mut world.watch, &issue(serial, outlet)).await?;
    assert_eq!(issued.routing_key, "writer.issued", "{}", issued.body);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_steps_travel_as_jobs_and_a_redelivered_or_repeated_step_has_one_effect()
-> anyhow::Result<()> {
    let mut world = WriteWorld::new(1, 0, &["HX01", "HX02"], |_| {}).await?;
    let writer = serial("ACR");
    let message_id = Uuid::new_v4().to_string();
    let bought = send_with_id(
        &world.env,
        &mut world.watch,
        &purchase(&writer),
        &message_id,
    )
    .await?;
    assert_eq!(bought.routing_key, "writer.purchased", "{}", bought.body);
    assert_eq!(bought.body["state"], "in_stock");
    // The same message again (a redelivery or a publisher's retry): the inbox's answer.
    let again = send_with_id(
        &world.env,
        &mut world.watch,
        &purchase(&writer),
        &message_id,
    )
    .await?;
    assert_eq!(again.message_id, bought.message_id, "the same outgoing id");
    assert_eq!(again.body, bought.body);
    // The clerk records the purchase a second time: a new message, no second effect.
    let repeated = send(&world.env, &mut world.watch, &purchase(&writer)).await?;
    assert_eq!(repeated.body["already"], true, "{}", repeated.body);
    assert_eq!(ledger_entries(&world, &writer).await?, 1);

    let issued = send(&world.env, &mut world.watch, &issue(&writer, "HX01")).await?;
    assert_eq!(issued.routing_key, "writer.issued", "{}", issued.body);
    assert_eq!(issued.body["agent_ess_code"], "ESS0601");
    let second = serial("ACR");
    send(&world.env, &mut world.watch, &purchase(&second)).await?;
    let refused = send(&world.env, &mut world.watch, &issue(&second, "HX01")).await?;
    assert_eq!(refused.routing_key, "issue.rejected");
    assert_eq!(rejection_code(&refused), "WRITER_OUTLET_HAS_WRITER");
    assert_eq!(
        refused.body["reason"]["message_zh"],
        "该网点已有写卡器，请先收回"
    );

    let back = WriterReturn {
        writer_serial: writer.clone(),
        branch: HEXI.into(),
        staff_id: "S0601".into(),
    };
    let returned = send(&world.env, &mut world.watch, &back).await?;
    assert_eq!(returned.routing_key, "writer.returned", "{}", returned.body);
    let off = WriterWriteOff {
        writer_serial: writer.clone(),
        branch: HEXI.into(),
        reason: "外壳破损".into(),
        staff_id: "S0601".into(),
    };
    let written_off = send(&world.env, &mut world.watch, &off).await?;
    assert_eq!(written_off.routing_key, "writer.written_off");
    let after = send(&world.env, &mut world.watch, &issue(&writer, "HX02")).await?;
    assert_eq!(rejection_code(&after), "WRITER_WRITTEN_OFF");
    assert_eq!(ledger_entries(&world, &writer).await?, 4);
    world.stop().await
}

/// Events until one satisfies `wanted`, within `timeout`; returns it and every event before it.
async fn until(
    watch: &mut EventWatch,
    timeout: Duration,
    wanted: impl Fn(&ReceivedEvent) -> bool,
) -> anyhow::Result<(ReceivedEvent, Vec<ReceivedEvent>)> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut before = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let event = watch.next(left).await?;
        if wanted(&event) {
            return Ok((event, before));
        }
        before.push(event);
    }
}

/// The reader outlet `outlet` last reported, once it has reported one (bounded wait).
async fn reported_reader(world: &WriteWorld, outlet: &str) -> anyhow::Result<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + ANSWER;
    loop {
        let reader: Option<Option<serde_json::Value>> = sqlx::query_scalar(
            "SELECT reader FROM writecard.reader_reports WHERE outlet_code = $1",
        )
        .bind(outlet)
        .fetch_optional(&world.env.pool)
        .await?;
        if let Some(reader) = reader {
            return Ok(reader.unwrap_or_default());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "outlet {outlet} never reported its reader"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn is_foreign_reader(event: &ReceivedEvent, seen_in: &str) -> bool {
    event.routing_key == "writer.foreign_reader" && event.body["seen_in"] == seen_in
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_from_the_issued_reader_passes_and_one_from_another_is_recorded_and_flagged()
-> anyhow::Result<()> {
    let mut world = WriteWorld::new(2, 2, &["HX01", "HX02"], |_| {}).await?;
    let readers = lease(1).await;
    let reader = readers.reader().clone();
    let dir = ScratchDir::new("writers-flag")?;
    let ours = serial("VPCD");
    let theirs = serial("VPCD");
    issued_writer(&mut world, &ours, "HX01").await?;
    issued_writer(&mut world, &theirs, "HX02").await?;

    // HX01 writes with the reader the branch issued to it.
    let mut settings = world.node_settings("HX01", &reader.name, &dir.0)?;
    settings
        .reader_serials
        .insert(reader.name.clone(), ours.clone());
    let node = world.start_node(settings.clone());
    let reported = reported_reader(&world, "HX01").await?;
    assert_eq!(reported["name"], reader.name.as_str());
    assert_eq!(reported["serial"], ours.as_str());
    // vpcd's driver answers no IFD serial number, so the configured serial is the one reported.
    assert_eq!(reported["serial_source"], "configured", "{reported}");
    let first = sim(&world.cards[0], Faults::default());
    let inserted = insert(&first, &reader).await;
    let order = Uuid::new_v4();
    publish_write(
        &world,
        &request(order, "HX01", &world.cards[0], FIRST_MSISDN),
    )
    .await?;
    let written = write_outcome(&mut world.watch, order).await?;
    assert_eq!(written.routing_key, "card.written", "{}", written.body);
    let flags: i64 = sqlx::query_scalar("SELECT count(*) FROM writecard.foreign_readers")
        .fetch_one(&world.env.pool)
        .await?;
    assert_eq!(flags, 0, "the issued reader raised no flag");
    let recorded: Option<String> =
        sqlx::query_scalar("SELECT reader_serial FROM writecard.scripts WHERE order_id = $1")
            .bind(order)
            .fetch_one(&world.env.pool)
            .await?;
    assert_eq!(recorded.as_deref(), Some(ours.as_str()));
    node.stop().await?;
    inserted.remove().await;

    // The same outlet now runs HX02's writer: flagged when it connects and with the write,
    // and the card it writes is recorded all the same.
    settings
        .reader_serials
        .insert(reader.name.clone(), theirs.clone());
    let node = world.start_node(settings);
    let (connect, _) = until(&mut world.watch, ANSWER, |event| {
        is_foreign_reader(event, "connect")
    })
    .await?;
    assert_eq!(connect.body["outlet_code"], "HX01");
    assert_eq!(connect.body["issued_to"], "HX02");
    assert_eq!(connect.body["action"], "flagged");
    assert_eq!(connect.body["reader"]["serial"], theirs.as_str());
    let second = sim(&world.cards[1], Faults::default());
    let _inserted = insert(&second, &reader).await;
    let order = Uuid::new_v4();
    publish_write(
        &world,
        &request(order, "HX01", &world.cards[1], FIRST_MSISDN + 1),
    )
    .await?;
    let (flagged, before) = until(&mut world.watch, Duration::from_secs(40), |event| {
        is_foreign_reader(event, "write_result")
    })
    .await?;
    assert_eq!(flagged.body["action"], "flagged");
    assert_eq!(flagged.body["issued_to"], "HX02");
    let script: Uuid =
        sqlx::query_scalar("SELECT script_id FROM writecard.scripts WHERE order_id = $1")
            .bind(order)
            .fetch_one(&world.env.pool)
            .await?;
    assert_eq!(flagged.body["script_id"], script.to_string());
    assert!(
        before
            .iter()
            .any(|event| event.routing_key == "card.written"
                && event.body["order_id"] == order.to_string()),
        "the write is recorded before its flag: {before:?}"
    );
    let state: String = sqlx::query_scalar("SELECT state FROM inventory.cards WHERE iccid = $1")
        .bind(&world.cards[1].iccid)
        .fetch_one(&world.env.pool)
        .await?;
    assert_eq!(state, "written");
    let listed = simflow_writecard::foreign_reader::flags(
        &mut *world.env.pool.acquire().await?,
        Some("HX01"),
        10,
    )
    .await?;
    let seen: Vec<&str> = listed.iter().map(|flag| flag.seen_in.as_str()).collect();
    assert_eq!(seen, ["write_result", "connect"], "newest first");
    node.stop().await?;
    world.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_refuse_an_outlet_with_a_reader_not_issued_to_it_gets_no_script_until_the_branch_issues_it()
-> anyhow::Result<()> {
    let mut world = WriteWorld::new(1, 1, &["HX01"], |settings| {
        if let Ok(changed) = settings.with_value("writecard.foreign_reader", "refuse") {
            *settings = changed;
        }
    })
    .await?;
    let readers = lease(1).await;
    let reader = readers.reader().clone();
    let dir = ScratchDir::new("writers-refuse")?;
    let writer = serial("VPCD");
    let bought = send(&world.env, &mut world.watch, &purchase(&writer)).await?;
    assert_eq!(bought.routing_key, "writer.purchased");
    let mut settings = world.node_settings("HX01", &reader.name, &dir.0)?;
    settings
        .reader_serials
        .insert(reader.name.clone(), writer.clone());
    let node = world.start_node(settings);
    let (connect, _) = until(&mut world.watch, ANSWER, |event| {
        is_foreign_reader(event, "connect")
    })
    .await?;
    assert_eq!(connect.body["action"], "refused");
    let card = sim(&world.cards[0], Faults::default());
    let _inserted = insert(&card, &reader).await;
    let blank_imsi = card.snapshot().imsi();

    let refused = send(
        &world.env,
        &mut world.watch,
        &request(Uuid::new_v4(), "HX01", &world.cards[0], FIRST_MSISDN),
    )
    .await?;
    assert_eq!(rejection_code(&refused), "WRITER_NOT_ISSUED_HERE");
    let held: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM writecard.msisdns WHERE state <> 'free') \
              + (SELECT count(*) FROM writecard.scripts)",
    )
    .fetch_one(&world.env.pool)
    .await?;
    assert_eq!(held, 0, "nothing reserved, no script sent");
    assert_eq!(card.snapshot().imsi(), blank_imsi, "the card is untouched");

    let issued = send(&world.env, &mut world.watch, &issue(&writer, "HX01")).await?;
    assert_eq!(issued.routing_key, "writer.issued", "{}", issued.body);
    let order = Uuid::new_v4();
    publish_write(
        &world,
        &request(order, "HX01", &world.cards[0], FIRST_MSISDN),
    )
    .await?;
    let (written, before) = until(&mut world.watch, Duration::from_secs(40), |event| {
        event.routing_key == "card.written" && event.body["order_id"] == order.to_string()
    })
    .await?;
    assert_eq!(written.body["iccid"], world.cards[0].iccid.as_str());
    assert!(
        !before
            .iter()
            .any(|event| event.routing_key == "writer.foreign_reader"),
        "the issued reader raised no flag: {before:?}"
    );
    node.stop().await?;
    world.stop().await
}
