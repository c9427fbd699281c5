//! The central write-card worker through the real broker and database: every check of a write
//! request, the missing card data file dead-lettered as WRITE_SCRIPT_MISSING and replayed after
//! the import, the sealed script on the outlet's queue (only that outlet can open it, no key in
//! clear), results that do not come from the outlet, expired scripts, and the order rules that
//! need no card. The full counter flow with the outlet node and the soft SIM is in `counter.rs`.

use std::time::Duration;

use simflow_runtime::deadletter::{self, Selection};
use simflow_schemas::registry::OutletWorkJob;
use simflow_schemas::topology::JobQueue;
use simflow_schemas::writecard::{
    CardWriteState, OrderCancel, OrderPresubmit, WriteOutcome, WriteRequest, WriteResult,
};
use simflow_tests::writing::{FIRST_MSISDN, WriteWorld};
use uuid::Uuid;

use crate::support::{ANSWER, publish, rejection_code, send};

pub(crate) fn request(
    order_id: Uuid,
    outlet: &str,
    staff: &str,
    iccid: &str,
    msisdn: u64,
) -> WriteRequest {
    WriteRequest {
        order_id,
        outlet_code: outlet.into(),
        staff_id: staff.into(),
        iccid: iccid.into(),
        msisdn: msisdn.to_string(),
        customer_name: "张三丰".into(),
        package_code: "3G-96".into(),
    }
}

