//! Write-card rules without a broker: each check of a write request refuses with its own code
//! and reserves nothing; a card without card data waits for ops; a result from the wrong
//! sender and an expired read are answered as the clerk and ops need.

use std::sync::Arc;

use rand::RngCore;
use simflow_carddata::kek::{Kek, KekRing};
use simflow_runtime::testing::TestWorker;
use simflow_runtime::worker::{BatchJob, Verdict};
use simflow_schemas::card::CardReadRequest;
use simflow_schemas::common::ClerkMessage;
use simflow_schemas::registry::{OutletResultJob, OutletWorkJob};
use simflow_schemas::writecard::{CardWriteState, WriteOutcome, WriteRequest, WriteResult};
use simflow_seal::OutletKeyPair;
use simflow_tests::rules::{self, first_event, rejection_code};
use simflow_writecard::handlers::{OutletExpiredHandler, OutletResultsHandler, WriteCardHandler};
use simflow_writecard::numbers;
use simflow_writecard::settings::WritecardSettings;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

const TARGET: &str = "13ZDF16";
const NORMAL: &str = "USIM128K_NORMAL";
const FIRST_MSISDN: u64 = 13_099_990_000;

fn id() -> String {
    Uuid::new_v4().to_string()
}

fn keks() -> Arc<KekRing> {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    let kek = Kek::new("rules", &key).expect("a KEK");
    Arc::new(KekRing::new(Some(kek), Vec::new()).expect("a ring"))
}

fn handler() -> WriteCardHandler {
    let settings: WritecardSettings =
        serde_json::from_value(serde_json::json!({})).expect("defaults");
    WriteCardHandler {
        settings,
        keks: keks(),
    }
}

/// An outlet of ESS0601 with a fresh code, as provisioning records it (no broker here).
async fn outlet(db: &mut PgConnection) -> anyhow::Result<String> {
    let code = format!("R{}", &Uuid::new_v4().simple().to_string()[..10]);
    let key = OutletKeyPair::generate().public_key();
    sqlx::query(
        "INSERT INTO writecard.outlets (outlet_code, agent_code, public_key, key_fingerprint, broker_user) \
         VALUES ($1, 'ESS0601', $2, $3, $4)",
    )
    .bind(&code)
    .bind(key.to_base64())
    .bind(key.fingerprint())
    .bind(format!("simflow-outlet-{code}"))
    .execute(db)
    .await?;
    Ok(code)
}

/// Cards issued to ESS0601 (their card data is not imported).
async fn issued(db: &mut PgConnection, count: u64) -> anyhow::Result<Vec<String>> {
    rules::issued_to(db, "ESS0601", count).await
}

fn request(outlet: &str, staff: &str, iccid: &str, msisdn: u64) -> WriteRequest {
    WriteRequest {
        order_id: Uuid::new_v4(),
        outlet_code: outlet.into(),
        staff_id: staff.into(),
        iccid: iccid.into(),
        msisdn: msisdn.to_string(),
        customer_name: "张三".into(),
        package_code: "3G-96".into(),
    }
}

#[tokio::test]
async fn each_write_request_check_refuses_with_its_own_code_and_reserves_nothing()
-> anyhow::Result<()> {
    let mut connection = rules::connect().await?;
    let mut db = connection.begin().await?;
    let outlet = outlet(&mut db).await?;
    let cards = issued(&mut db, 1).await?;
    let in_warehouse = rules::receive_cards(&mut db, TARGET, NORMAL, "DU06", 1).await?;
    numbers::add_msisdns(&mut db, FIRST_MSISDN, 5).await?;
    let worker = TestWorker::new(handler());
    let cases = [
        (
            "OUTLET_UNKNOWN",
            request("NOPE", "C0601", &cards[0], FIRST_MSISDN),
        ),
        (
            "CARD_UNKNOWN",
            request(&outlet, "C0601", "8986019999999999990", FIRST_MSISDN),
        ),
        (
            "CARD_LOCATION_MISMATCH",
            request(&outlet, "C0601", &in_warehouse[0], FIRST_MSISDN),
        ),
        (
            "STAFF_UNKNOWN",
            request(&outlet, "NOBODY", &cards[0], FIRST_MSISDN),
        ),
        (
            "CLERK_DEPARTMENT_MISMATCH",
            request(&outlet, "C0602", &cards[0], FIRST_MSISDN),
        ),
        (
            "NUMBER_UNAVAILABLE",
            request(&outlet, "C0601", &cards[0], 19_999_999_999),
        ),
    ];
    for (code, job) in cases {
        let verdict = worker.run(&mut db, &id(), job).await?;
        assert_eq!(rejection_code(&verdict), code);
    }
    let reserved = rules::count(
        &mut db,
        "SELECT count(*) FROM writecard.msisdns WHERE state <> 'free'",
    )
    .await;
    assert_eq!(reserved, 0);
    let orders = rules::count(&mut db, "SELECT count(*) FROM writecard.orders").await;
    assert_eq!(orders, 0);
    Ok(())
}

