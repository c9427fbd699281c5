//! The writer ledger's rules without a broker: every step of a writer's life (purchase, issue,
//! return, repair out and back, write-off) with its ledger entry, each repeated step answered
//! `already` with no second entry, and every refusal with its own code and nothing changed.
//! Also the centre's check of a reader against the ledger (`foreign_reader`).

use simflow_runtime::worker::Verdict;
use simflow_schemas::writers::{
    OutletReaderReport, ReaderIdentity, RepairDirection, SerialSource, WriterIssue, WriterPurchase,
    WriterRepair, WriterReturn, WriterWriteOff,
};
use simflow_tests::rules::{self, first_event, rejection_code};
use simflow_writecard::foreign_reader::{self, ReaderCheck};
use simflow_writecard::settings::ForeignReaderPolicy;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// Hexi's secondary warehouse: the branch of agents ESS0601 and ESS0602.
const HEXI: &str = "130041";
/// Heping's secondary warehouse: another branch.
const HEPING: &str = "130040";
/// Hexi's secondary warehouse keeper, with `writers`.
const KEEPER: &str = "S0601";
/// The market department's writer buyer, with `writer_purchase` on every branch.
const BUYER: &str = "M0001";

fn id() -> String {
    Uuid::new_v4().to_string()
}

fn serial() -> String {
    format!("ACR-{}", &Uuid::new_v4().simple().to_string()[..12])
}

/// An outlet of `agent` with a fresh code, as provisioning records it (no broker here).
async fn outlet(db: &mut PgConnection, agent: &str) -> anyhow::Result<String> {
    let code = format!("W{}", &Uuid::new_v4().simple().to_string()[..10]);
    sqlx::query(
        "INSERT INTO writecard.outlets (outlet_code, agent_code, public_key, key_fingerprint, broker_user) \
         VALUES ($1, $2, 'k', 'f', $3)",
    )
    .bind(&code)
    .bind(agent)
    .bind(format!("simflow-outlet-{code}"))
    .execute(db)
    .await?;
    Ok(code)
}

fn purchase(serial: &str) -> WriterPurchase {
    WriterPurchase {
        writer_serial: serial.into(),
        model: "ACR39U".into(),
        purchase_ref: "SC-2026-0412".into(),
        branch: HEXI.into(),
        staff_id: BUYER.into(),
    }
}

fn issue(serial: &str, outlet: &str) -> WriterIssue {
    WriterIssue {
        writer_serial: serial.into(),
        branch: HEXI.into(),
        outlet_code: outlet.into(),
        staff_id: KEEPER.into(),
    }
}

fn take_back(serial: &str) -> WriterReturn {
    WriterReturn {
        writer_serial: serial.into(),
        branch: HEXI.into(),
        staff_id: KEEPER.into(),
    }
}

fn repair(serial: &str, direction: RepairDirection) -> WriterRepair {
    WriterRepair {
        writer_serial: serial.into(),
        branch: HEXI.into(),
        direction,
        staff_id: KEEPER.into(),
    }
}

fn write_off(serial: &str) -> WriterWriteOff {
    WriterWriteOff {
        writer_serial: serial.into(),
        branch: HEXI.into(),
        reason: "读卡槽损坏".into(),
        staff_id: KEEPER.into(),
    }
}

/// The routing key and body of a committed step.
fn moved(verdict: &Verdict) -> (String, serde_json::Value) {
    assert!(
        matches!(verdict, Verdict::Committed(_)),
        "expected a committed step, got {verdict:?}"
    );
    first_event(verdict)
}

async fn ledger(db: &mut PgConnection, serial: &str) -> anyhow::Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT event FROM inventory.writer_ledger WHERE writer_serial = $1 ORDER BY entry_id",
    )
    .bind(serial)
    .fetch_all(db)
    .await?)
}