/// The write request of a fresh order by clerk C0601 at HX01 for the world's first card and
/// first number.
fn first_card_at_hx01(world: &WriteWorld, order_id: Uuid) -> WriteRequest {
    request(
        order_id,
        "HX01",
        "C0601",
        &world.cards[0].iccid,
        FIRST_MSISDN,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_request_check_has_its_own_answer_and_reserves_nothing() -> anyhow::Result<()> {
    let mut world = WriteWorld::new(6, 6, &["HX01"], |_| {}).await?;
    // A card of another agent, a card still in the warehouse, a written card.
    world
        .env
        .receive_cards(
            "13ZDF16",
            "USIM128K_NORMAL",
            "DU06",
            898_601_100_000_500_000,
            1,
        )
        .await?;
    let in_warehouse: String =
        sqlx::query_scalar("SELECT iccid FROM inventory.cards WHERE location_kind = 'warehouse'")
            .fetch_one(&world.env.pool)
            .await?;
    sqlx::query("UPDATE inventory.cards SET state = 'written' WHERE iccid = $1")
        .bind(&world.cards[5].iccid)
        .execute(&world.env.pool)
        .await?;
    let card = world.cards[0].iccid.clone();
    // A request of a fresh order at HX01 for card `iccid` and number `msisdn`, by `staff`.
    let at_hx01 = |staff: &str, iccid: &str, msisdn: u64| {
        request(Uuid::new_v4(), "HX01", staff, iccid, msisdn)
    };
    let written_card = world.cards[5].iccid.clone();
    let cases = vec![
        (
            "OUTLET_UNKNOWN",
            request(Uuid::new_v4(), "NOPE", "C0601", &card, FIRST_MSISDN),
        ),
        (
            "CARD_UNKNOWN",
            at_hx01("C0601", "8986011000009999995", FIRST_MSISDN),
        ),
        (
            "CARD_LOCATION_MISMATCH",
            at_hx01("C0601", &in_warehouse, FIRST_MSISDN),
        ),
        (
            "CARD_UNUSABLE",
            at_hx01("C0601", &written_card, FIRST_MSISDN),
        ),
        ("STAFF_UNKNOWN", at_hx01("NOBODY", &card, FIRST_MSISDN)),
        // The clerk of the other agent works in another department.
        (
            "CLERK_DEPARTMENT_MISMATCH",
            at_hx01("C0602", &card, FIRST_MSISDN),
        ),
        (
            "NUMBER_UNAVAILABLE",
            at_hx01("C0601", &card, 19_999_999_999),
        ),
    ];
    for (expected, job) in cases {
        let answer = send(&world.env, &mut world.watch, &job).await?;
        assert_eq!(rejection_code(&answer), expected, "{job:?}");
    }
    let card_unusable = send(
        &world.env,
        &mut world.watch,
        &at_hx01("C0601", &written_card, FIRST_MSISDN),
    )
    .await?;
    assert_eq!(card_unusable.body["reason"]["message_zh"], "请更换白卡！");
    let reserved: i64 =
        sqlx::query_scalar("SELECT count(*) FROM writecard.msisdns WHERE state <> 'free'")
            .fetch_one(&world.env.pool)
            .await?;
    assert_eq!(reserved, 0, "a refused request reserves no number");
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM writecard.orders")
        .fetch_one(&world.env.pool)
        .await?;
    assert_eq!(orders, 0);
    world.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_card_data_file_is_dead_lettered_and_the_replay_after_import_routes_a_sealed_script()
-> anyhow::Result<()> {
    let mut world = WriteWorld::new(2, 0, &["HX01", "HX02"], |_| {}).await?;
    let mut hx01 = world.capture_outlet_work("HX01")?;
    let order_id = Uuid::new_v4();
    let job = request(
        order_id,
        "HX01",
        "C0601",
        &world.cards[0].iccid,
        FIRST_MSISDN + 7,
    );
    let message_id = publish(&world.env, &job).await?;
    let failed = world.watch.next_for(&message_id, ANSWER).await?;
    assert_eq!(failed.routing_key, "writecard.failed");
    assert_eq!(failed.body["reason"]["code"], "WRITE_SCRIPT_MISSING");
    assert_eq!(
        failed.body["reason"]["message_zh"],
        "写卡脚本内容不存在，请把号卡文件维护到数据库！"
    );
    let letters =
        deadletter::list(world.env.client.connection(), "simflow.writecard.dlq", 10).await?;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason_code, "WRITE_SCRIPT_MISSING");
    let held: i64 =
        sqlx::query_scalar("SELECT count(*) FROM writecard.msisdns WHERE state <> 'free'")
            .fetch_one(&world.env.pool)
            .await?;
    assert_eq!(held, 0, "the dead-lettered request holds no number");

    world.import_card_data(&world.cards.clone()).await?;
    deadletter::replay(
        world.env.client.connection(),
        &world.env.pool,
        JobQueue::WriteCard,
        &Selection::MessageId(message_id.clone()),
    )
    .await?;
    let work = hx01.next(ANSWER).await?;
    let OutletWorkJob::WriteScript(envelope) = work.job else {
        panic!("expected a write script")
    };
    assert_eq!(
        (envelope.order_id, envelope.iccid.as_str()),
        (order_id, world.cards[0].iccid.as_str())
    );
    assert_eq!(
        envelope.sealed_for,
        world.outlets[0].keys.public_key().fingerprint()
    );
    // Only HX01 can open it; the envelope carries no key in clear.
    let body = serde_json::to_string(&envelope)?;
    for secret in [
        &world.cards[0].ki,
        &world.cards[0].opc,
        &hex::encode(&world.cards[0].adm1),
    ] {
        assert!(
            !body.to_lowercase().contains(&secret.to_lowercase()),
            "a key travels in clear"
        );
    }
    assert!(
        world.outlets[1].keys.open(&envelope.sealed_script).is_err(),
        "HX02 cannot open HX01's script"
    );
    let plaintext = world.outlets[0].keys.open(&envelope.sealed_script)?;
    let script: simflow_card::profile::Script = serde_json::from_slice(&plaintext)?;
    assert_eq!(script.iccid, world.cards[0].iccid);
    assert_eq!(
        script.family, "sysmoISIM-SJA2",
        "the default family of the card type"
    );
    assert!(script.steps.len() <= 47, "{} steps", script.steps.len());
    let reserved: Vec<String> =
        sqlx::query_scalar("SELECT state FROM writecard.msisdns WHERE msisdn = $1")
            .bind((FIRST_MSISDN + 7).to_string())
            .fetch_all(&world.env.pool)
            .await?;
    assert_eq!(reserved, vec!["reserved".to_owned()]);
    hx01.stop().await?;
    world.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_not_sent_by_the_outlet_are_dead_lettered_and_change_nothing() -> anyhow::Result<()>
{
    let mut world = WriteWorld::new(1, 1, &["HX01", "HX02"], |_| {}).await?;
    let mut hx01 = world.capture_outlet_work("HX01")?;
    let order_id = Uuid::new_v4();
    let job = first_card_at_hx01(&world, order_id);
    publish(&world.env, &job).await?;
    let work = hx01.next(ANSWER).await?;
    let OutletWorkJob::WriteScript(envelope) = work.job else {
        panic!("expected a write script")
    };
    let forged = WriteResult {
        script_id: envelope.script_id,
        order_id,
        outlet_code: "HX01".into(),
        iccid: envelope.iccid.clone(),
        outcome: WriteOutcome::Written {
            auth_answer: "db08".into(),
            apdu_count: 1,
        },
        reader: None,
    };
    // HX02 claims to be HX01: its validated user_id gives it away.
    let hx02 = world.outlet_client("HX02").await?;
    let forged_id = Uuid::new_v4().to_string();
    hx02.publish_job_as(
        &forged,
        &forged_id,
        &simflow_runtime::outlet::outlet_user(&world.env.vhost, "HX02"),
    )
    .await?;
    let failed = world.watch.next_for(&forged_id, ANSWER).await?;
    assert_eq!(failed.routing_key, "outlet-results.failed");
    assert_eq!(failed.body["reason"]["code"], "RESULT_NOT_FROM_OUTLET");
    // And HX02 cannot set HX01's user id at all: the broker refuses the publish.
    let refused = hx02
        .publish_job_as(
            &forged,
            &Uuid::new_v4().to_string(),
            &simflow_runtime::outlet::outlet_user(&world.env.vhost, "HX01"),
        )
        .await;
    assert!(refused.is_err(), "the broker validates user_id");
    let state: String = sqlx::query_scalar("SELECT state FROM inventory.cards WHERE iccid = $1")
        .bind(&envelope.iccid)
        .fetch_one(&world.env.pool)
        .await?;
    assert_eq!(state, "blank");
    hx01.stop().await?;
    world.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_no_writer_takes_in_time_expires_and_the_clerk_is_told() -> anyhow::Result<()> {
    let mut world = WriteWorld::new(1, 1, &["HX01"], |settings| {
        settings.topology.outlet_message_ttl_ms = 1500;
    })
    .await?;
    let order_id = Uuid::new_v4();
    let job = first_card_at_hx01(&world, order_id);
    publish(&world.env, &job).await?;
    // Nobody consumes HX01's queue: the script expires there and comes back dead-lettered.
    let mut expired = None;
    for _ in 0..20 {
        let event = world.watch.next(Duration::from_secs(10)).await?;
        if event.routing_key == "card.write_failed" {
            expired = Some(event);
            break;
        }
    }
    let expired = expired.expect("the clerk hears of the expiry");
    assert_eq!(expired.body["reason"]["code"], "SCRIPT_EXPIRED");
    assert_eq!(
        expired.body["card_state"],
        serde_json::to_value(CardWriteState::Untouched)?
    );
    let state: String = sqlx::query_scalar("SELECT state FROM writecard.scripts")
        .fetch_one(&world.env.pool)
        .await?;
    assert_eq!(state, "expired");
    // The order keeps its number for the next try; cancelling gives it back at once.
    let presubmit = send(
        &world.env,
        &mut world.watch,
        &OrderPresubmit {
            order_id,
            staff_id: "C0601".into(),
        },
    )
    .await?;
    assert_eq!(rejection_code(&presubmit), "ORDER_NOT_WRITTEN");
    let cancelled = send(
        &world.env,
        &mut world.watch,
        &OrderCancel {
            order_id,
            staff_id: "C0601".into(),
            reason: "customer left".into(),
        },
    )
    .await?;
    assert_eq!(cancelled.routing_key, "order.cancelled");
    assert_eq!(cancelled.body["card_disposition"], "blank");
    let number: String =
        sqlx::query_scalar("SELECT state FROM writecard.msisdns WHERE msisdn = $1")
            .bind(FIRST_MSISDN.to_string())
            .fetch_one(&world.env.pool)
            .await?;
    assert_eq!(number, "free");
    world.stop().await
}
