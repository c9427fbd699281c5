//! Delivery guarantees through the real broker and database: duplicates have one effect,
//! poison messages are dead-lettered with a reason (never dropped, never looped), a database
//! outage is retried, exhausted jobs are dead-lettered and replay once fixed, SIGTERM and a
//! crash lose nothing, a dropped broker connection is re-established.

use std::time::Duration;

use simflow_cli::pipeline::WorkerKind;
use simflow_runtime::amqp::JobRoute;
use simflow_runtime::deadletter::{self, Selection};
use simflow_schemas::common::CardSelection;
use simflow_schemas::topology::{JOBS_EXCHANGE, JobQueue};
use simflow_schemas::transfer::{TransferApproveOut, TransferCreate, TransferCreated};
use simflow_tests::TestEnv;
use simflow_tests::pg::PrivateServer;
use simflow_tests::process::SimflowProcess;
use uuid::Uuid;

use crate::support::{
    ANSWER, cards_on_transfers, count, hexi_transfer, ledger_entries, publish_each,
    receive_hexi_normal, send, send_with_id,
};

/// A transfer of `quantity` normal cards down to Hexi's target warehouse.
fn create_one(transfer_id: Uuid, quantity: u32) -> TransferCreate {
    hexi_transfer(transfer_id, CardSelection::Quantity { quantity })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_message_delivered_twice_has_one_effect() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    receive_hexi_normal(&env, 30).await?;
    let workers = env.start_workers(&[WorkerKind::Transfer]);
    let mut watch = env.watch().await?;

    // Sequential duplicate: the second copy is answered from the inbox.
    let transfer_id = Uuid::new_v4();
    let message_id = Uuid::new_v4().to_string();
    let first = send_with_id(&env, &mut watch, &create_one(transfer_id, 10), &message_id).await?;
    let second = send_with_id(&env, &mut watch, &create_one(transfer_id, 10), &message_id).await?;
    assert_eq!(
        first.message_id, second.message_id,
        "the republished outcome keeps its message id"
    );
    assert_eq!(first.body, second.body);

    // Concurrent duplicates: both copies in flight at once.
    let approve = TransferApproveOut {
        transfer_id,
        staff_id: "S0602".into(),
    };
    let approve_id = Uuid::new_v4().to_string();
    for _ in 0..3 {
        env.client
            .publish_job(&approve, &approve_id, JobRoute::Default)
            .await?;
    }
    for _ in 0..3 {
        let answer = watch.next_for(&approve_id, ANSWER).await?;
        assert_eq!(answer.routing_key, "transfer.approved_out");
        assert_eq!(
            answer.body["already_approved"], false,
            "every copy carries the one stored outcome"
        );
    }

    assert_eq!(
        count(&env, "SELECT count(*) FROM inventory.transfers").await,
        1
    );
    assert_eq!(cards_on_transfers(&env).await, 10);
    assert_eq!(ledger_entries(&env, "transfer_out").await, 10);
    assert_eq!(
        workers
            .metrics
            .inbox_hits
            .with_label_values(&["transfer"])
            .get(),
        3
    );
    workers.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_go_to_the_dead_letter_queue_with_their_reason() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    receive_hexi_normal(&env, 5).await?;
    let workers = env.start_workers(&[WorkerKind::Transfer]);
    let mut watch = env.watch().await?;
    let transfer_key = JobQueue::Transfer.key();
    let poisons = [
        (
            "MALFORMED_MESSAGE",
            Some("transfer.create.v1"),
            b"{not json".to_vec(),
        ),
        (
            "MALFORMED_MESSAGE",
            Some("transfer.approve_out.v1"),
            br#"{"transfer_id":"x","staff_id":1}"#.to_vec(),
        ),
        (
            "UNKNOWN_MESSAGE_TYPE",
            Some("transfer.create.v9"),
            b"{}".to_vec(),
        ),
        ("MISSING_MESSAGE_TYPE", None, b"{}".to_vec()),
        (
            "UNEXPECTED_MESSAGE_TYPE",
            Some("issue.commit.v1"),
            br#"{"batch_id":"0b6f2a3c-9a51-4d0e-8f0e-3c2d1b0a9f88","staff_id":"T0601"}"#.to_vec(),
        ),
    ];
    let mut expected = Vec::new();
    for (code, message_type, body) in &poisons {
        let message_id = Uuid::new_v4().to_string();
        env.client
            .publish_raw(
                JOBS_EXCHANGE,
                transfer_key,
                *message_type,
                &message_id,
                body,
            )
            .await?;
        let failed = watch.next_for(&message_id, ANSWER).await?;
        assert_eq!(failed.routing_key, "transfer.failed");
        assert_eq!(failed.body["reason"]["code"], *code);
        assert_eq!(failed.body["dead_letter_queue"], "simflow.transfer.dlq");
        expected.push((message_id, *code));
    }
    // No message id at all: dead-lettered too (it could never be handled exactly once).
    env.client
        .publish_raw(
            JOBS_EXCHANGE,
            transfer_key,
            Some("transfer.create.v1"),
            "",
            b"{}",
        )
        .await?;
    let no_id = watch.next(ANSWER).await?;
    assert_eq!(no_id.body["reason"]["code"], "MISSING_MESSAGE_ID");

    let letters = deadletter::list(env.client.connection(), "simflow.transfer.dlq", 100).await?;
    assert_eq!(letters.len(), poisons.len() + 1);
    for (message_id, code) in &expected {
        let letter = letters
            .iter()
            .find(|letter| letter.message_id.as_deref() == Some(message_id))
            .expect("dead letter kept with its message id");
        assert_eq!(letter.reason_code, *code);
        assert_eq!(letter.worker.as_deref(), Some("transfer"));
        assert_eq!(letter.attempts, Some(1), "a poison message is not retried");
        assert!(letter.reason_zh.is_some() && letter.reason_en.is_some());
        assert_eq!(letter.original_routing_key, "transfer");
        assert!(letter.first_failure.is_some());
    }
    // Listing gives the dead letters back.
    assert_eq!(
        deadletter::list(env.client.connection(), "simflow.transfer.dlq", 100)
            .await?
            .len(),
        letters.len()
    );

    // The worker keeps working after poison.
    let fine = send(&env, &mut watch, &create_one(Uuid::new_v4(), 1)).await?;
    assert_eq!(fine.routing_key, "transfer.created");
    assert_eq!(
        env.queue_depth("simflow.transfer").await?,
        0,
        "nothing loops on the work queue"
    );
    workers.stop().await
}

