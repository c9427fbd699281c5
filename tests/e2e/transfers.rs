//! Warehouse transfers end to end: the happy path by quantity, list and range; approving twice;
//! and every rejection, each leaving the cards exactly where they were.

use simflow_cli::pipeline::WorkerKind;
use simflow_cli::world::transfer_create as create;
use simflow_schemas::common::CardSelection;
use simflow_schemas::transfer::{
    TransferApproveIn, TransferApproveOut, TransferApproved, TransferCreate, TransferCreated,
};
use simflow_tests::TestEnv;
use uuid::Uuid;

use crate::support::{
    card_problems, cards_on_transfers, count, hexi_transfer, ledger_entries, receive_hexi_normal,
    rejection_code, send,
};

const SOURCE: &str = "130041";
const TARGET: &str = "13ZDF16";
const NORMAL: &str = "USIM128K_NORMAL";
const MICRO: &str = "USIM128K_MICRO";

fn approve_out(transfer_id: Uuid, staff: &str) -> TransferApproveOut {
    TransferApproveOut {
        transfer_id,
        staff_id: staff.into(),
    }
}

fn approve_in(transfer_id: Uuid, staff: &str) -> TransferApproveIn {
    TransferApproveIn {
        transfer_id,
        staff_id: staff.into(),
    }
}

fn range(first: &str, last: &str) -> CardSelection {
    CardSelection::Range {
        first: first.into(),
        last: last.into(),
    }
}

fn iccids(cards: &[&String]) -> CardSelection {
    CardSelection::Iccids {
        iccids: cards.iter().map(|iccid| (*iccid).clone()).collect(),
    }
}

/// A world with 50 normal and 5 micro blank cards in Hexi's secondary warehouse.
async fn stocked() -> anyhow::Result<(TestEnv, Vec<String>, Vec<String>)> {
    let env = TestEnv::new().await?;
    let normal = receive_hexi_normal(&env, 50).await?;
    let micro = env
        .receive_cards(SOURCE, MICRO, "DU06", 898_601_100_000_100_000, 5)
        .await?;
    Ok((env, normal, micro))
}

