//! Batch issue rules: prepare holds and answers the slip, commit moves to the agent once, and
//! each refusal holds nothing.

use simflow_cli::world::{issue_commit, issue_prepare};
use simflow_inventory::issue::IssueHandler;
use simflow_runtime::testing::TestWorker;
use simflow_schemas::common::CardSelection;
use simflow_schemas::issue::IssuePrepare;
use simflow_tests::rules::{self, first_event, rejection_code};
use sqlx::Connection;
use uuid::Uuid;

const TARGET: &str = "13ZDF16";
const NORMAL: &str = "USIM128K_NORMAL";

fn prepare(batch_id: Uuid, cards: CardSelection) -> IssuePrepare {
    issue_prepare(batch_id, "ESS0601", NORMAL, cards)
}

fn id() -> String {
    Uuid::new_v4().to_string()
}

fn worker() -> TestWorker<IssueHandler> {
    rules::issue_worker()
}

#[tokio::test]
async fn a_prepared_batch_holds_its_cards_and_commit_gives_them_to_the_agent_once()
-> anyhow::Result<()> {
    let mut connection = rules::connect().await?;
    let mut db = connection.begin().await?;
    let iccids = rules::receive_cards(&mut db, TARGET, NORMAL, "DU06", 5).await?;
    let worker = worker();
    let batch_id = Uuid::new_v4();
    let listed = CardSelection::Iccids {
        iccids: iccids.clone(),
    };
    let prepared = worker
        .run(&mut db, &id(), prepare(batch_id, listed))
        .await?;
    let (key, body) = first_event(&prepared);
    assert_eq!(key, "issue.prepared");
    assert_eq!(body["card_count"], 5);
    assert!(
        body["acceptance_slip"]
            .as_str()
            .unwrap_or_default()
            .contains("ESS0601")
    );

    let commit = issue_commit(batch_id);
    let committed = worker.run(&mut db, &id(), commit.clone()).await?;
    assert_eq!(first_event(&committed).1["already_committed"], false);
    let with_agent: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM inventory.cards WHERE iccid = ANY($1) AND location_kind = 'agent' \
         AND agent_code = 'ESS0601' AND batch_id IS NULL",
    )
    .bind(&iccids)
    .fetch_one(&mut *db)
    .await?;
    assert_eq!(with_agent, 5);
    let again = worker.run(&mut db, &id(), commit).await?;
    assert_eq!(first_event(&again).1["already_committed"], true);
    let issued: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM inventory.card_ledger WHERE iccid = ANY($1) AND event = 'issued'",
    )
    .bind(&iccids)
    .fetch_one(&mut *db)
    .await?;
    assert_eq!(issued, 5, "one ledger entry per card, not two");
    Ok(())
}

#[tokio::test]
async fn each_issue_rule_refuses_with_its_own_code_and_holds_nothing() -> anyhow::Result<()> {
    let mut connection = rules::connect().await?;
    let mut db = connection.begin().await?;
    let ours = rules::receive_cards(&mut db, TARGET, NORMAL, "DU06", 2).await?;
    let foreign = rules::receive_cards(&mut db, TARGET, NORMAL, "DU01", 1).await?;
    let worker = worker();
    let listed = |iccids: &[String]| CardSelection::Iccids {
        iccids: iccids.to_vec(),
    };
    let mut other_unit_agent = prepare(Uuid::new_v4(), listed(&ours));
    other_unit_agent.agent_ess_code = "ESS0101".into();
    let mut unknown_agent = prepare(Uuid::new_v4(), listed(&ours));
    unknown_agent.agent_ess_code = "ESS9999".into();
    let mut not_target = prepare(Uuid::new_v4(), listed(&ours));
    not_target.warehouse = "130041".into();
    let mut unbound = prepare(Uuid::new_v4(), listed(&ours));
    unbound.staff_id = "S0601".into();
    let cases = [
        ("AGENT_OTHER_UNIT", other_unit_agent),
        ("AGENT_UNKNOWN", unknown_agent),
        ("WAREHOUSE_NOT_TARGET", not_target),
        ("STAFF_NOT_BOUND", unbound),
        (
            "CARDS_NOT_AVAILABLE",
            prepare(Uuid::new_v4(), listed(&foreign)),
        ),
    ];
    for (code, job) in cases {
        let verdict = worker.run(&mut db, &id(), job).await?;
        assert_eq!(rejection_code(&verdict), code);
    }
    let unknown = issue_commit(Uuid::new_v4());
    assert_eq!(
        rejection_code(&worker.run(&mut db, &id(), unknown).await?),
        "BATCH_UNKNOWN"
    );
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM inventory.cards WHERE iccid = ANY($1) AND batch_id IS NOT NULL",
    )
    .bind(&ours)
    .fetch_one(&mut *db)
    .await?;
    assert_eq!(held, 0);
    Ok(())
}

#[tokio::test]
async fn a_lapsed_hold_cannot_be_committed_and_its_cards_are_free_again() -> anyhow::Result<()> {
    let mut connection = rules::connect().await?;
    let mut db = connection.begin().await?;
    let iccids = rules::receive_cards(&mut db, TARGET, NORMAL, "DU06", 2).await?;
    let lapsing = worker();
    let batch_id = Uuid::new_v4();
    let listed = CardSelection::Iccids {
        iccids: iccids.clone(),
    };
    lapsing
        .run(&mut db, &id(), prepare(batch_id, listed.clone()))
        .await?;
    // now() stands still inside the test's transaction: move the hold into the past instead.
    sqlx::query("UPDATE inventory.cards SET batch_hold_until = now() - interval '1 second' WHERE batch_id = $1")
        .bind(batch_id)
        .execute(&mut *db)
        .await?;
    sqlx::query("UPDATE inventory.issue_batches SET expires_at = now() - interval '1 second' WHERE batch_id = $1")
        .bind(batch_id)
        .execute(&mut *db)
        .await?;
    let commit = issue_commit(batch_id);
    assert_eq!(
        rejection_code(&lapsing.run(&mut db, &id(), commit).await?),
        "BATCH_EXPIRED"
    );
    let other = worker()
        .run(&mut db, &id(), prepare(Uuid::new_v4(), listed))
        .await?;
    assert_eq!(
        first_event(&other).1["card_count"],
        2,
        "free for another batch"
    );
    Ok(())
}
