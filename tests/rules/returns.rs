//! Batch return rules: a partly valid return commits the valid part and lists the rest
//! (卡库位不一致 for cards of another agent), the fee follows the share that came back, and a
//! return where nothing qualifies changes nothing.

use simflow_inventory::ReturnHandler;
use simflow_runtime::testing::TestWorker;
use simflow_schemas::common::ReturnSelection;
use simflow_schemas::returns::{ReturnByList, ReturnFee};
use simflow_tests::rules::{self, first_event, rejection_code};
use sqlx::Connection;
use uuid::Uuid;

const TARGET: &str = "13ZDF16";

fn id() -> String {
    Uuid::new_v4().to_string()
}

fn by_list(agent: &str, iccids: Vec<String>, amount: i64) -> ReturnByList {
    ReturnByList {
        return_id: Uuid::new_v4(),
        staff_id: "T0601".into(),
        warehouse: TARGET.into(),
        agent_ess_code: agent.into(),
        cards: ReturnSelection::Iccids { iccids },
        fee: ReturnFee {
            return_amount_fen: amount,
        },
    }
}

#[tokio::test]
async fn a_partly_valid_return_takes_the_agents_cards_and_lists_the_others() -> anyhow::Result<()> {
    let mut connection = rules::connect().await?;
    let mut db = connection.begin().await?;
    let ours = rules::issued_to(&mut db, "ESS0601", 3).await?;
    let theirs = rules::issued_to(&mut db, "ESS0602", 1).await?;
    let mut listed = ours.clone();
    listed.extend(theirs.clone());
    let verdict = TestWorker::new(ReturnHandler)
        .run(&mut db, &id(), by_list("ESS0601", listed, 1000))
        .await?;
    let (key, body) = first_event(&verdict);
    assert_eq!(key, "return.committed");
    assert_eq!(body["success_count"], 3);
    assert_eq!(body["failed_count"], 1);
    assert_eq!(body["failed"][0]["iccid"], theirs[0].as_str());
    assert_eq!(
        body["failed"][0]["reason"]["code"],
        "CARD_LOCATION_MISMATCH"
    );
    assert_eq!(body["failed"][0]["reason"]["message_zh"], "卡库位不一致");
    // 3 of 4 came back: 750 fen of 1000.
    assert_eq!(body["fee"]["paid_amount_fen"], 750);
    let back: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM inventory.cards WHERE iccid = ANY($1) AND warehouse_code = $2 AND location_kind = 'warehouse'",
    )
    .bind(&ours)
    .bind(TARGET)
    .fetch_one(&mut *db)
    .await?;
    assert_eq!(back, 3);
    let still_theirs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM inventory.cards WHERE iccid = ANY($1) AND agent_code = 'ESS0602'",
    )
    .bind(&theirs)
    .fetch_one(&mut *db)
    .await?;
    assert_eq!(still_theirs, 1);
    Ok(())
}

#[tokio::test]
async fn a_return_where_no_card_qualifies_is_refused_and_changes_nothing() -> anyhow::Result<()> {
    let mut connection = rules::connect().await?;
    let mut db = connection.begin().await?;
    let theirs = rules::issued_to(&mut db, "ESS0602", 2).await?;
    let ledger_before = rules::count(&mut db, "SELECT count(*) FROM inventory.card_ledger").await;
    let verdict = TestWorker::new(ReturnHandler)
        .run(&mut db, &id(), by_list("ESS0601", theirs, 0))
        .await?;
    assert_eq!(rejection_code(&verdict), "NOTHING_RETURNED");
    let ledger_after = rules::count(&mut db, "SELECT count(*) FROM inventory.card_ledger").await;
    assert_eq!(ledger_before, ledger_after);
    let returns = rules::count(&mut db, "SELECT count(*) FROM inventory.returns").await;
    assert_eq!(returns, 0);
    Ok(())
}

#[tokio::test]
async fn a_negative_return_amount_is_refused() -> anyhow::Result<()> {
    let mut connection = rules::connect().await?;
    let mut db = connection.begin().await?;
    let ours = rules::issued_to(&mut db, "ESS0601", 1).await?;
    let verdict = TestWorker::new(ReturnHandler)
        .run(&mut db, &id(), by_list("ESS0601", ours, -1))
        .await?;
    assert_eq!(rejection_code(&verdict), "FEE_INVALID");
    Ok(())
}
