//! Group commit through the real broker and database: jobs that arrive together share a
//! transaction, a refused job inside a batch is refused alone, and a worker that dies after a
//! batch commits but before it publishes or acks loses nothing and does nothing twice.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use simflow_cli::pipeline::WorkerKind;
use simflow_runtime::amqp::EventWatch;
use simflow_schemas::common::CardSelection;
use simflow_schemas::transfer::TransferCreate;
use simflow_tests::TestEnv;
use simflow_tests::process::SimflowProcess;
use uuid::Uuid;

use crate::support::{cards_on_transfers, count, hexi_transfer, publish_each, receive_hexi_normal};

/// A transfer of one normal card from `source` to Hexi's target warehouse.
fn create(source: &str) -> TransferCreate {
    let mut job = hexi_transfer(Uuid::new_v4(), CardSelection::Quantity { quantity: 1 });
    job.source_warehouse = source.into();
    job
}

/// Reads answers until every id has one, then a little longer; returns every answer's routing
/// key by job id (a second answer to one job would show as two keys).
async fn answers(
    watch: &mut EventWatch,
    ids: &[String],
) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while ids.iter().any(|id| !seen.contains_key(id)) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let event = watch.next(left).await?;
        if let Some(job) = event.correlation_id {
            seen.entry(job).or_default().push(event.routing_key);
        }
    }
    for event in watch.drain(Duration::from_millis(800)).await {
        if let Some(job) = event.correlation_id {
            seen.entry(job).or_default().push(event.routing_key);
        }
    }
    Ok(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_job_inside_a_batch_is_refused_alone_and_every_other_job_commits()
-> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    receive_hexi_normal(&env, 40).await?;
    let mut watch = env.watch().await?;
    let jobs: Vec<TransferCreate> = (0..30)
        .map(|index| create(if index % 3 == 1 { "999999" } else { "130041" }))
        .collect();
    let ids = publish_each(&env, &jobs).await?;
    let workers = env.start_workers(&[WorkerKind::Transfer]);
    let seen = answers(&mut watch, &ids).await?;
    for (index, id) in ids.iter().enumerate() {
        let expected = if index % 3 == 1 {
            "transfer.rejected"
        } else {
            "transfer.created"
        };
        assert_eq!(
            seen[id],
            vec![expected.to_owned()],
            "job {index}: one answer"
        );
    }
    assert_eq!(cards_on_transfers(&env).await, 20);
    let batches = workers.metrics.batch_jobs.with_label_values(&["transfer"]);
    assert_eq!(
        batches.get_sample_sum() as u64,
        30,
        "every job committed once"
    );
    assert!(
        batches.get_sample_count() < 30,
        "jobs that waited together shared transactions ({} transactions)",
        batches.get_sample_count()
    );
    workers.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_dies_between_commit_and_ack_loses_nothing_and_does_nothing_twice()
-> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    receive_hexi_normal(&env, 50).await?;
    let mut watch = env.watch().await?;
    let jobs: Vec<TransferCreate> = (0..40).map(|_| create("130041")).collect();
    let ids = publish_each(&env, &jobs).await?;

    let fault = [("SIMFLOW_FAULT".to_owned(), "abort-after-commit".to_owned())];
    let mut dying = SimflowProcess::start_with(&env.settings, &["worker", "transfer"], &fault)?;
    let status = tokio::time::timeout(Duration::from_secs(60), dying.wait()).await??;
    assert_eq!(status.signal(), Some(6), "it aborted ({status})");
    let committed = count(&env, "SELECT count(*) FROM inventory.transfers").await;
    assert!(committed > 0, "a batch committed before the abort");
    assert!(
        watch.drain(Duration::from_millis(500)).await.is_empty(),
        "nothing was published before the abort"
    );

    let mut second = SimflowProcess::start(&env.settings, &["worker", "transfer"])?;
    let seen = answers(&mut watch, &ids).await?;
    for id in &ids {
        assert_eq!(
            seen[id],
            vec!["transfer.created".to_owned()],
            "one answer for {id}"
        );
    }
    second.terminate()?;
    assert!(second.wait().await?.success());
    assert_eq!(
        count(&env, "SELECT count(*) FROM inventory.transfers").await,
        40
    );
    assert_eq!(
        cards_on_transfers(&env).await,
        40,
        "the committed batch was not done again"
    );
    Ok(())
}

/// The transfer rules, except that one transfer id breaks the whole transaction (a statement
/// fails and the handler swallows the error): a defect no savepoint contains.
#[derive(Debug, Clone)]
struct BreaksTheTransaction {
    transfer_id: Uuid,
}

impl simflow_runtime::Handler for BreaksTheTransaction {
    type Job = simflow_schemas::registry::TransferJob;
    const QUEUE: simflow_schemas::topology::JobQueue =
        simflow_schemas::topology::JobQueue::Transfer;

    async fn handle(
        &self,
        context: &simflow_runtime::JobContext,
        job: Self::Job,
        db: &mut sqlx::PgConnection,
    ) -> Result<simflow_runtime::Outcome, simflow_runtime::JobError> {
        use simflow_schemas::registry::TransferJob;
        if matches!(&job, TransferJob::Create(create) if create.transfer_id == self.transfer_id) {
            let _ignored = sqlx::query("SELECT 1 / 0").execute(&mut *db).await;
            return Ok(simflow_runtime::Outcome::nothing());
        }
        simflow_inventory::TransferHandler
            .handle(context, job, db)
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_breaks_its_whole_transaction_cannot_keep_its_batch_mates_from_committing()
-> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    receive_hexi_normal(&env, 10).await?;
    let mut watch = env.watch().await?;
    let mut jobs: Vec<TransferCreate> = (0..8).map(|_| create("130041")).collect();
    let breaking = jobs[3].transfer_id;
    jobs[3].cards = CardSelection::Quantity { quantity: 1 };
    let ids = publish_each(&env, &jobs).await?;
    let mut settings = env.settings.clone();
    settings.worker.max_attempts = 1;
    // One batch slot that waits for the jobs already queued: they share a transaction.
    settings.worker.batch_concurrency = 1;
    settings.worker.batch_max_wait_ms = 500;
    let pool = simflow_runtime::db::lazy_pool(&settings.database)?;
    let shutdown = simflow_runtime::shutdown::CancellationToken::new();
    let worker = simflow_runtime::Worker::new(
        BreaksTheTransaction {
            transfer_id: breaking,
        },
        settings,
        pool,
        std::sync::Arc::new(simflow_runtime::metrics::Metrics::new()),
        simflow_runtime::metrics::Health::default(),
    );
    let running = tokio::spawn(worker.run(shutdown.clone()));
    let seen = answers(&mut watch, &ids).await?;
    for (index, id) in ids.iter().enumerate() {
        let expected = if index == 3 {
            "transfer.failed"
        } else {
            "transfer.created"
        };
        assert_eq!(seen[id], vec![expected.to_owned()], "job {index}");
    }
    assert_eq!(cards_on_transfers(&env).await, 7);
    shutdown.cancel();
    running.await??;
    Ok(())
}