/// Bug found by the chaos run: dead-letter marks were read only on redeliveries, so a poison
/// message the publisher sent twice (the same message id, as an upstream retry does) was
/// dead-lettered twice, and copies handled at the same time by two workers raced past the mark.
/// Now the mark is claimed first for every copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_sent_more_than_once_is_dead_lettered_once() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let mut watch = env.watch().await?;
    let first = env.start_workers(&[WorkerKind::Transfer]);
    let second = env.start_workers(&[WorkerKind::Transfer]);
    let transfer_key = JobQueue::Transfer.key();
    // A second copy after the first's answer, and four copies at once (two workers take
    // them). Only the copy that is dead-lettered is answered (`transfer.failed`).
    let sequential = Uuid::new_v4().to_string();
    let at_once = Uuid::new_v4().to_string();
    for copy in 0..2 {
        env.client
            .publish_raw(
                JOBS_EXCHANGE,
                transfer_key,
                Some("transfer.create.v1"),
                &sequential,
                b"{not json",
            )
            .await?;
        if copy == 0 {
            watch.next_for(&sequential, ANSWER).await?;
        }
    }
    for _ in 0..4 {
        env.client
            .publish_raw(
                JOBS_EXCHANGE,
                transfer_key,
                Some("transfer.create.v1"),
                &at_once,
                b"{not json either",
            )
            .await?;
    }
    watch.next_for(&at_once, ANSWER).await?;
    env.eventually(
        "every copy to be settled",
        Duration::from_secs(30),
        || async { Ok(first.metrics.jobs_settled() + second.metrics.jobs_settled() == 6) },
    )
    .await?;
    let letters = deadletter::list(env.client.connection(), "simflow.transfer.dlq", 100).await?;
    for id in [&sequential, &at_once] {
        let copies = letters
            .iter()
            .filter(|letter| letter.message_id.as_deref() == Some(id.as_str()))
            .count();
        assert_eq!(copies, 1, "{id} is in the dead-letter queue {copies} times");
    }
    assert_eq!(letters.len(), 2);
    first.stop().await?;
    second.stop().await
}

