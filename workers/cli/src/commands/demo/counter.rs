//! The demo's counter: account opening with on-site writing (开户 + 现场写卡) at two outlets of
//! agent ESS0601, each with its own writer node on its own virtual reader (pcscd + vpcd) and a
//! software SIM as the blank card. Includes the card whose data row the vendor spoiled: its write
//! is dead-lettered WRITE_SCRIPT_MISSING, the corrected row is imported, the dead letter
//! replayed, and the card written.

use std::time::Duration;

use simflow_runtime::amqp::{JobRoute, ReceivedEvent};
use simflow_schemas::card::CardReadRequest;
use simflow_schemas::writecard::{OrderCancel, OrderPresubmit, OrderSubmit, WriteRequest};
use simflow_softsim::{CardImage, SoftSim};
use uuid::Uuid;

use super::{Demo, adm1, iccid, print_answer};
use crate::commands::vreaders::{insert, virtual_readers, wait_empty};
use crate::world::{self, RunningNode};

/// The first number of the demo's MSISDN pool and of its IMSI pool (MCC 460, MNC 00).
const FIRST_MSISDN: u64 = 13_012_340_000;
const FIRST_IMSI: u64 = 460_001_234_500_000;

fn blank_card(offset: u64) -> anyhow::Result<SoftSim> {
    let body = 898_601_100_000_000_000 + offset;
    Ok(SoftSim::new(CardImage::blank(&iccid(body)?, &adm1(body)))?)
}

/// Waits for the write outcome of `order_id` (`card.written` / `card.write_failed`), or the
/// central answer to its request (`request_id`) when the request itself was refused.
async fn order_event(
    demo: &mut Demo,
    order_id: Uuid,
    request_id: &str,
) -> anyhow::Result<ReceivedEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let event = demo.watch.next(left).await?;
        let outcome = matches!(
            event.routing_key.as_str(),
            "card.written" | "card.write_failed"
        ) && event.body["order_id"] == order_id.to_string();
        if outcome || event.correlation_id.as_deref() == Some(request_id) {
            return Ok(event);
        }
    }
}

fn write_request(
    order_id: Uuid,
    outlet: &str,
    offset: u64,
    msisdn: u64,
    name: &str,
) -> anyhow::Result<WriteRequest> {
    Ok(WriteRequest {
        order_id,
        outlet_code: outlet.into(),
        staff_id: "C0601".into(),
        iccid: iccid(898_601_100_000_000_000 + offset)?,
        msisdn: msisdn.to_string(),
        customer_name: name.into(),
        package_code: "4G-59".into(),
    })
}

fn print_written(event: &ReceivedEvent) {
    println!(
        "    ← {} {}",
        event.routing_key,
        super::summarise(&event.body)
    );
}