async fn state(db: &mut PgConnection, serial: &str) -> anyhow::Result<(String, Option<String>)> {
    Ok(
        sqlx::query_as("SELECT state, outlet_code FROM inventory.writers WHERE writer_serial = $1")
            .bind(serial)
            .fetch_one(db)
            .await?,
    )
}

#[tokio::test]
async fn a_writer_goes_through_every_step_once_with_one_ledger_entry_each() -> anyhow::Result<()> {
    let mut connection = rules::connect().await?;
    let mut db = connection.begin().await?;
    let worker = rules::issue_worker();
    let serial = serial();
    let hx = outlet(&mut db, "ESS0601").await?;

    let (key, body) = moved(&worker.run(&mut db, &id(), purchase(&serial)).await?);
    assert_eq!(key, "writer.purchased");
    assert_eq!(
        (body["state"].as_str(), body["already"].as_bool()),
        (Some("in_stock"), Some(false))
    );
    let (key, body) = moved(&worker.run(&mut db, &id(), issue(&serial, &hx)).await?);
    assert_eq!(key, "writer.issued");
    assert_eq!(body["outlet_code"], hx.as_str());
    assert_eq!(
        body["agent_ess_code"], "ESS0601",
        "the agent is the outlet's"
    );
    let (key, _) = moved(&worker.run(&mut db, &id(), take_back(&serial)).await?);
    assert_eq!(key, "writer.returned");
    assert_eq!(state(&mut db, &serial).await?, ("in_stock".into(), None));
    let (key, body) = moved(
        &worker
            .run(&mut db, &id(), repair(&serial, RepairDirection::Out))
            .await?,
    );
    assert_eq!(
        (key.as_str(), body["state"].as_str()),
        ("writer.repair_out", Some("in_repair"))
    );
    let (key, _) = moved(
        &worker
            .run(&mut db, &id(), repair(&serial, RepairDirection::Back))
            .await?,
    );
    assert_eq!(key, "writer.repair_back");
    let (key, body) = moved(&worker.run(&mut db, &id(), write_off(&serial)).await?);
    assert_eq!(
        (key.as_str(), body["state"].as_str()),
        ("writer.written_off", Some("written_off"))
    );
    assert_eq!(
        ledger(&mut db, &serial).await?,
        [
            "purchased",
            "issued",
            "returned",
            "repair_out",
            "repair_back",
            "written_off"
        ]
    );
    // The ledger is append-only.
    let mut savepoint = db.begin().await?;
    let changed = sqlx::query("DELETE FROM inventory.writer_ledger WHERE writer_serial = $1")
        .bind(&serial)
        .execute(&mut *savepoint)
        .await;
    assert!(changed.is_err(), "the writer ledger refused the delete");
    Ok(())
}

#[tokio::test]
async fn every_step_repeated_answers_already_and_adds_nothing() -> anyhow::Result<()> {
    let mut connection = rules::connect().await?;
    let mut db = connection.begin().await?;
    let worker = rules::issue_worker();
    let serial = serial();
    let hx = outlet(&mut db, "ESS0601").await?;
    let steps: Vec<(simflow_schemas::registry::IssueJob, &str)> = vec![
        (purchase(&serial).into(), "writer.purchased"),
        (issue(&serial, &hx).into(), "writer.issued"),
        (take_back(&serial).into(), "writer.returned"),
        (
            repair(&serial, RepairDirection::Out).into(),
            "writer.repair_out",
        ),
        (
            repair(&serial, RepairDirection::Back).into(),
            "writer.repair_back",
        ),
        (write_off(&serial).into(), "writer.written_off"),
    ];
    for (step, expected) in steps {
        let (key, first) = moved(&worker.run(&mut db, &id(), step.clone()).await?);
        assert_eq!(
            (key.as_str(), first["already"].as_bool()),
            (expected, Some(false))
        );
        // The clerk clicks again: a new message, the same step.
        let (key, again) = moved(&worker.run(&mut db, &id(), step).await?);
        assert_eq!(
            (key.as_str(), again["already"].as_bool()),
            (expected, Some(true))
        );
        assert_eq!(again["state"], first["state"]);
    }
    assert_eq!(
        ledger(&mut db, &serial).await?.len(),
        6,
        "one entry per step"
    );
    Ok(())
}