/// A test world whose database lives on a private server the test may stop.
async fn private_world(
    max_attempts: u32,
    retry_delays_ms: Vec<u64>,
) -> anyhow::Result<(TestEnv, PrivateServer, simflow_runtime::Settings)> {
    let env = TestEnv::new().await?;
    let server = tokio::task::spawn_blocking(PrivateServer::start).await??;
    let mut settings = env.settings.clone();
    settings.database.url = server.url("simflow").into();
    settings.worker.max_attempts = max_attempts;
    settings.topology.retry_delays_ms = retry_delays_ms;
    let (pool, _) = simflow_cli::world::migrate_with_org(
        &settings,
        &simflow_tests::workspace_root().join("config/org"),
    )
    .await?;
    let mut connection = pool.acquire().await?;
    let receipt = simflow_cli::world::receipt(
        "130041",
        "USIM128K_NORMAL",
        "DU06",
        898_601_100_000_000_000,
        20,
    );
    simflow_cli::world::receive_cards(&mut connection, &receipt, "test").await?;
    drop(connection);
    pool.close().await;
    // The topology's retry levels changed: declare them for this vhost.
    env.client
        .declare(&simflow_schemas::topology::central_topology(
            &settings.topology_params(),
        ))
        .await?;
    Ok((env, server, settings))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_of_a_few_seconds_is_retried_and_the_jobs_complete() -> anyhow::Result<()>
{
    let (env, server, settings) = private_world(10, vec![300, 1000, 2000]).await?;
    let workers = env.start_workers_with(&settings, &[WorkerKind::Transfer]);
    let mut watch = env.watch().await?;
    let warm_up = send(&env, &mut watch, &create_one(Uuid::new_v4(), 1)).await?;
    assert_eq!(warm_up.routing_key, "transfer.created");

    server.stop()?;
    let jobs: Vec<TransferCreate> = (0..3).map(|_| create_one(Uuid::new_v4(), 2)).collect();
    let ids = publish_each(&env, &jobs).await?;
    // Until every job has used its quick in-process tries and gone to a retry queue.
    env.eventually(
        "every job to reach a retry queue",
        Duration::from_secs(60),
        || async {
            Ok(workers
                .metrics
                .retries
                .with_label_values(&["transfer"])
                .get()
                >= 3)
        },
    )
    .await?;
    server.start_again()?;
    for message_id in &ids {
        let answer = watch.next_for(message_id, Duration::from_secs(30)).await?;
        assert_eq!(
            answer.routing_key, "transfer.created",
            "retried to success: {}",
            answer.body
        );
    }
    assert!(
        workers
            .metrics
            .retries
            .with_label_values(&["transfer"])
            .get()
            >= 1,
        "the outage went through the retry queues"
    );
    assert_eq!(
        workers
            .metrics
            .dead_letters
            .with_label_values(&["transfer", "RETRIES_EXHAUSTED"])
            .get(),
        0
    );
    workers.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_outlives_its_retries_is_dead_lettered_and_replays_once_fixed()
-> anyhow::Result<()> {
    let (env, server, settings) = private_world(2, vec![200]).await?;
    let workers = env.start_workers_with(&settings, &[WorkerKind::Transfer]);
    let mut watch = env.watch().await?;
    server.stop()?;
    let message_id = Uuid::new_v4().to_string();
    let transfer_id = Uuid::new_v4();
    env.client
        .publish_job(&create_one(transfer_id, 3), &message_id, JobRoute::Default)
        .await?;
    let failed = watch.next_for(&message_id, Duration::from_secs(30)).await?;
    assert_eq!(failed.routing_key, "transfer.failed");
    assert_eq!(failed.body["reason"]["code"], "RETRIES_EXHAUSTED");
    assert_eq!(failed.body["attempts"], 2);
    let letters = deadletter::list(env.client.connection(), "simflow.transfer.dlq", 10).await?;
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0]
            .detail
            .as_deref()
            .unwrap_or_default()
            .contains("database"),
        "{:?}",
        letters[0].detail
    );

    server.start_again()?;
    let worker_db = simflow_runtime::db::lazy_pool(&settings.database)?;
    let report = deadletter::replay(
        env.client.connection(),
        &worker_db,
        JobQueue::Transfer,
        &Selection::MessageId(message_id.clone()),
    )
    .await?;
    assert_eq!(report.replayed, vec![message_id.clone()]);
    let done = watch.next_for(&message_id, Duration::from_secs(30)).await?;
    assert_eq!(done.routing_key, "transfer.created", "{}", done.body);
    assert_eq!(done.decode::<TransferCreated>()?.transfer_id, transfer_id);
    assert!(
        deadletter::list(env.client.connection(), "simflow.transfer.dlq", 10)
            .await?
            .is_empty()
    );

    // Replaying a job that is already done answers from the inbox and changes nothing.
    env.client
        .publish_job(&create_one(transfer_id, 3), &message_id, JobRoute::Default)
        .await?;
    let again = watch.next_for(&message_id, Duration::from_secs(30)).await?;
    assert_eq!(again.message_id, done.message_id);
    workers.stop().await
}

