//! Batch return from agents end to end: by text import and list (full and partial, with
//! 卡库位不一致 for cards of another agent), by range with the query step, the fee rule, a
//! return where nothing qualifies, idempotent re-sends, and the per-card detail afterwards.

use simflow_cli::pipeline::WorkerKind;
use simflow_cli::world::{issue_commit, issue_prepare};
use simflow_schemas::common::{CardSelection, ReturnSelection};
use simflow_schemas::returns::{
    ReturnByList, ReturnByRange, ReturnCommitted, ReturnFee, ReturnQueried, ReturnQuery,
};
use simflow_tests::TestEnv;
use uuid::Uuid;

use crate::issue::{NORMAL, TARGET, stocked_target};
use crate::support::{count, ledger_entries, rejection_code, send};

/// Issues normal[0..40] to ESS0601 and normal[40..50] to ESS0602.
async fn issued() -> anyhow::Result<(
    TestEnv,
    Vec<String>,
    simflow_cli::pipeline::RunningWorkers,
    simflow_runtime::amqp::EventWatch,
)> {
    let (env, normal, _, _) = stocked_target().await?;
    let workers = env.start_workers(&[WorkerKind::Issue, WorkerKind::Return]);
    let mut watch = env.watch().await?;
    for (agent, from, to) in [("ESS0601", 0, 39), ("ESS0602", 40, 49)] {
        let batch = Uuid::new_v4();
        let cards = CardSelection::Range {
            first: normal[from].clone(),
            last: normal[to].clone(),
        };
        send(
            &env,
            &mut watch,
            &issue_prepare(batch, agent, NORMAL, cards),
        )
        .await?;
        send(&env, &mut watch, &issue_commit(batch)).await?;
    }
    Ok((env, normal, workers, watch))
}

