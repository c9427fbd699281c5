//! Batch issue to agents end to end: prepare then commit, the acceptance slip, every rule with
//! its own rejection (nothing held after a refusal), idempotent commit, expiry of an uncommitted
//! batch, and concurrent prepares of overlapping ranges (no card issued twice).

use std::time::Duration;

use simflow_cli::pipeline::WorkerKind;
use simflow_cli::world::{issue_commit, issue_prepare};
use simflow_schemas::common::CardSelection;
use simflow_schemas::issue::{IssueCommitted, IssuePrepare, IssuePrepared};
use simflow_tests::TestEnv;
use uuid::Uuid;

use crate::support::{
    ANSWER, card_problems, cards_in_batches, count, ledger_entries, publish, rejection_code, send,
};

pub const TARGET: &str = "13ZDF16";
pub const NORMAL: &str = "USIM128K_NORMAL";

/// A prepare by another staff ID or from another warehouse than Hexi's target keeper's.
fn prepare(
    batch_id: Uuid,
    staff: &str,
    warehouse: &str,
    agent: &str,
    card_type: &str,
    cards: CardSelection,
) -> IssuePrepare {
    IssuePrepare {
        staff_id: staff.into(),
        warehouse: warehouse.into(),
        ..issue_prepare(batch_id, agent, card_type, cards)
    }
}

/// 100 normal DU06 cards, 5 micro DU06 cards and 5 normal cards of another department, all
/// blank in Hexi's on-site target warehouse.
pub async fn stocked_target() -> anyhow::Result<(TestEnv, Vec<String>, Vec<String>, Vec<String>)> {
    let env = TestEnv::new().await?;
    let normal = env
        .receive_cards(TARGET, NORMAL, "DU06", 898_601_100_000_000_000, 100)
        .await?;
    let micro = env
        .receive_cards(TARGET, "USIM128K_MICRO", "DU06", 898_601_100_000_100_000, 5)
        .await?;
    let foreign = env
        .receive_cards(TARGET, NORMAL, "DU01", 898_601_100_000_200_000, 5)
        .await?;
    Ok((env, normal, micro, foreign))
}