/// Runs the counter part of the demo.
pub(super) async fn run(demo: &mut Demo) -> anyhow::Result<()> {
    println!("\n── Account opening with on-site writing (开户 + 现场写卡) ──");
    let readers = virtual_readers()?;
    anyhow::ensure!(readers.len() >= 2, "the demo needs two virtual readers");
    let dir = std::env::temp_dir().join(format!("simflow-demo-outlets-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let vhost = simflow_runtime::amqp::vhost_of(&demo.settings.amqp.uri)?;

    demo.step += 1;
    println!(
        "\n{:>2}. Two outlets of agent ESS0601 get a writer node each: a key pair made on the node, an own broker user that may read only its queue; numbers go into the pools",
        demo.step
    );
    let mut nodes = Vec::new();
    {
        let mut db = demo.pool.acquire().await?;
        world::fill_number_pools(&mut db, FIRST_MSISDN, FIRST_IMSI, 100).await?;
        for (code, reader) in [("HX01", &readers[0]), ("HX02", &readers[1])] {
            let keys = simflow_outlet::generate_key_file(&dir.join(format!("{code}.key")))?;
            let password = world::provision_outlet(
                &mut db,
                &demo.client,
                &demo.settings,
                code,
                "ESS0601",
                &keys.public_key(),
            )
            .await?;
            let broker_uri = world::outlet_uri(&demo.settings, code, &password)?;
            let settings = world::node_settings(code, &reader.name, &dir, broker_uri, 20);
            println!(
                "    {code}: broker user {}, reader {:?}, key {}",
                simflow_runtime::outlet::outlet_user(&vhost, code),
                reader.name,
                keys.public_key().fingerprint()
            );
            nodes.push(RunningNode::start(settings));
        }
    }

    // Blank cards 010 and 011 of ESS0601 go into the two readers.
    let cards = [blank_card(10)?, blank_card(11)?];
    let mut in_hx01 = insert(&cards[0], &readers[0]).await?;
    let in_hx02 = insert(&cards[1], &readers[1]).await?;

    demo.step += 1;
    println!(
        "\n{:>2}. The clerk at HX01 reads the blank card in the writer (读卡)",
        demo.step
    );
    let request_id = Uuid::new_v4();
    demo.client
        .publish_job(
            &CardReadRequest {
                request_id,
                outlet_code: "HX01".into(),
                staff_id: "C0601".into(),
            },
            &Uuid::new_v4().to_string(),
            JobRoute::Default,
        )
        .await?;
    loop {
        let event = demo.watch.next(Duration::from_secs(30)).await?;
        if event.routing_key == "card.read" && event.body["request_id"] == request_id.to_string() {
            print_answer(&event);
            break;
        }
    }

    demo.step += 1;
    println!(
        "\n{:>2}. Two account openings at once: HX01 writes {} with {}, HX02 writes {} with {}",
        demo.step,
        iccid(898_601_100_000_000_010)?,
        FIRST_MSISDN,
        iccid(898_601_100_000_000_011)?,
        FIRST_MSISDN + 1
    );
    let orders = [Uuid::new_v4(), Uuid::new_v4()];
    let mut requests = Vec::new();
    for (order_id, outlet, offset, msisdn, name) in [
        (orders[0], "HX01", 10, FIRST_MSISDN, "王小明"),
        (orders[1], "HX02", 11, FIRST_MSISDN + 1, "赵丽"),
    ] {
        let request_id = Uuid::new_v4().to_string();
        demo.client
            .publish_job(
                &write_request(order_id, outlet, offset, msisdn, name)?,
                &request_id,
                JobRoute::Default,
            )
            .await?;
        requests.push(request_id);
    }
    // Both outcomes, in whichever order they arrive.
    let mut pending: Vec<(Uuid, String)> = orders.iter().copied().zip(requests).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let event = demo.watch.next(left).await?;
        let position = pending.iter().position(|(order_id, request_id)| {
            (matches!(
                event.routing_key.as_str(),
                "card.written" | "card.write_failed"
            ) && event.body["order_id"] == order_id.to_string())
                || event.correlation_id.as_deref() == Some(request_id.as_str())
        });
        if let Some(position) = position {
            pending.remove(position);
            print_written(&event);
        }
    }
    for (index, card) in cards.iter().enumerate() {
        println!(
            "    card {} now holds IMSI {} ({} APDUs answered by the soft SIM)",
            index + 1,
            card.snapshot().imsi().unwrap_or_else(|| "-".into()),
            card.counters().total
        );
    }
    println!("    HX01 shows: {}", nodes[0].clerk_state());

    demo.step += 1;
    println!(
        "\n{:>2}. Order 1: pre-submit (fees, acceptance form), then final submit",
        demo.step
    );
    let presubmitted = demo
        .job(
            "Pre-submit (预提交)",
            &OrderPresubmit {
                order_id: orders[0],
                staff_id: "C0601".into(),
            },
        )
        .await?;
    for line in presubmitted.body["acceptance_form"]
        .as_str()
        .unwrap_or_default()
        .lines()
    {
        println!("      | {line}");
    }
    demo.job(
        "Final submit (正式提交): the provisioning system hears order.activated",
        &OrderSubmit {
            order_id: orders[0],
            staff_id: "C0601".into(),
        },
    )
    .await?;
    demo.job(
        "Order 2: the customer walks away before the final submit; the order is cancelled",
        &OrderCancel {
            order_id: orders[1],
            staff_id: "C0601".into(),
            reason: "customer left".into(),
        },
    )
    .await?;

    // The card whose vendor row was refused (offset 12).
    demo.step += 1;
    println!(
        "\n{:>2}. HX01: the next customer gets card {}, whose row in the vendor file was refused",
        demo.step,
        iccid(898_601_100_000_000_012)?
    );
    in_hx01.remove().await;
    // The clerk takes the card out before putting the next one in (pcscd must see the reader
    // empty in between, as with a real reader).
    wait_empty(&readers[0]).await?;
    let spoiled = blank_card(12)?;
    in_hx01 = insert(&spoiled, &readers[0]).await?;
    let order_id = Uuid::new_v4();
    let message_id = Uuid::new_v4().to_string();
    demo.client
        .publish_job(
            &write_request(order_id, "HX01", 12, FIRST_MSISDN + 2, "孙悟空")?,
            &message_id,
            JobRoute::Default,
        )
        .await?;
    let failed = demo
        .watch
        .next_for(&message_id, Duration::from_secs(30))
        .await?;
    print_answer(&failed);
    let letters =
        simflow_runtime::deadletter::list(demo.client.connection(), "simflow.writecard.dlq", 10)
            .await?;
    for letter in &letters {
        println!(
            "    dead letter {} {} {} / {}",
            letter.message_id.as_deref().unwrap_or("-"),
            letter.reason_code,
            letter.reason_zh.as_deref().unwrap_or_default(),
            letter.reason_en.as_deref().unwrap_or_default()
        );
    }

    demo.step += 1;
    println!(
        "\n{:>2}. The vendor sends the corrected row; it is imported and ops replay the dead letter",
        demo.step
    );
    let file = super::vendor_file(898_601_100_000_000_012, 1, 1_019_000_000_012, false)?;
    let report = world::import_card_data(
        &demo.pool,
        &demo.settings.carddata,
        "vendor-batch-0042-fix.csv",
        "S0601",
        file,
    )
    .await?;
    println!(
        "    ← {} row imported, {} refused",
        report.accepted, report.rejected
    );
    let replayed = simflow_runtime::deadletter::replay(
        demo.client.connection(),
        &demo.pool,
        simflow_schemas::topology::JobQueue::WriteCard,
        &simflow_runtime::deadletter::Selection::MessageId(message_id),
    )
    .await?;
    println!(
        "    replayed {} dead letter(s) with their original message id",
        replayed.replayed.len()
    );
    let event = order_event(demo, order_id, "-").await?;
    print_written(&event);
    println!(
        "    the card now holds IMSI {}",
        spoiled.snapshot().imsi().unwrap_or_else(|| "-".into())
    );

    in_hx01.remove().await;
    in_hx02.remove().await;
    for node in nodes {
        node.stop().await?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