#[tokio::test]
async fn a_serial_recorded_again_with_other_details_is_refused() -> anyhow::Result<()> {
    let mut connection = rules::connect().await?;
    let mut db = connection.begin().await?;
    let worker = rules::issue_worker();
    let serial = serial();
    moved(&worker.run(&mut db, &id(), purchase(&serial)).await?);
    let cases = [
        WriterPurchase {
            model: "OMNIKEY 3121".into(),
            ..purchase(&serial)
        },
        WriterPurchase {
            purchase_ref: "SC-OTHER".into(),
            ..purchase(&serial)
        },
        WriterPurchase {
            branch: HEPING.into(),
            ..purchase(&serial)
        },
    ];
    for case in cases {
        let verdict = worker.run(&mut db, &id(), case.clone()).await?;
        assert_eq!(
            rejection_code(&verdict),
            "WRITER_SERIAL_CONFLICT",
            "{case:?}"
        );
    }
    assert_eq!(ledger(&mut db, &serial).await?, ["purchased"]);
    Ok(())
}

#[tokio::test]
async fn every_refusal_has_its_own_code_and_changes_nothing() -> anyhow::Result<()> {
    let mut connection = rules::connect().await?;
    let mut db = connection.begin().await?;
    let worker = rules::issue_worker();
    let hx = outlet(&mut db, "ESS0601").await?;
    let hx_other = outlet(&mut db, "ESS0601").await?;
    let heping_outlet = outlet(&mut db, "ESS0101").await?;
    let revoked = outlet(&mut db, "ESS0601").await?;
    sqlx::query("UPDATE writecard.outlets SET active = false WHERE outlet_code = $1")
        .bind(&revoked)
        .execute(&mut *db)
        .await?;
    let in_stock = serial();
    let issued = serial();
    let in_repair = serial();
    let gone = serial();
    for serial in [&in_stock, &issued, &in_repair, &gone] {
        moved(&worker.run(&mut db, &id(), purchase(serial)).await?);
    }
    moved(&worker.run(&mut db, &id(), issue(&issued, &hx)).await?);
    moved(
        &worker
            .run(&mut db, &id(), repair(&in_repair, RepairDirection::Out))
            .await?,
    );
    moved(&worker.run(&mut db, &id(), write_off(&gone)).await?);
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM inventory.writer_ledger")
        .fetch_one(&mut *db)
        .await?;

    let cases: Vec<(&str, simflow_schemas::registry::IssueJob)> = vec![
        ("WRITER_SERIAL_INVALID", purchase("").into()),
        ("WRITER_SERIAL_INVALID", issue(&"x".repeat(65), &hx).into()),
        (
            "WRITER_PURCHASE_INCOMPLETE",
            WriterPurchase {
                model: " ".into(),
                ..purchase(&serial())
            }
            .into(),
        ),
        (
            "BRANCH_UNKNOWN",
            WriterPurchase {
                branch: "13ZDF16".into(),
                ..purchase(&serial())
            }
            .into(),
        ),
        (
            "STAFF_NOT_PERMITTED",
            WriterPurchase {
                staff_id: KEEPER.into(),
                ..purchase(&serial())
            }
            .into(),
        ),
        (
            "STAFF_NOT_PERMITTED",
            WriterIssue {
                staff_id: "S0602".into(),
                ..issue(&in_stock, &hx)
            }
            .into(),
        ),
        (
            "STAFF_NOT_BOUND",
            WriterIssue {
                staff_id: "S0101".into(),
                ..issue(&in_stock, &hx)
            }
            .into(),
        ),
        (
            "STAFF_UNKNOWN",
            WriterIssue {
                staff_id: "NOBODY".into(),
                ..issue(&in_stock, &hx)
            }
            .into(),
        ),
        ("WRITER_UNKNOWN", issue(&serial(), &hx).into()),
        (
            "WRITER_OTHER_BRANCH",
            WriterIssue {
                branch: HEPING.into(),
                staff_id: "S0101".into(),
                ..issue(&in_stock, &heping_outlet)
            }
            .into(),
        ),
        ("WRITER_OUTLET_UNKNOWN", issue(&in_stock, "NOPE").into()),
        ("WRITER_OUTLET_INACTIVE", issue(&in_stock, &revoked).into()),
        (
            "WRITER_OUTLET_OTHER_BRANCH",
            issue(&in_stock, &heping_outlet).into(),
        ),
        ("WRITER_OUTLET_HAS_WRITER", issue(&in_stock, &hx).into()),
        ("WRITER_NOT_IN_STOCK", issue(&issued, &hx_other).into()),
        ("WRITER_NOT_IN_STOCK", issue(&in_repair, &hx_other).into()),
        ("WRITER_WRITTEN_OFF", issue(&gone, &hx_other).into()),
        ("WRITER_NOT_ISSUED", take_back(&in_stock).into()),
        ("WRITER_NOT_ISSUED", take_back(&in_repair).into()),
        ("WRITER_WRITTEN_OFF", take_back(&gone).into()),
        (
            "WRITER_NOT_IN_STOCK",
            repair(&issued, RepairDirection::Out).into(),
        ),
        (
            "WRITER_NOT_IN_REPAIR",
            repair(&in_stock, RepairDirection::Back).into(),
        ),
        (
            "WRITER_WRITTEN_OFF",
            repair(&gone, RepairDirection::Back).into(),
        ),
        ("WRITER_NOT_IN_STOCK", write_off(&issued).into()),
        (
            "WRITE_OFF_REASON_MISSING",
            WriterWriteOff {
                reason: "  ".into(),
                ..write_off(&in_stock)
            }
            .into(),
        ),
    ];
    for (expected, job) in cases {
        let verdict = worker.run(&mut db, &id(), job.clone()).await?;
        assert_eq!(rejection_code(&verdict), expected, "{job:?}");
    }
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM inventory.writer_ledger")
        .fetch_one(&mut *db)
        .await?;
    assert_eq!(after, before, "no refusal wrote to the ledger");
    assert_eq!(state(&mut db, &in_stock).await?, ("in_stock".into(), None));
    assert_eq!(
        state(&mut db, &issued).await?,
        ("issued".into(), Some(hx.clone()))
    );
    // The rejection speaks to the clerk in both languages.
    let verdict = worker.run(&mut db, &id(), issue(&gone, &hx_other)).await?;
    let (_, body) = first_event(&verdict);
    assert_eq!(body["reason"]["message_zh"], "写卡器已报废");
    assert_eq!(
        body["reason"]["message_en"],
        "The writer has been written off"
    );
    Ok(())
}

