//! Group commit at the database: a batch shares one transaction, each job in a savepoint of
//! its own. A job that fails rolls back alone and leaves no inbox row; a copy of a message
//! inside the same batch has one effect; a message handled before is answered from the inbox,
//! unless its id comes back with another body.

use simflow_inventory::TransferHandler;
use simflow_runtime::testing::{TestWorker, fresh_jobs};
use simflow_runtime::worker::{BatchJob, Verdict, digest};
use simflow_runtime::{Handler, JobContext, JobError, Outcome};
use simflow_schemas::common::CardSelection;
use simflow_schemas::registry::TransferJob;
use simflow_schemas::topology::JobQueue;
use simflow_schemas::transfer::TransferCreate;
use simflow_tests::rules::{self, first_event, rejection_code};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

const SOURCE: &str = "130041";
const NORMAL: &str = "USIM128K_NORMAL";

fn create(transfer_id: Uuid, source: &str, quantity: u32) -> TransferJob {
    TransferJob::Create(TransferCreate {
        transfer_id,
        staff_id: "S0601".into(),
        source_warehouse: source.into(),
        target_warehouse: "13ZDF16".into(),
        card_type: NORMAL.into(),
        cards: CardSelection::Quantity { quantity },
    })
}

async fn held_by(db: &mut PgConnection, transfer_id: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM inventory.cards WHERE transfer_id = $1")
        .bind(transfer_id)
        .fetch_one(db)
        .await
        .expect("count")
}

async fn inbox_outcome(
    db: &mut PgConnection,
    message_id: &str,
) -> Option<Option<serde_json::Value>> {
    sqlx::query_scalar(
        "SELECT outcome FROM runtime.inbox WHERE consumer = 'transfer' AND message_id = $1",
    )
    .bind(message_id)
    .fetch_optional(db)
    .await
    .expect("inbox")
}

/// The transfer handler, failing transiently after its work for one transfer id: the work
/// must be undone with the job, and only with it.
#[derive(Debug, Clone)]
struct FailsAfterWork {
    transfer_id: Uuid,
}

impl Handler for FailsAfterWork {
    type Job = TransferJob;
    const QUEUE: JobQueue = JobQueue::Transfer;

    async fn handle(
        &self,
        context: &JobContext,
        job: TransferJob,
        db: &mut PgConnection,
    ) -> Result<Outcome, JobError> {
        let fails =
            matches!(&job, TransferJob::Create(create) if create.transfer_id == self.transfer_id);
        let outcome = TransferHandler.handle(context, job, db).await?;
        if fails {
            return Err(JobError::Transient(anyhow::anyhow!(
                "injected after the work"
            )));
        }
        Ok(outcome)
    }
}