async fn untouched(env: &TestEnv) -> anyhow::Result<()> {
    let moved_or_held = count(
        env,
        "SELECT count(*) FROM inventory.cards WHERE warehouse_code IS DISTINCT FROM '130041' OR transfer_id IS NOT NULL",
    )
    .await;
    assert_eq!(
        moved_or_held, 0,
        "a refused job must leave every card where it was"
    );
    let ledger = count(
        env,
        "SELECT count(*) FROM inventory.card_ledger WHERE event <> 'received'",
    )
    .await;
    assert_eq!(ledger, 0, "a refused job must write no ledger entry");
    let transfers = count(env, "SELECT count(*) FROM inventory.transfers").await;
    assert_eq!(transfers, 0, "a refused create must leave no transfer");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_by_quantity_moves_cards_after_both_approvals() -> anyhow::Result<()> {
    let (env, normal, _) = stocked().await?;
    let workers = env.start_workers(&[WorkerKind::Transfer]);
    let mut watch = env.watch().await?;
    let id = Uuid::new_v4();

    let created = send(
        &env,
        &mut watch,
        &hexi_transfer(id, CardSelection::Quantity { quantity: 20 }),
    )
    .await?;
    let created: TransferCreated = created.decode()?;
    assert_eq!(created.card_count, 20);
    assert_eq!(created.first_iccid, normal[0]);
    assert_eq!(created.last_iccid, normal[19]);
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM inventory.cards WHERE warehouse_code = '130041'"
        )
        .await,
        55,
        "nothing moves on create"
    );

    let out = send(&env, &mut watch, &approve_out(id, "S0602")).await?;
    assert_eq!(out.routing_key, "transfer.approved_out");
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM inventory.cards WHERE location_kind = 'in_transit'"
        )
        .await,
        20
    );

    let approved_in = send(&env, &mut watch, &approve_in(id, "T0601")).await?;
    let approved_in: TransferApproved = approved_in.decode()?;
    assert_eq!(
        (approved_in.card_count, approved_in.already_approved),
        (20, false)
    );
    assert_eq!(count(&env, "SELECT count(*) FROM inventory.cards WHERE warehouse_code = '13ZDF16' AND state = 'blank'").await, 20);
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM inventory.cards WHERE warehouse_code = '130041'"
        )
        .await,
        35
    );
    assert_eq!(
        count(&env, "SELECT count(*) FROM inventory.card_ledger WHERE event IN ('transfer_out', 'transfer_in')").await,
        40,
        "one ledger entry per card per approval"
    );
    workers.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_by_list_and_by_range_take_exactly_those_cards() -> anyhow::Result<()> {
    let (env, normal, _) = stocked().await?;
    let workers = env.start_workers(&[WorkerKind::Transfer]);
    let mut watch = env.watch().await?;

    let list = iccids(&[&normal[3], &normal[7]]);
    let by_list = send(&env, &mut watch, &hexi_transfer(Uuid::new_v4(), list)).await?;
    assert_eq!(by_list.decode::<TransferCreated>()?.card_count, 2);

    let by_range = send(
        &env,
        &mut watch,
        &hexi_transfer(Uuid::new_v4(), range(&normal[10], &normal[19])),
    )
    .await?;
    let by_range: TransferCreated = by_range.decode()?;
    assert_eq!(
        (by_range.card_count, by_range.first_iccid.as_str()),
        (10, normal[10].as_str())
    );

    // A range overlapping cards the list transfer holds is refused as a whole.
    let overlapping = send(
        &env,
        &mut watch,
        &hexi_transfer(Uuid::new_v4(), range(&normal[0], &normal[5])),
    )
    .await?;
    assert_eq!(rejection_code(&overlapping), "CARDS_NOT_AVAILABLE");
    assert_eq!(overlapping.body["problem_count"], 1);
    assert_eq!(overlapping.body["problems"][0]["iccid"], normal[3].as_str());
    assert_eq!(
        overlapping.body["problems"][0]["reason"]["code"],
        "CARD_HELD"
    );
    assert_eq!(cards_on_transfers(&env).await, 12);
    workers.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approving_twice_is_a_success_with_no_second_effect() -> anyhow::Result<()> {
    let (env, _, _) = stocked().await?;
    let workers = env.start_workers(&[WorkerKind::Transfer]);
    let mut watch = env.watch().await?;
    let id = Uuid::new_v4();
    send(
        &env,
        &mut watch,
        &hexi_transfer(id, CardSelection::Quantity { quantity: 5 }),
    )
    .await?;

    let first_out = send(&env, &mut watch, &approve_out(id, "S0602")).await?;
    let second_out = send(&env, &mut watch, &approve_out(id, "S0601")).await?;
    let (first_out, second_out): (TransferApproved, TransferApproved) =
        (first_out.decode()?, second_out.decode()?);
    assert!(!first_out.already_approved && second_out.already_approved);
    assert_eq!(
        second_out.approved_by, "S0602",
        "the answer names the approval that took effect"
    );

    send(&env, &mut watch, &approve_in(id, "T0601")).await?;
    let again = send(&env, &mut watch, &approve_in(id, "T0601")).await?;
    assert!(again.decode::<TransferApproved>()?.already_approved);
    // A late approve-out after approve-in is harmless too.
    let late_out = send(&env, &mut watch, &approve_out(id, "S0602")).await?;
    assert!(late_out.decode::<TransferApproved>()?.already_approved);

    assert_eq!(ledger_entries(&env, "transfer_out").await, 5);
    assert_eq!(ledger_entries(&env, "transfer_in").await, 5);
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM inventory.cards WHERE warehouse_code = '13ZDF16'"
        )
        .await,
        5
    );
    workers.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_create_is_refused_with_its_reason_and_moves_nothing() -> anyhow::Result<()> {
    let (env, normal, micro) = stocked().await?;
    env.receive_cards("130040", NORMAL, "DU01", 898_601_100_000_200_000, 3)
        .await?;
    let elsewhere = "SELECT count(*) FROM inventory.cards WHERE warehouse_code = '130040'";
    let workers = env.start_workers(&[WorkerKind::Transfer]);
    let mut watch = env.watch().await?;
    let other_warehouse_card: String = sqlx::query_scalar(
        "SELECT min(iccid) FROM inventory.cards WHERE warehouse_code = '130040'",
    )
    .fetch_one(&env.pool)
    .await?;
    // One card of a fresh transfer with everything as given.
    let one = |staff: &str, source: &str, target: &str, card_type: &str| {
        create(
            Uuid::new_v4(),
            staff,
            source,
            target,
            card_type,
            CardSelection::Quantity { quantity: 1 },
        )
    };
    let hexi = |cards| hexi_transfer(Uuid::new_v4(), cards);
    let quantity = |n| CardSelection::Quantity { quantity: n };
    let unknown = "8986011000000999990".to_owned();
    let not_received = "8986011000000000001".to_owned();
    let cases: Vec<(&str, TransferCreate)> = vec![
        ("WAREHOUSE_UNKNOWN", one("S0601", "999999", TARGET, NORMAL)),
        ("WAREHOUSE_UNKNOWN", one("S0601", SOURCE, "13XXXXX", NORMAL)),
        // Back up the hierarchy, and across units.
        ("WRONG_DIRECTION", one("T0601", TARGET, SOURCE, NORMAL)),
        ("WRONG_DIRECTION", one("S0601", SOURCE, "13ZDF14", NORMAL)),
        ("CARD_TYPE_UNKNOWN", one("S0601", SOURCE, TARGET, "SIM_2G")),
        ("STAFF_UNKNOWN", one("NOBODY", SOURCE, TARGET, NORMAL)),
        ("STAFF_NOT_BOUND", one("S0101", SOURCE, TARGET, NORMAL)),
        ("STAFF_NOT_PERMITTED", one("S0602", SOURCE, TARGET, NORMAL)),
        ("NOT_ENOUGH_CARDS", hexi(quantity(51))),
        (
            "NOT_ENOUGH_CARDS",
            create(Uuid::new_v4(), "S0601", SOURCE, TARGET, MICRO, quantity(6)),
        ),
        ("EMPTY_SELECTION", hexi(quantity(0))),
        ("BAD_RANGE", hexi(range(&normal[9], &normal[1]))),
        (
            "CARDS_NOT_AVAILABLE",
            hexi(iccids(&[&normal[0], &micro[0]])),
        ),
        (
            "CARDS_NOT_AVAILABLE",
            hexi(iccids(&[&normal[0], &other_warehouse_card])),
        ),
        ("CARDS_NOT_AVAILABLE", hexi(iccids(&[&normal[0], &unknown]))),
        (
            "CARDS_NOT_AVAILABLE",
            hexi(iccids(&[&normal[0], &not_received])),
        ),
    ];
    for (expected, job) in cases {
        let answer = send(&env, &mut watch, &job).await?;
        assert_eq!(rejection_code(&answer), expected, "{job:?}");
        assert!(
            !answer.body["reason"]["message_zh"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "Chinese text present"
        );
        assert!(
            !answer.body["reason"]["message_en"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "English text present"
        );
        untouched_except_other_unit(&env, elsewhere).await?;
    }

    // The per-card reasons say which card failed and why.
    let mixed = send(
        &env,
        &mut watch,
        &hexi(iccids(&[&normal[0], &micro[0], &other_warehouse_card])),
    )
    .await?;
    let mut expected = vec![
        (micro[0].clone(), "CARD_TYPE_MISMATCH".to_owned()),
        (other_warehouse_card, "CARD_NOT_IN_WAREHOUSE".to_owned()),
    ];
    expected.sort();
    assert_eq!(card_problems(&mixed), expected);
    workers.stop().await
}

async fn untouched_except_other_unit(env: &TestEnv, elsewhere: &'static str) -> anyhow::Result<()> {
    assert_eq!(
        count(env, elsewhere).await,
        3,
        "the other unit's cards stay put"
    );
    let held = count(env, "SELECT count(*) FROM inventory.cards WHERE transfer_id IS NOT NULL OR location_kind <> 'warehouse'").await;
    assert_eq!(held, 0, "a refused job holds and moves nothing");
    assert_eq!(
        count(env, "SELECT count(*) FROM inventory.transfers").await,
        0,
        "a refused create leaves no transfer"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_approvals_are_refused_and_change_nothing() -> anyhow::Result<()> {
    let (env, _, _) = stocked().await?;
    let workers = env.start_workers(&[WorkerKind::Transfer]);
    let mut watch = env.watch().await?;
    let unknown = send(&env, &mut watch, &approve_out(Uuid::new_v4(), "S0602")).await?;
    assert_eq!(rejection_code(&unknown), "TRANSFER_UNKNOWN");
    untouched(&env).await?;

    let id = Uuid::new_v4();
    let four = hexi_transfer(id, CardSelection::Quantity { quantity: 4 });
    send(&env, &mut watch, &four).await?;
    let in_first = send(&env, &mut watch, &approve_in(id, "T0601")).await?;
    assert_eq!(rejection_code(&in_first), "APPROVE_IN_BEFORE_OUT");
    // Target-side staff may not approve out; source-side staff may not approve in.
    let wrong_side_out = send(&env, &mut watch, &approve_out(id, "T0601")).await?;
    assert_eq!(rejection_code(&wrong_side_out), "STAFF_NOT_BOUND");
    send(&env, &mut watch, &approve_out(id, "S0602")).await?;
    let wrong_side_in = send(&env, &mut watch, &approve_in(id, "S0602")).await?;
    assert_eq!(rejection_code(&wrong_side_in), "STAFF_NOT_BOUND");
    let other_unit_in = send(&env, &mut watch, &approve_in(id, "T0101")).await?;
    assert_eq!(rejection_code(&other_unit_in), "STAFF_NOT_BOUND");
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM inventory.cards WHERE location_kind = 'in_transit'"
        )
        .await,
        4,
        "still in transit"
    );
    assert_eq!(ledger_entries(&env, "transfer_in").await, 0);

    // A different transfer under a used id is refused; the same one re-sent is answered again.
    let conflicting = send(
        &env,
        &mut watch,
        &hexi_transfer(id, CardSelection::Quantity { quantity: 9 }),
    )
    .await?;
    assert_eq!(rejection_code(&conflicting), "TRANSFER_ID_CONFLICT");
    let resent = send(&env, &mut watch, &four).await?;
    assert_eq!(resent.decode::<TransferCreated>()?.card_count, 4);
    assert_eq!(
        count(&env, "SELECT count(*) FROM inventory.transfers").await,
        1
    );
    workers.stop().await
}