#[tokio::test]
async fn the_listing_shows_what_each_outlet_agent_and_branch_holds() -> anyhow::Result<()> {
    use simflow_inventory::writers::{Holder, list};
    let mut connection = rules::connect().await?;
    let mut db = connection.begin().await?;
    let worker = rules::issue_worker();
    let first = outlet(&mut db, "ESS0601").await?;
    let second = outlet(&mut db, "ESS0602").await?;
    let (a, b, c) = (serial(), serial(), serial());
    for serial in [&a, &b, &c] {
        moved(&worker.run(&mut db, &id(), purchase(serial)).await?);
    }
    moved(&worker.run(&mut db, &id(), issue(&a, &first)).await?);
    moved(&worker.run(&mut db, &id(), issue(&b, &second)).await?);
    let serials = |writers: Vec<simflow_inventory::writers::Writer>| {
        writers
            .into_iter()
            .map(|writer| writer.writer_serial)
            .filter(|serial| [&a, &b, &c].contains(&serial))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        serials(list(&mut db, &Holder::Outlet(&first)).await?),
        [a.as_str()]
    );
    assert_eq!(
        serials(list(&mut db, &Holder::Agent("ESS0602")).await?),
        [b.as_str()]
    );
    let mut branch = serials(list(&mut db, &Holder::Branch(HEXI)).await?);
    branch.sort();
    let mut all = vec![a.clone(), b.clone(), c.clone()];
    all.sort();
    assert_eq!(
        branch, all,
        "the branch lists its writers wherever they are"
    );
    assert!(serials(list(&mut db, &Holder::Branch(HEPING)).await?).is_empty());
    Ok(())
}