#[tokio::test]
async fn a_card_without_card_data_waits_for_ops_and_holds_nothing() -> anyhow::Result<()> {
    let mut connection = rules::connect().await?;
    let mut db = connection.begin().await?;
    let outlet = outlet(&mut db).await?;
    let cards = issued(&mut db, 1).await?;
    numbers::add_msisdns(&mut db, FIRST_MSISDN, 1).await?;
    numbers::add_imsis(&mut db, 1_019_999_000_000, 1).await?;
    let verdict = TestWorker::new(handler())
        .run(
            &mut db,
            &id(),
            request(&outlet, "C0601", &cards[0], FIRST_MSISDN),
        )
        .await?;
    let Verdict::NeedsOps(reason) = verdict else {
        panic!("expected needs-ops, got {verdict:?}");
    };
    assert_eq!(reason.code, "WRITE_SCRIPT_MISSING");
    assert_eq!(
        reason.message_zh,
        "写卡脚本内容不存在，请把号卡文件维护到数据库！"
    );
    let held = rules::count(
        &mut db,
        "SELECT count(*) FROM writecard.msisdns WHERE state <> 'free'",
    )
    .await;
    assert_eq!(held, 0, "the number is free again for the replay");
    Ok(())
}

#[tokio::test]
async fn a_result_not_sent_by_the_named_outlet_waits_for_ops() -> anyhow::Result<()> {
    let mut connection = rules::connect().await?;
    let mut db = connection.begin().await?;
    let outlet = outlet(&mut db).await?;
    let result = WriteResult {
        script_id: Uuid::new_v4(),
        order_id: Uuid::new_v4(),
        outlet_code: outlet.clone(),
        iccid: "8986019999999999990".into(),
        outcome: WriteOutcome::Failed {
            card_state: CardWriteState::Untouched,
            reason: ClerkMessage::new("X", "x", "x"),
        },
        reader: None,
    };
    let worker = TestWorker::new(OutletResultsHandler {
        keks: keks(),
        foreign_reader: Default::default(),
    });
    // A publisher's own user, not the outlet's.
    let mut job = BatchJob::fresh(&id(), OutletResultJob::WriteResult(result));
    job.context.user_id = Some("guest".into());
    let verdicts = worker.run_batch(&mut db, vec![job]).await?;
    let Verdict::NeedsOps(reason) = &verdicts[0] else {
        panic!("expected needs-ops, got {verdicts:?}");
    };
    assert_eq!(reason.code, "RESULT_NOT_FROM_OUTLET");
    Ok(())
}

#[tokio::test]
async fn an_expired_read_request_tells_the_clerk_and_a_refused_one_calls_ops() -> anyhow::Result<()>
{
    let mut connection = rules::connect().await?;
    let mut db = connection.begin().await?;
    let read = CardReadRequest {
        request_id: Uuid::new_v4(),
        outlet_code: "HX01".into(),
        staff_id: "C0601".into(),
    };
    let worker = TestWorker::new(OutletExpiredHandler);
    let mut expired = BatchJob::fresh(&id(), OutletWorkJob::ReadRequest(read.clone()));
    expired.context.death_reason = Some("expired".into());
    let mut refused = BatchJob::fresh(&id(), OutletWorkJob::ReadRequest(read));
    refused.context.death_reason = Some("rejected".into());
    let verdicts = worker.run_batch(&mut db, vec![expired, refused]).await?;
    let (key, body) = first_event(&verdicts[0]);
    assert_eq!(key, "card.read");
    assert_eq!(body["problem"]["code"], "READ_EXPIRED");
    assert!(
        matches!(&verdicts[1], Verdict::NeedsOps(reason) if reason.code == "OUTLET_REFUSED_WORK")
    );
    Ok(())
}