#[tokio::test]
async fn a_refused_job_inside_a_batch_rolls_back_alone() -> anyhow::Result<()> {
    let mut connection = rules::connect().await?;
    let mut db = connection.begin().await?;
    rules::receive_cards(&mut db, SOURCE, NORMAL, "DU06", 4).await?;
    let (first, refused, last) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let jobs = fresh_jobs([
        create(first, SOURCE, 2),
        create(refused, "999999", 1),
        create(last, SOURCE, 2),
    ]);
    let ids: Vec<String> = jobs
        .iter()
        .map(|job| job.context.message_id.clone())
        .collect();
    let verdicts = TestWorker::new(TransferHandler)
        .run_batch(&mut db, jobs)
        .await?;
    assert!(matches!(verdicts[0], Verdict::Committed(_)));
    assert_eq!(rejection_code(&verdicts[1]), "WAREHOUSE_UNKNOWN");
    assert!(matches!(verdicts[2], Verdict::Committed(_)));
    assert_eq!(held_by(&mut db, first).await, 2);
    assert_eq!(held_by(&mut db, last).await, 2);
    // Every one of them is recorded with its outcome, the refusal too.
    for id in &ids {
        assert!(
            matches!(inbox_outcome(&mut db, id).await, Some(Some(_))),
            "{id}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_transient_failure_inside_a_batch_undoes_its_own_work_and_leaves_no_inbox_row()
-> anyhow::Result<()> {
    let mut connection = rules::connect().await?;
    let mut db = connection.begin().await?;
    rules::receive_cards(&mut db, SOURCE, NORMAL, "DU06", 3).await?;
    let (before, failing, after) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let jobs = fresh_jobs([
        create(before, SOURCE, 1),
        create(failing, SOURCE, 1),
        create(after, SOURCE, 1),
    ]);
    let failing_message = jobs[1].context.message_id.clone();
    let verdicts = TestWorker::new(FailsAfterWork {
        transfer_id: failing,
    })
    .run_batch(&mut db, jobs)
    .await?;
    assert!(matches!(verdicts[0], Verdict::Committed(_)));
    assert!(matches!(verdicts[1], Verdict::Transient(_)));
    assert!(matches!(verdicts[2], Verdict::Committed(_)));
    assert_eq!(
        held_by(&mut db, failing).await,
        0,
        "its hold was rolled back"
    );
    let transfers: i64 =
        sqlx::query_scalar("SELECT count(*) FROM inventory.transfers WHERE transfer_id = $1")
            .bind(failing)
            .fetch_one(&mut *db)
            .await?;
    assert_eq!(transfers, 0);
    assert_eq!(held_by(&mut db, before).await, 1);
    assert_eq!(held_by(&mut db, after).await, 1);
    assert_eq!(
        inbox_outcome(&mut db, &failing_message).await,
        None,
        "its claim is gone, so its retry is handled again"
    );
    Ok(())
}

#[tokio::test]
async fn two_copies_of_one_message_in_a_batch_have_one_effect_and_one_answer() -> anyhow::Result<()>
{
    let mut connection = rules::connect().await?;
    let mut db = connection.begin().await?;
    rules::receive_cards(&mut db, SOURCE, NORMAL, "DU06", 4).await?;
    let transfer_id = Uuid::new_v4();
    let job = BatchJob::fresh(&Uuid::new_v4().to_string(), create(transfer_id, SOURCE, 2));
    let verdicts = TestWorker::new(TransferHandler)
        .run_batch(&mut db, vec![job.clone(), job])
        .await?;
    assert!(matches!(verdicts[0], Verdict::Committed(_)));
    assert!(matches!(verdicts[1], Verdict::Duplicate(_)));
    assert_eq!(first_event(&verdicts[0]), first_event(&verdicts[1]));
    assert_eq!(held_by(&mut db, transfer_id).await, 2);
    Ok(())
}

#[tokio::test]
async fn a_message_handled_before_is_answered_from_the_inbox_unless_its_body_changed()
-> anyhow::Result<()> {
    let mut connection = rules::connect().await?;
    let mut db = connection.begin().await?;
    rules::receive_cards(&mut db, SOURCE, NORMAL, "DU06", 4).await?;
    let worker = TestWorker::new(TransferHandler);
    let transfer_id = Uuid::new_v4();
    let job = BatchJob::fresh(&Uuid::new_v4().to_string(), create(transfer_id, SOURCE, 1));
    let first = worker.run_batch(&mut db, vec![job.clone()]).await?;
    let again = worker.run_batch(&mut db, vec![job.clone()]).await?;
    assert!(matches!(again[0], Verdict::Duplicate(_)));
    assert_eq!(first_event(&first[0]), first_event(&again[0]));
    assert_eq!(held_by(&mut db, transfer_id).await, 1, "not handled twice");

    let mut reused = BatchJob::fresh(&job.context.message_id, create(Uuid::new_v4(), SOURCE, 1));
    reused.body_digest = digest(b"another body");
    let refused = worker.run_batch(&mut db, vec![reused]).await?;
    assert!(matches!(refused[0], Verdict::IdReused(_)), "{refused:?}");
    let (key, body) = first_event(&refused[0]);
    assert_eq!(key, "transfer.rejected");
    assert_eq!(body["reason"]["code"], "MESSAGE_ID_REUSED");
    Ok(())
}

#[tokio::test]
async fn a_batch_of_many_jobs_commits_every_one() -> anyhow::Result<()> {
    let mut connection = rules::connect().await?;
    let mut db = connection.begin().await?;
    rules::receive_cards(&mut db, SOURCE, NORMAL, "DU06", 40).await?;
    let ids: Vec<Uuid> = (0..40).map(|_| Uuid::new_v4()).collect();
    let jobs = fresh_jobs(ids.iter().map(|id| create(*id, SOURCE, 1)));
    let verdicts = TestWorker::new(TransferHandler)
        .run_batch(&mut db, jobs)
        .await?;
    assert!(
        verdicts
            .iter()
            .all(|verdict| matches!(verdict, Verdict::Committed(_)))
    );
    for id in ids {
        assert_eq!(held_by(&mut db, id).await, 1);
    }
    Ok(())
}