/// The transfer answers seen so far, by job message id.
#[derive(Default)]
struct Answers {
    seen: std::collections::BTreeSet<String>,
}

impl Answers {
    /// Reads events until every id in `ids` has been answered (or the timeout); returns how
    /// many of `ids` have been answered.
    async fn wait_for(
        &mut self,
        watch: &mut simflow_runtime::amqp::EventWatch,
        ids: &[String],
        timeout: Duration,
    ) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        let answered = |seen: &std::collections::BTreeSet<String>| {
            ids.iter().filter(|id| seen.contains(*id)).count()
        };
        while answered(&self.seen) < ids.len() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Ok(event) = watch.next(left).await else {
                break;
            };
            assert_eq!(event.routing_key, "transfer.created", "{}", event.body);
            if let Some(id) = event.correlation_id {
                self.seen.insert(id);
            }
        }
        answered(&self.seen)
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_finishes_in_flight_jobs_exits_zero_and_loses_nothing() -> anyhow::Result<()>
{
    let env = TestEnv::new().await?;
    receive_hexi_normal(&env, 400).await?;
    let mut settings = env.settings.clone();
    let port = free_port()?;
    settings.http.listen = format!("127.0.0.1:{port}");
    let mut watch = env.watch().await?;
    let jobs: Vec<TransferCreate> = (0..300).map(|_| create_one(Uuid::new_v4(), 1)).collect();
    let ids = publish_each(&env, &jobs).await?;
    let mut first = SimflowProcess::start(&settings, &["worker", "transfer"])?;
    // Health says ready once consuming.
    let health_url = format!("http://127.0.0.1:{port}/healthz");
    env.eventually(
        "the worker to report healthy",
        Duration::from_secs(30),
        || {
            let url = health_url.clone();
            async move {
                Ok(reqwest::get(&url)
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false))
            }
        },
    )
    .await?;
    let mut answers = Answers::default();
    assert_eq!(
        answers
            .wait_for(&mut watch, &ids[..20], Duration::from_secs(30))
            .await,
        20
    );
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await?
        .text()
        .await?;
    assert!(metrics.contains("simflow_jobs_total{outcome=\"committed\",type=\"transfer.create.v1\",worker=\"transfer\"}"), "{metrics}");
    assert!(metrics.contains("simflow_job_handling_seconds_bucket"));
    first.terminate()?;
    let status = tokio::time::timeout(Duration::from_secs(30), first.wait()).await??;
    assert!(status.success(), "SIGTERM exits 0, got {status}");

    let mut second = SimflowProcess::start(&env.settings, &["worker", "transfer"])?;
    let answered = answers
        .wait_for(&mut watch, &ids, Duration::from_secs(60))
        .await;
    second.terminate()?;
    let status = second.wait().await?;
    assert!(status.success(), "the worker exited with {status}");
    // Every job was answered (some possibly twice, from the inbox) and had exactly one effect.
    assert_eq!(answered, ids.len(), "every job answered");
    assert_eq!(
        count(&env, "SELECT count(*) FROM inventory.transfers").await,
        300
    );
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM runtime.inbox WHERE consumer = 'transfer'"
        )
        .await,
        300
    );
    assert_eq!(cards_on_transfers(&env).await, 300);
    assert!(
        deadletter::list(env.client.connection(), "simflow.transfer.dlq", 10)
            .await?
            .is_empty()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_loses_nothing_and_does_nothing_twice() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    receive_hexi_normal(&env, 300).await?;
    let mut watch = env.watch().await?;
    let jobs: Vec<TransferCreate> = (0..200).map(|_| create_one(Uuid::new_v4(), 1)).collect();
    let ids = publish_each(&env, &jobs).await?;
    let mut first = SimflowProcess::start(&env.settings, &["worker", "transfer"])?;
    let mut answers = Answers::default();
    assert_eq!(
        answers
            .wait_for(&mut watch, &ids[..10], Duration::from_secs(30))
            .await,
        10
    );
    first.kill().await?;
    let mut second = SimflowProcess::start(&env.settings, &["worker", "transfer"])?;
    assert_eq!(
        answers
            .wait_for(&mut watch, &ids, Duration::from_secs(60))
            .await,
        ids.len(),
        "every job answered"
    );
    second.terminate()?;
    let status = second.wait().await?;
    assert!(status.success(), "the worker exited with {status}");
    assert_eq!(
        count(&env, "SELECT count(*) FROM inventory.transfers").await,
        200
    );
    assert_eq!(cards_on_transfers(&env).await, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_broker_connection_is_re_established() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    receive_hexi_normal(&env, 10).await?;
    let workers = env.start_workers(&[WorkerKind::Transfer]);
    let mut watch = env.watch().await?;
    let first = send(&env, &mut watch, &create_one(Uuid::new_v4(), 1)).await?;
    assert_eq!(first.routing_key, "transfer.created");

    // The management API lists connections a few seconds after they open.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut closed = 0;
    while closed == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker's connection never showed in the management API"
        );
        for connection in env.management.connections(&env.vhost).await? {
            let name = connection.client_properties["connection_name"]
                .as_str()
                .unwrap_or_default();
            if name.starts_with("simflow-transfer-") {
                env.management.close_connection(&connection.name).await?;
                closed += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    env.eventually(
        "the worker to reconnect",
        Duration::from_secs(30),
        || async {
            Ok(workers
                .metrics
                .reconnects
                .with_label_values(&["transfer"])
                .get()
                >= 1)
        },
    )
    .await?;
    let after = send(&env, &mut watch, &create_one(Uuid::new_v4(), 1)).await?;
    assert_eq!(after.routing_key, "transfer.created");
    workers.stop().await
}
