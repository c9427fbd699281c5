//! Transfer rules: create holds, approvals move, approving twice changes nothing, and each
//! refusal leaves every card where it was.

use simflow_inventory::TransferHandler;
use simflow_inventory::iccid::Iccid;
use simflow_runtime::testing::TestWorker;
use simflow_runtime::worker::Verdict;
use simflow_schemas::common::CardSelection;
use simflow_schemas::transfer::{TransferApproveIn, TransferApproveOut, TransferCreate};
use simflow_tests::rules::{self, first_event, rejection_code};
use sqlx::Connection;
use uuid::Uuid;

const SOURCE: &str = "130041";
const TARGET: &str = "13ZDF16";
const NORMAL: &str = "USIM128K_NORMAL";

fn create(transfer_id: Uuid, cards: CardSelection) -> TransferCreate {
    TransferCreate {
        transfer_id,
        staff_id: "S0601".into(),
        source_warehouse: SOURCE.into(),
        target_warehouse: TARGET.into(),
        card_type: NORMAL.into(),
        cards,
    }
}

fn id() -> String {
    Uuid::new_v4().to_string()
}

#[tokio::test]
async fn a_listed_transfer_holds_then_moves_its_cards_with_one_ledger_entry_per_step()
-> anyhow::Result<()> {
    let mut connection = rules::connect().await?;
    let mut db = connection.begin().await?;
    let iccids = rules::receive_cards(&mut db, SOURCE, NORMAL, "DU06", 3).await?;
    let worker = TestWorker::new(TransferHandler);
    let transfer_id = Uuid::new_v4();
    let listed = CardSelection::Iccids {
        iccids: iccids.clone(),
    };

    let created = worker
        .run(&mut db, &id(), create(transfer_id, listed))
        .await?;
    assert_eq!(first_event(&created).0, "transfer.created");
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM inventory.cards WHERE iccid = ANY($1) AND transfer_id = $2 AND warehouse_code = $3",
    )
    .bind(&iccids)
    .bind(transfer_id)
    .bind(SOURCE)
    .fetch_one(&mut *db)
    .await?;
    assert_eq!(held, 3, "held where they were");

    let approve_out = TransferApproveOut {
        transfer_id,
        staff_id: "S0602".into(),
    };
    let out = worker.run(&mut db, &id(), approve_out).await?;
    assert_eq!(first_event(&out).0, "transfer.approved_out");
    let approve_in = TransferApproveIn {
        transfer_id,
        staff_id: "T0601".into(),
    };
    let arrived = worker.run(&mut db, &id(), approve_in).await?;
    let (key, body) = first_event(&arrived);
    assert_eq!(key, "transfer.approved_in");
    assert_eq!(body["card_count"], 3);
    let in_target: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM inventory.cards WHERE iccid = ANY($1) AND warehouse_code = $2 \
         AND location_kind = 'warehouse' AND transfer_id IS NULL",
    )
    .bind(&iccids)
    .bind(TARGET)
    .fetch_one(&mut *db)
    .await?;
    assert_eq!(in_target, 3);
    let ledger: Vec<(String, Option<String>, String)> = sqlx::query_as(
        "SELECT event, from_location, to_location FROM inventory.card_ledger WHERE iccid = $1 ORDER BY entry_id",
    )
    .bind(&iccids[0])
    .fetch_all(&mut *db)
    .await?;
    let transit = format!("transit:{transfer_id}");
    assert_eq!(
        ledger,
        vec![
            ("received".into(), None, format!("warehouse:{SOURCE}")),
            (
                "transfer_out".into(),
                Some(format!("warehouse:{SOURCE}")),
                transit.clone()
            ),
            (
                "transfer_in".into(),
                Some(transit),
                format!("warehouse:{TARGET}")
            ),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn approving_in_twice_answers_already_approved_and_moves_nothing_more() -> anyhow::Result<()>
{
    let mut connection = rules::connect().await?;
    let mut db = connection.begin().await?;
    rules::receive_cards(&mut db, SOURCE, NORMAL, "DU06", 2).await?;
    let worker = TestWorker::new(TransferHandler);
    let transfer_id = Uuid::new_v4();
    let quantity = CardSelection::Quantity { quantity: 2 };
    worker
        .run(&mut db, &id(), create(transfer_id, quantity))
        .await?;
    let approve_out = TransferApproveOut {
        transfer_id,
        staff_id: "S0602".into(),
    };
    worker.run(&mut db, &id(), approve_out).await?;
    let approve_in = TransferApproveIn {
        transfer_id,
        staff_id: "T0601".into(),
    };
    worker.run(&mut db, &id(), approve_in.clone()).await?;
    let ledger_before = rules::count(&mut db, "SELECT count(*) FROM inventory.card_ledger").await;
    let again = worker.run(&mut db, &id(), approve_in).await?;
    assert_eq!(first_event(&again).1["already_approved"], true);
    let ledger_after = rules::count(&mut db, "SELECT count(*) FROM inventory.card_ledger").await;
    assert_eq!(ledger_before, ledger_after);
    Ok(())
}

#[tokio::test]
async fn each_transfer_rule_refuses_with_its_own_code_and_holds_nothing() -> anyhow::Result<()> {
    let mut connection = rules::connect().await?;
    let mut db = connection.begin().await?;
    let iccids = rules::receive_cards(&mut db, SOURCE, NORMAL, "DU06", 2).await?;
    let worker = TestWorker::new(TransferHandler);
    let listed = CardSelection::Iccids {
        iccids: iccids.clone(),
    };
    let mut wrong_direction = create(Uuid::new_v4(), listed.clone());
    wrong_direction.target_warehouse = "13ZDF14".into();
    let mut unknown_warehouse = create(Uuid::new_v4(), listed.clone());
    unknown_warehouse.source_warehouse = "999999".into();
    let mut wrong_staff = create(Uuid::new_v4(), listed.clone());
    wrong_staff.staff_id = "S0101".into();
    let mut unknown_type = create(Uuid::new_v4(), listed.clone());
    unknown_type.card_type = "NOPE".into();
    let unknown_card = create(
        Uuid::new_v4(),
        CardSelection::Iccids {
            iccids: vec![Iccid::from_body("898601999999999999")?.into_string()],
        },
    );
    let too_many = create(Uuid::new_v4(), CardSelection::Quantity { quantity: 999 });
    let cases = [
        ("WRONG_DIRECTION", wrong_direction),
        ("WAREHOUSE_UNKNOWN", unknown_warehouse),
        ("STAFF_NOT_BOUND", wrong_staff),
        ("CARD_TYPE_UNKNOWN", unknown_type),
        ("CARDS_NOT_AVAILABLE", unknown_card),
        ("NOT_ENOUGH_CARDS", too_many),
    ];
    for (code, job) in cases {
        let verdict = worker.run(&mut db, &id(), job).await?;
        assert_eq!(rejection_code(&verdict), code);
    }
    let approve_unknown = TransferApproveOut {
        transfer_id: Uuid::new_v4(),
        staff_id: "S0602".into(),
    };
    let verdict = worker.run(&mut db, &id(), approve_unknown).await?;
    assert_eq!(rejection_code(&verdict), "TRANSFER_UNKNOWN");
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM inventory.cards WHERE iccid = ANY($1) AND transfer_id IS NOT NULL",
    )
    .bind(&iccids)
    .fetch_one(&mut *db)
    .await?;
    assert_eq!(held, 0);
    Ok(())
}

#[tokio::test]
async fn approving_in_before_out_is_refused() -> anyhow::Result<()> {
    let mut connection = rules::connect().await?;
    let mut db = connection.begin().await?;
    rules::receive_cards(&mut db, SOURCE, NORMAL, "DU06", 1).await?;
    let worker = TestWorker::new(TransferHandler);
    let transfer_id = Uuid::new_v4();
    let quantity = CardSelection::Quantity { quantity: 1 };
    worker
        .run(&mut db, &id(), create(transfer_id, quantity))
        .await?;
    let approve_in = TransferApproveIn {
        transfer_id,
        staff_id: "T0601".into(),
    };
    let verdict = worker.run(&mut db, &id(), approve_in).await?;
    assert_eq!(rejection_code(&verdict), "APPROVE_IN_BEFORE_OUT");
    Ok(())
}

#[tokio::test]
async fn a_resent_create_answers_the_first_transfer_and_a_different_one_conflicts()
-> anyhow::Result<()> {
    let mut connection = rules::connect().await?;
    let mut db = connection.begin().await?;
    rules::receive_cards(&mut db, SOURCE, NORMAL, "DU06", 3).await?;
    let worker = TestWorker::new(TransferHandler);
    let transfer_id = Uuid::new_v4();
    let first = worker
        .run(
            &mut db,
            &id(),
            create(transfer_id, CardSelection::Quantity { quantity: 2 }),
        )
        .await?;
    // Another message (new id) with the same transfer: the same answer, nothing held twice.
    let again = worker
        .run(
            &mut db,
            &id(),
            create(transfer_id, CardSelection::Quantity { quantity: 2 }),
        )
        .await?;
    assert_eq!(first_event(&first), first_event(&again));
    let held: i64 =
        sqlx::query_scalar("SELECT count(*) FROM inventory.cards WHERE transfer_id = $1")
            .bind(transfer_id)
            .fetch_one(&mut *db)
            .await?;
    assert_eq!(held, 2);
    let other = worker
        .run(
            &mut db,
            &id(),
            create(transfer_id, CardSelection::Quantity { quantity: 1 }),
        )
        .await?;
    assert_eq!(rejection_code(&other), "TRANSFER_ID_CONFLICT");
    assert!(matches!(first, Verdict::Committed(_)));
    Ok(())
}