fn reader(serial: Option<&str>) -> ReaderIdentity {
    ReaderIdentity {
        name: "Virtual PCD 00 00".into(),
        vendor: None,
        ifd_type: None,
        serial: serial.map(str::to_owned),
        serial_source: serial.map(|_| SerialSource::Configured),
    }
}

#[tokio::test]
async fn a_reader_counts_as_the_outlets_only_when_the_ledger_issued_it_there() -> anyhow::Result<()>
{
    let mut connection = rules::connect().await?;
    let mut db = connection.begin().await?;
    let worker = rules::issue_worker();
    let here = outlet(&mut db, "ESS0601").await?;
    let there = outlet(&mut db, "ESS0601").await?;
    let (ours, theirs, unissued) = (serial(), serial(), serial());
    for serial in [&ours, &theirs, &unissued] {
        moved(&worker.run(&mut db, &id(), purchase(serial)).await?);
    }
    moved(&worker.run(&mut db, &id(), issue(&ours, &here)).await?);
    moved(&worker.run(&mut db, &id(), issue(&theirs, &there)).await?);
    assert_eq!(
        foreign_reader::check(&mut db, &here, Some(&reader(Some(&ours)))).await?,
        ReaderCheck::Issued
    );
    assert_eq!(
        foreign_reader::check(&mut db, &here, Some(&reader(Some(&theirs)))).await?,
        ReaderCheck::Foreign {
            issued_to: Some(there.clone())
        }
    );
    assert_eq!(
        foreign_reader::check(&mut db, &here, Some(&reader(Some(&unissued)))).await?,
        ReaderCheck::Foreign { issued_to: None }
    );
    assert_eq!(
        foreign_reader::check(&mut db, &here, Some(&reader(None))).await?,
        ReaderCheck::Foreign { issued_to: None },
        "a reader without a serial is not the issued one"
    );
    assert_eq!(
        foreign_reader::check(&mut db, &here, None).await?,
        ReaderCheck::Foreign { issued_to: None }
    );

    // Refuse admits a request only after the outlet reported its issued reader.
    let refuse = ForeignReaderPolicy::Refuse;
    let refused = foreign_reader::admit_request(refuse, &here, &mut db).await;
    assert!(refused.is_err(), "no report yet");
    let report = |serial: &str| OutletReaderReport {
        report_id: Uuid::new_v4(),
        outlet_code: here.clone(),
        reader: Some(reader(Some(serial))),
    };
    foreign_reader::record_report(refuse, &report(&theirs), &mut db).await?;
    assert!(
        foreign_reader::admit_request(refuse, &here, &mut db)
            .await
            .is_err()
    );
    assert!(
        foreign_reader::admit_request(ForeignReaderPolicy::Flag, &here, &mut db)
            .await
            .is_ok(),
        "flag lets the request through"
    );
    foreign_reader::record_report(refuse, &report(&ours), &mut db).await?;
    assert!(
        foreign_reader::admit_request(refuse, &here, &mut db)
            .await
            .is_ok()
    );
    let flags = foreign_reader::flags(&mut db, Some(&here), 10).await?;
    assert_eq!(flags.len(), 1, "only the foreign report was flagged");
    assert_eq!(
        (flags[0].seen_in.as_str(), flags[0].action.as_str()),
        ("connect", "refused")
    );
    assert_eq!(flags[0].issued_to.as_deref(), Some(there.as_str()));
    Ok(())
}