fn by_list(return_id: Uuid, agent: &str, cards: ReturnSelection, amount: i64) -> ReturnByList {
    ReturnByList {
        return_id,
        staff_id: "T0601".into(),
        warehouse: TARGET.into(),
        agent_ess_code: agent.into(),
        cards,
        fee: ReturnFee {
            return_amount_fen: amount,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_import_return_takes_the_agents_cards_and_reports_the_rest_per_card()
-> anyhow::Result<()> {
    let (env, normal, workers, mut watch) = issued().await?;
    // Ten lines: five of the agent's cards, one of another agent, one still in the warehouse,
    // one unknown, one malformed, one repeated.
    let lines = [
        &normal[0],
        &normal[1],
        &normal[2],
        &normal[3],
        &normal[4],
        &normal[45],
        &normal[80],
        &"8986011000009999995".to_owned(),
        &"not-an-iccid".to_owned(),
        &normal[0],
    ];
    let content = lines
        .iter()
        .map(|line| line.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let return_id = Uuid::new_v4();
    let job = by_list(
        return_id,
        "ESS0601",
        ReturnSelection::TextFile {
            file_name: "tuika.txt".into(),
            content,
        },
        1000,
    );
    let answer: ReturnCommitted = send(&env, &mut watch, &job).await?.decode()?;
    assert_eq!((answer.success_count, answer.failed_count), (5, 5));
    assert_eq!(answer.summary.message_zh, "退卡成功5张，失败5张");
    assert_eq!(
        answer.fee.paid_amount_fen, 500,
        "paid = floor(1000 × 5 ÷ 10)"
    );
    let reason_of = |iccid: &str| {
        answer
            .failed
            .iter()
            .find(|problem| problem.iccid == iccid)
            .map(|problem| problem.reason.code.clone())
    };
    assert_eq!(
        reason_of(&normal[45]).as_deref(),
        Some("CARD_LOCATION_MISMATCH")
    );
    assert_eq!(
        reason_of(&normal[80]).as_deref(),
        Some("CARD_LOCATION_MISMATCH")
    );
    assert_eq!(
        reason_of("8986011000009999995").as_deref(),
        Some("CARD_UNKNOWN")
    );
    assert_eq!(reason_of("not-an-iccid").as_deref(), Some("ICCID_INVALID"));
    assert_eq!(reason_of(&normal[0]).as_deref(), Some("DUPLICATE_ICCID"));
    let mismatch = answer
        .failed
        .iter()
        .find(|problem| problem.iccid == normal[45])
        .expect("listed");
    assert_eq!(mismatch.reason.message_zh, "卡库位不一致");

    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM inventory.cards WHERE agent_code = 'ESS0601'"
        )
        .await,
        35
    );
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM inventory.cards WHERE agent_code = 'ESS0602'"
        )
        .await,
        10,
        "the other agent keeps its card"
    );
    assert_eq!(ledger_entries(&env, "returned").await, 5);

    // The same return re-sent is answered the same; a different one under its id conflicts.
    let again: ReturnCommitted = send(&env, &mut watch, &job).await?.decode()?;
    assert_eq!(
        (again.success_count, again.committed_at),
        (5, answer.committed_at)
    );
    let other = by_list(
        return_id,
        "ESS0601",
        ReturnSelection::Iccids {
            iccids: vec![normal[9].clone()],
        },
        100,
    );
    assert_eq!(
        rejection_code(&send(&env, &mut watch, &other).await?),
        "RETURN_ID_CONFLICT"
    );

    // The per-card detail afterwards.
    let mut db = env.pool.acquire().await?;
    let detail = simflow_inventory::returns::detail(&mut db, return_id)
        .await?
        .expect("stored");
    assert_eq!(detail.returned.len(), 5);
    assert_eq!(detail.failed.len(), 5);
    drop(db);
    workers.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_return_with_no_qualifying_card_is_refused_and_changes_nothing() -> anyhow::Result<()> {
    let (env, normal, workers, mut watch) = issued().await?;
    let job = by_list(
        Uuid::new_v4(),
        "ESS0601",
        ReturnSelection::Iccids {
            iccids: vec![normal[41].clone(), normal[90].clone()],
        },
        200,
    );
    let answer = send(&env, &mut watch, &job).await?;
    assert_eq!(rejection_code(&answer), "NOTHING_RETURNED");
    assert_eq!(
        answer.body["problems"][0]["reason"]["message_zh"],
        "卡库位不一致"
    );
    assert_eq!(ledger_entries(&env, "returned").await, 0);
    assert_eq!(
        count(&env, "SELECT count(*) FROM inventory.returns").await,
        0
    );
    let negative = by_list(
        Uuid::new_v4(),
        "ESS0601",
        ReturnSelection::Iccids {
            iccids: vec![normal[1].clone()],
        },
        -5,
    );
    assert_eq!(
        rejection_code(&send(&env, &mut watch, &negative).await?),
        "FEE_INVALID"
    );
    let wrong_unit = by_list(
        Uuid::new_v4(),
        "ESS0101",
        ReturnSelection::Iccids {
            iccids: vec![normal[1].clone()],
        },
        0,
    );
    assert_eq!(
        rejection_code(&send(&env, &mut watch, &wrong_unit).await?),
        "AGENT_OTHER_UNIT"
    );
    workers.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_return_is_queried_first_then_returned() -> anyhow::Result<()> {
    let (env, normal, workers, mut watch) = issued().await?;
    // The range 30..=44 holds 10 of ESS0601's cards and 5 of ESS0602's.
    let query = ReturnQuery {
        query_id: Uuid::new_v4(),
        staff_id: "T0601".into(),
        warehouse: TARGET.into(),
        agent_ess_code: "ESS0601".into(),
        first: normal[30].clone(),
        last: normal[44].clone(),
    };
    let queried: ReturnQueried = send(&env, &mut watch, &query).await?.decode()?;
    assert_eq!((queried.returnable_count, queried.problem_count), (10, 5));
    assert!(
        queried
            .problems
            .iter()
            .all(|problem| problem.reason.code == "CARD_LOCATION_MISMATCH")
    );
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM inventory.cards WHERE agent_code = 'ESS0601'"
        )
        .await,
        40,
        "the query moves nothing"
    );

    let job = ReturnByRange {
        return_id: Uuid::new_v4(),
        staff_id: "T0601".into(),
        warehouse: TARGET.into(),
        agent_ess_code: "ESS0601".into(),
        first: normal[30].clone(),
        last: normal[44].clone(),
        fee: ReturnFee {
            return_amount_fen: 1500,
        },
    };
    let answer: ReturnCommitted = send(&env, &mut watch, &job).await?.decode()?;
    assert_eq!(
        (
            answer.success_count,
            answer.failed_count,
            answer.fee.paid_amount_fen
        ),
        (10, 5, 1000)
    );
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM inventory.cards WHERE agent_code = 'ESS0601'"
        )
        .await,
        30
    );
    assert_eq!(count(&env, "SELECT count(*) FROM inventory.cards WHERE warehouse_code = '13ZDF16' AND location_kind = 'warehouse'").await, 50 + 10 + 10);
    workers.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_replays_to_the_current_stock_and_tampering_is_caught() -> anyhow::Result<()> {
    let (env, normal, workers, mut watch) = issued().await?;
    let job = by_list(
        Uuid::new_v4(),
        "ESS0602",
        ReturnSelection::Iccids {
            iccids: vec![normal[40].clone()],
        },
        0,
    );
    send(&env, &mut watch, &job)
        .await?
        .decode::<ReturnCommitted>()?;
    workers.stop().await?;
    let mut db = env.pool.acquire().await?;
    let clean = simflow_inventory::queries::reconcile(&mut db, 100).await?;
    assert!(clean.mismatches.is_empty(), "{:?}", clean.mismatches);
    assert_eq!(clean.cards, 110);

    let history = simflow_inventory::queries::card_history(&mut db, &normal[40])
        .await?
        .expect("card exists");
    let events: Vec<&str> = history
        .entries
        .iter()
        .map(|entry| entry.event.as_str())
        .collect();
    assert_eq!(events, vec!["received", "issued", "returned"]);
    assert_eq!(history.location, "warehouse:13ZDF16");

    // A card moved behind the ledger's back is found.
    sqlx::query("UPDATE inventory.cards SET warehouse_code = '130041' WHERE iccid = $1")
        .bind(&normal[90])
        .execute(&mut *db)
        .await?;
    let tampered = simflow_inventory::queries::reconcile(&mut db, 100).await?;
    assert_eq!(tampered.mismatches.len(), 1);
    assert_eq!(tampered.mismatches[0].problem, "location");
    assert_eq!(tampered.mismatches[0].iccid, normal[90]);
    // And the ledger refuses to be edited.
    let edit = sqlx::query("UPDATE inventory.card_ledger SET to_location = 'warehouse:130041'")
        .execute(&mut *db)
        .await;
    assert!(edit.is_err(), "the ledger is append-only");
    Ok(())
}