fn range(first: &str, last: &str) -> CardSelection {
    CardSelection::Range {
        first: first.into(),
        last: last.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_batch_is_held_then_committed_to_the_agent_once() -> anyhow::Result<()> {
    let (env, normal, _, _) = stocked_target().await?;
    let workers = env.start_workers(&[WorkerKind::Issue]);
    let mut watch = env.watch().await?;
    let batch = Uuid::new_v4();
    let job = issue_prepare(batch, "ESS0601", NORMAL, range(&normal[0], &normal[39]));
    let prepared: IssuePrepared = send(&env, &mut watch, &job).await?.decode()?;
    assert_eq!(prepared.card_count, 40);
    assert!(
        prepared.acceptance_slip.contains("免填单"),
        "{}",
        prepared.acceptance_slip
    );
    assert!(prepared.acceptance_slip.contains("ESS0601"));
    assert!(
        prepared
            .acceptance_slip
            .contains(&format!("{} – {}  (40)", normal[0], normal[39]))
    );
    assert_eq!(cards_in_batches(&env).await, 40);
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM inventory.cards WHERE location_kind = 'agent'"
        )
        .await,
        0,
        "prepare moves nothing"
    );

    // Re-sending the same prepare answers the same batch.
    let again: IssuePrepared = send(&env, &mut watch, &job).await?.decode()?;
    assert_eq!(
        (again.card_count, again.expires_at),
        (40, prepared.expires_at)
    );

    let commit = issue_commit(batch);
    let committed: IssueCommitted = send(&env, &mut watch, &commit).await?.decode()?;
    assert_eq!(
        (committed.card_count, committed.already_committed),
        (40, false)
    );
    let twice: IssueCommitted = send(&env, &mut watch, &commit).await?.decode()?;
    assert!(twice.already_committed);
    assert_eq!(count(&env, "SELECT count(*) FROM inventory.cards WHERE location_kind = 'agent' AND agent_code = 'ESS0601'").await, 40);
    assert_eq!(ledger_entries(&env, "issued").await, 40);
    assert_eq!(cards_in_batches(&env).await, 0);

    // By list and by uploaded text file too.
    let by_list = issue_prepare(
        Uuid::new_v4(),
        "ESS0602",
        NORMAL,
        CardSelection::Iccids {
            iccids: vec![normal[50].clone(), normal[52].clone()],
        },
    );
    assert_eq!(
        send(&env, &mut watch, &by_list)
            .await?
            .decode::<IssuePrepared>()?
            .card_count,
        2
    );
    let text = format!("{}\n\n  {}  \n", normal[60], normal[61]);
    let by_file = issue_prepare(
        Uuid::new_v4(),
        "ESS0602",
        NORMAL,
        CardSelection::TextFile {
            file_name: "lingka.txt".into(),
            content: text,
        },
    );
    assert_eq!(
        send(&env, &mut watch, &by_file)
            .await?
            .decode::<IssuePrepared>()?
            .card_count,
        2
    );
    workers.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_issue_rule_has_its_own_rejection_and_holds_nothing() -> anyhow::Result<()> {
    let (env, normal, micro, foreign) = stocked_target().await?;
    env.receive_cards("130041", NORMAL, "DU06", 898_601_100_000_300_000, 3)
        .await?;
    sqlx::query("UPDATE inventory.cards SET state = 'written' WHERE iccid = $1")
        .bind(&normal[99])
        .execute(&env.pool)
        .await?;
    sqlx::query("UPDATE inventory.agents SET active = false WHERE ess_code = 'ESS0602'")
        .execute(&env.pool)
        .await?;
    let workers = env.start_workers(&[WorkerKind::Issue]);
    let mut watch = env.watch().await?;
    let list = |iccids: Vec<&String>| CardSelection::Iccids {
        iccids: iccids.into_iter().cloned().collect(),
    };
    let one = || list(vec![&normal[0]]);
    let cases = vec![
        (
            "WAREHOUSE_UNKNOWN",
            prepare(Uuid::new_v4(), "T0601", "13XXXXX", "ESS0601", NORMAL, one()),
        ),
        (
            "WAREHOUSE_NOT_TARGET",
            prepare(Uuid::new_v4(), "S0601", "130041", "ESS0601", NORMAL, one()),
        ),
        (
            "CARD_TYPE_UNKNOWN",
            issue_prepare(Uuid::new_v4(), "ESS0601", "SIM_2G", one()),
        ),
        (
            "AGENT_UNKNOWN",
            issue_prepare(Uuid::new_v4(), "ESS9999", NORMAL, one()),
        ),
        (
            "AGENT_INACTIVE",
            issue_prepare(Uuid::new_v4(), "ESS0602", NORMAL, one()),
        ),
        (
            "AGENT_OTHER_UNIT",
            issue_prepare(Uuid::new_v4(), "ESS0101", NORMAL, one()),
        ),
        (
            "STAFF_UNKNOWN",
            prepare(Uuid::new_v4(), "NOBODY", TARGET, "ESS0601", NORMAL, one()),
        ),
        (
            "STAFF_NOT_BOUND",
            prepare(Uuid::new_v4(), "S0601", TARGET, "ESS0601", NORMAL, one()),
        ),
        (
            "NOT_ENOUGH_CARDS",
            issue_prepare(
                Uuid::new_v4(),
                "ESS0601",
                NORMAL,
                CardSelection::Quantity { quantity: 100 },
            ),
        ),
    ];
    for (expected, job) in cases {
        let answer = send(&env, &mut watch, &job).await?;
        assert_eq!(rejection_code(&answer), expected, "{job:?}");
    }
    // Per-card rules: type, department, state, place; the answer names each card.
    let mixed = issue_prepare(
        Uuid::new_v4(),
        "ESS0601",
        NORMAL,
        list(vec![
            &normal[1],
            &micro[0],
            &foreign[0],
            &normal[99],
            &"8986011000003000006".to_owned(),
        ]),
    );
    let answer = send(&env, &mut watch, &mixed).await?;
    assert_eq!(rejection_code(&answer), "CARDS_NOT_AVAILABLE");
    let mut expected = vec![
        (micro[0].clone(), "CARD_TYPE_MISMATCH".to_owned()),
        (foreign[0].clone(), "DEPARTMENT_MISMATCH".to_owned()),
        (normal[99].clone(), "CARD_NOT_BLANK".to_owned()),
        (
            "8986011000003000006".to_owned(),
            "CARD_NOT_IN_WAREHOUSE".to_owned(),
        ),
    ];
    expected.sort();
    assert_eq!(card_problems(&answer), expected);
    assert_eq!(answer.body["problem_count"], 4);

    // Commit rules: unknown batch; a staff ID of another department may not commit.
    let unknown = send(&env, &mut watch, &issue_commit(Uuid::new_v4())).await?;
    assert_eq!(rejection_code(&unknown), "BATCH_UNKNOWN");
    assert_eq!(
        cards_in_batches(&env).await,
        0,
        "a refused prepare holds nothing"
    );
    assert_eq!(
        count(&env, "SELECT count(*) FROM inventory.issue_batches").await,
        0
    );
    workers.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncommitted_batch_expires_and_holds_nothing_afterwards() -> anyhow::Result<()> {
    let (env, normal, _, _) = stocked_target().await?;
    let settings = env.settings.with_value("inventory.issue_hold_seconds", 2)?;
    let workers = env.start_workers_with(&settings, &[WorkerKind::Issue]);
    let mut watch = env.watch().await?;
    let first = Uuid::new_v4();
    let cards = range(&normal[0], &normal[9]);
    send(
        &env,
        &mut watch,
        &issue_prepare(first, "ESS0601", NORMAL, cards.clone()),
    )
    .await?;
    // While held, another batch cannot take the cards.
    let blocked = send(
        &env,
        &mut watch,
        &issue_prepare(Uuid::new_v4(), "ESS0601", NORMAL, cards.clone()),
    )
    .await?;
    assert_eq!(rejection_code(&blocked), "CARDS_NOT_AVAILABLE");
    assert_eq!(blocked.body["problems"][0]["reason"]["code"], "CARD_HELD");

    env.eventually("the hold to lapse", Duration::from_secs(30), || async {
        let lapsed: bool = sqlx::query_scalar(
            "SELECT expires_at < now() FROM inventory.issue_batches WHERE batch_id = $1",
        )
        .bind(first)
        .fetch_one(&env.pool)
        .await?;
        Ok(lapsed)
    })
    .await?;
    let late = send(&env, &mut watch, &issue_commit(first)).await?;
    assert_eq!(rejection_code(&late), "BATCH_EXPIRED");
    let second = Uuid::new_v4();
    let retaken = send(
        &env,
        &mut watch,
        &issue_prepare(second, "ESS0601", NORMAL, cards),
    )
    .await?;
    assert_eq!(
        retaken.decode::<IssuePrepared>()?.card_count,
        10,
        "a lapsed hold reserves nothing"
    );
    let committed = send(&env, &mut watch, &issue_commit(second)).await?;
    assert_eq!(committed.decode::<IssueCommitted>()?.card_count, 10);
    let again = send(&env, &mut watch, &issue_commit(first)).await?;
    assert_eq!(rejection_code(&again), "BATCH_EXPIRED");
    workers.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_prepares_of_overlapping_ranges_never_issue_a_card_twice() -> anyhow::Result<()>
{
    let (env, normal, _, _) = stocked_target().await?;
    let workers = env.start_workers(&[WorkerKind::Issue]);
    let mut watch = env.watch().await?;
    // Eight batches over overlapping windows of the same 100 cards, all in flight at once.
    let mut jobs = Vec::new();
    for index in 0..8 {
        let first = index * 10;
        let batch = Uuid::new_v4();
        let job = issue_prepare(
            batch,
            if index % 2 == 0 { "ESS0601" } else { "ESS0602" },
            NORMAL,
            range(&normal[first], &normal[first + 29]),
        );
        jobs.push((batch, publish(&env, &job).await?));
    }
    let mut prepared = Vec::new();
    for (batch, message_id) in &jobs {
        let answer = watch.next_for(message_id, ANSWER).await?;
        if answer.routing_key == "issue.prepared" {
            prepared.push(*batch);
        } else {
            assert_eq!(rejection_code(&answer), "CARDS_NOT_AVAILABLE");
        }
    }
    assert!(!prepared.is_empty());
    let held = cards_in_batches(&env).await;
    assert_eq!(
        held,
        30 * i64::try_from(prepared.len())?,
        "every prepared batch holds its own 30 cards"
    );
    for batch in &prepared {
        let commit = issue_commit(*batch);
        send(&env, &mut watch, &commit)
            .await?
            .decode::<IssueCommitted>()?;
    }
    let twice = count(&env, "SELECT count(*) FROM (SELECT iccid FROM inventory.card_ledger WHERE event = 'issued' GROUP BY iccid HAVING count(*) > 1) AS twice").await;
    assert_eq!(twice, 0, "no card issued twice");
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM inventory.cards WHERE location_kind = 'agent'"
        )
        .await,
        held
    );
    workers.stop().await
}
