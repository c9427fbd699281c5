//! Trust boundaries and settling, through the real broker as a publisher with the upstream
//! role would meet them: upstream reaches only its own queues and its answers; no header a
//! publisher sets changes what the centre does; an event nobody subscribed to does not stop a
//! job from settling; a poison message is dead-lettered once even when its worker dies before
//! the ack; failure events have ids of their own; outcomes echo the publisher's correlation
//! id; a reused message id with another body is refused; bodies that are not plain JSON of a
//! sensible size are refused with their reason.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use secrecy::SecretString;
use simflow_cli::pipeline::WorkerKind;
use simflow_runtime::amqp::{AnyHeader, AnyMessage, Client, PublishError};
use simflow_runtime::deadletter::{self, Selection};
use simflow_schemas::common::CardSelection;
use simflow_schemas::topology::{
    DEAD_LETTER_EXCHANGE, INTERNAL_EXCHANGE, JOBS_EXCHANGE, JobQueue, OUTLETS_EXCHANGE,
    RESULTS_EXCHANGE, UNROUTED_EVENTS, UPSTREAM_PERMISSIONS, UPSTREAM_USER, retry_name,
};
use simflow_schemas::transfer::TransferCreate;
use simflow_tests::TestEnv;
use simflow_tests::process::SimflowProcess;
use uuid::Uuid;

use crate::support::{ANSWER, count, hexi_transfer, receive_hexi_normal};

fn create_one() -> TransferCreate {
    hexi_transfer(Uuid::new_v4(), CardSelection::Quantity { quantity: 1 })
}

/// A test world with five blank cards in Hexi's secondary warehouse and the transfer worker.
async fn transfer_world() -> anyhow::Result<(TestEnv, simflow_cli::pipeline::RunningWorkers)> {
    let env = TestEnv::new().await?;
    receive_hexi_normal(&env, 5).await?;
    let workers = env.start_workers(&[WorkerKind::Transfer]);
    Ok((env, workers))
}

/// A transfer-create envelope to the jobs exchange, with `message_id`, `headers` and `body`.
fn transfer_message<'a>(
    message_id: Option<&'a str>,
    headers: Vec<(&'a str, AnyHeader)>,
    body: &'a [u8],
) -> AnyMessage<'a> {
    AnyMessage {
        exchange: JOBS_EXCHANGE,
        routing_key: "transfer",
        message_id,
        message_type: Some("transfer.create.v1"),
        headers,
        body,
        ..AnyMessage::default()
    }
}

/// A broker user of this test's vhost with the upstream role's permissions.
struct Upstream {
    user: String,
    uri: SecretString,
}

impl Upstream {
    async fn provision(env: &TestEnv) -> anyhow::Result<Upstream> {
        let user = format!("{UPSTREAM_USER}.{}", env.vhost);
        let password = SecretString::from(Uuid::new_v4().simple().to_string());
        env.management.put_user(&user, &password).await?;
        env.management
            .set_permissions(
                &env.vhost,
                &user,
                UPSTREAM_PERMISSIONS.configure,
                UPSTREAM_PERMISSIONS.write,
                UPSTREAM_PERMISSIONS.read,
            )
            .await?;
        let uri = SecretString::from(format!(
            "amqp://{}:{}@127.0.0.1:5672/{}",
            simflow_runtime::uri::encode_segment(&user),
            secrecy::ExposeSecret::expose_secret(&password),
            simflow_runtime::uri::encode_segment(&env.vhost)
        ));
        Ok(Upstream { user, uri })
    }

    async fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::connect(&self.uri, "upstream-under-test").await?)
    }

    async fn remove(self, env: &TestEnv) {
        let _ = env.management.delete_user(&self.user).await;
    }
}

fn job_body() -> Vec<u8> {
    serde_json::to_vec(&create_one()).expect("serialises")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_role_publishes_jobs_and_reads_answers_but_reaches_nothing_internal()
-> anyhow::Result<()> {
    let (env, workers) = transfer_world().await?;
    let upstream = Upstream::provision(&env).await?;

    // Its own answers queue on the events exchange, and a job on the jobs exchange.
    let client = upstream.client().await?;
    let mut answers = client.watch_events(&["transfer.*"]).await?;
    let id = Uuid::new_v4().to_string();
    let body = job_body();
    client
        .publish_any(&transfer_message(Some(&id), Vec::new(), &body))
        .await?;
    assert_eq!(
        answers.next_for(&id, ANSWER).await?.routing_key,
        "transfer.created"
    );

    // Internal routing keys on the jobs exchange go nowhere.
    for internal_key in ["outlet-expired", "outlet-results", "dead.transfer"] {
        let refused = client
            .publish_any(&AnyMessage {
                exchange: JOBS_EXCHANGE,
                routing_key: internal_key,
                message_id: Some(&Uuid::new_v4().to_string()),
                message_type: Some("card.read_request.v1"),
                headers: vec![("x-death", AnyHeader::Text("forged".into()))],
                body: br#"{"request_id":"6f1c1f0e-6d4e-4c55-9f57-0d6f4a0c2b10","outlet_code":"NOWHERE","staff_id":"C0601"}"#,
                ..AnyMessage::default()
            })
            .await;
        assert!(
            matches!(refused, Err(PublishError::Unroutable { .. })),
            "{internal_key}: {refused:?}"
        );
    }
    client.close().await;

    // Every other exchange refuses the upstream user (each refusal closes its channel).
    let retry = retry_name(env.settings.topology_params().retry_delays[0]);
    for exchange in [
        INTERNAL_EXCHANGE,
        OUTLETS_EXCHANGE,
        RESULTS_EXCHANGE,
        DEAD_LETTER_EXCHANGE,
        retry.as_str(),
    ] {
        let client = upstream.client().await?;
        let refused = client
            .publish_any(&AnyMessage {
                exchange,
                routing_key: "transfer",
                message_id: Some("forged"),
                message_type: Some("transfer.create.v1"),
                body: &body,
                ..AnyMessage::default()
            })
            .await;
        let text = format!("{refused:?}");
        assert!(
            refused.is_err() && text.contains("ACCESS_REFUSED"),
            "{exchange}: {text}"
        );
        client.close().await;
    }
    // Nor may it read simflow's queues.
    let client = upstream.client().await?;
    let peek = deadletter::list(client.connection(), "simflow.transfer.dlq", 1).await;
    assert!(format!("{peek:?}").contains("ACCESS_REFUSED"), "{peek:?}");
    client.close().await;

    // The forged read request reached no worker: nothing was answered for it.
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM runtime.inbox WHERE consumer <> 'transfer'"
        )
        .await,
        0
    );
    upstream.remove(&env).await;
    workers.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_a_publisher_sets_change_nothing_the_centre_does() -> anyhow::Result<()> {
    let (env, workers) = transfer_world().await?;
    let mut watch = env.watch().await?;
    let forged = || {
        vec![
            ("x-simflow-attempt", AnyHeader::Int(99)),
            (
                "x-simflow-original-user-id",
                AnyHeader::Text("simflow-outlet-HX01".into()),
            ),
            ("x-death", AnyHeader::Text("expired".into())),
            ("x-simflow-reason-code", AnyHeader::Text("FORGED".into())),
        ]
    };
    // A good job claiming to be its 99th try is handled as a first try.
    let good = Uuid::new_v4().to_string();
    let body = job_body();
    env.client
        .publish_any(&transfer_message(Some(&good), forged(), &body))
        .await?;
    assert_eq!(
        watch.next_for(&good, ANSWER).await?.routing_key,
        "transfer.created"
    );
    // A poison one is dead-lettered as tried once, with simflow's own reason.
    let poison = Uuid::new_v4().to_string();
    env.client
        .publish_any(&transfer_message(Some(&poison), forged(), b"{not json"))
        .await?;
    let failed = watch.next_for(&poison, ANSWER).await?;
    assert_eq!(failed.body["attempts"], 1);
    let letters = deadletter::list(env.client.connection(), "simflow.transfer.dlq", 10).await?;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].attempts, Some(1));
    assert_eq!(letters[0].reason_code, "MALFORMED_MESSAGE");
    workers.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_nobody_subscribed_to_is_kept_and_its_job_settles() -> anyhow::Result<()> {
    let (env, workers) = transfer_world().await?;
    // No queue is bound to the events exchange in this vhost.
    let id = Uuid::new_v4().to_string();
    env.client
        .publish_job(&create_one(), &id, simflow_runtime::amqp::JobRoute::Default)
        .await?;
    env.eventually("the job to settle", Duration::from_secs(30), || async {
        let kept = deadletter::list(env.client.connection(), UNROUTED_EVENTS, 10).await?;
        Ok(kept.len() == 1)
    })
    .await?;
    let kept = deadletter::list(env.client.connection(), UNROUTED_EVENTS, 10).await?;
    assert_eq!(kept[0].message_type.as_deref(), Some("transfer.created.v1"));
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM runtime.inbox WHERE outcome IS NOT NULL"
        )
        .await,
        1
    );
    assert!(
        deadletter::list(env.client.connection(), "simflow.transfer.dlq", 10)
            .await?
            .is_empty(),
        "not dead-lettered"
    );
    workers.stop().await?;
    // Settled: nothing is left unacknowledged for a redelivery.
    env.eventually(
        "the work queue to be empty",
        Duration::from_secs(30),
        || async { Ok(env.queue_depth("simflow.transfer").await? == 0) },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_once_even_when_its_worker_dies_before_the_ack()
-> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let poison = Uuid::new_v4().to_string();
    env.client
        .publish_raw(
            JOBS_EXCHANGE,
            "transfer",
            Some("transfer.create.v1"),
            &poison,
            b"{not json",
        )
        .await?;
    let fault = [(
        "SIMFLOW_FAULT".to_owned(),
        "abort-after-dead-letter".to_owned(),
    )];
    let mut dying = SimflowProcess::start_with(&env.settings, &["worker", "transfer"], &fault)?;
    let status = tokio::time::timeout(Duration::from_secs(60), dying.wait()).await??;
    assert_eq!(status.signal(), Some(6), "it aborted ({status})");

    let mut settings = env.settings.clone();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    settings.http.listen = format!("127.0.0.1:{port}");
    let mut second = SimflowProcess::start(&settings, &["worker", "transfer"])?;
    // The second worker settles the redelivery: it counts it as dead-lettered (acknowledged
    // because its copy is already in the dead-letter queue).
    env.eventually(
        "the redelivery to be settled",
        Duration::from_secs(60),
        || async {
            let metrics = match reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
                Ok(response) => response.text().await.unwrap_or_default(),
                Err(_) => return Ok(false),
            };
            Ok(metrics.lines().any(|line| {
                line.starts_with("simflow_jobs_total{")
                    && line.contains("outcome=\"dead_lettered\"")
                    && line.ends_with(" 1")
            }))
        },
    )
    .await?;
    second.terminate()?;
    let status = second.wait().await?;
    assert!(status.success(), "the second worker exited with {status}");
    let letters = deadletter::list(env.client.connection(), "simflow.transfer.dlq", 10).await?;
    assert_eq!(letters.len(), 1, "one copy in the dead-letter queue");

    let report = deadletter::replay(
        env.client.connection(),
        &env.pool,
        JobQueue::Transfer,
        &Selection::All,
    )
    .await?;
    assert_eq!(report.replayed, vec![poison]);
    assert_eq!(report.duplicates_dropped, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_events_have_ids_of_their_own_and_outcomes_echo_the_correlation_id()
-> anyhow::Result<()> {
    let (env, workers) = transfer_world().await?;
    let mut watch = env.watch().await?;
    // Three different messages without a message id.
    for body in [&b"{}"[..], b"[]", b"{\"x\":1}"] {
        env.client
            .publish_any(&transfer_message(None, Vec::new(), body))
            .await?;
    }
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..3 {
        let failed = watch.next(ANSWER).await?;
        assert_eq!(failed.body["reason"]["code"], "MISSING_MESSAGE_ID");
        ids.insert(failed.message_id);
    }
    assert_eq!(ids.len(), 3, "three failure events, three ids: {ids:?}");

    let job = Uuid::new_v4().to_string();
    let body = job_body();
    env.client
        .publish_any(&AnyMessage {
            correlation_id: Some("crm-request-42"),
            ..transfer_message(Some(&job), Vec::new(), &body)
        })
        .await?;
    let answer = watch.next_for("crm-request-42", ANSWER).await?;
    assert_eq!(answer.routing_key, "transfer.created");
    assert_eq!(answer.job_message_id.as_deref(), Some(job.as_str()));
    workers.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_message_id_with_another_body_is_refused_with_its_own_code() -> anyhow::Result<()>
{
    let (env, workers) = transfer_world().await?;
    let mut watch = env.watch().await?;
    let id = Uuid::new_v4().to_string();
    let route = simflow_runtime::amqp::JobRoute::Default;
    env.client.publish_job(&create_one(), &id, route).await?;
    let first = watch.next_for(&id, ANSWER).await?;
    assert_eq!(first.routing_key, "transfer.created");
    env.client.publish_job(&create_one(), &id, route).await?;
    let second = watch.next_for(&id, ANSWER).await?;
    assert_eq!(second.routing_key, "transfer.rejected");
    assert_eq!(second.body["reason"]["code"], "MESSAGE_ID_REUSED");
    assert_ne!(
        second.message_id, first.message_id,
        "an answer id of its own"
    );
    assert_eq!(
        count(&env, "SELECT count(*) FROM inventory.transfers").await,
        1,
        "the second body did nothing"
    );
    workers.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_are_not_plain_json_of_a_sensible_size_are_refused_with_their_reason()
-> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let workers = env.start_workers(&[WorkerKind::Transfer]);
    let mut watch = env.watch().await?;
    let body = job_body();
    let large = vec![b' '; env.settings.amqp.max_message_bytes + 1];
    // (reason code, content_type, content_encoding, body)
    type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a [u8]);
    let cases: [Case; 3] = [
        (
            "CONTENT_TYPE_UNSUPPORTED",
            Some("application/xml"),
            None,
            &body,
        ),
        (
            "CONTENT_ENCODING_UNSUPPORTED",
            Some("application/json"),
            Some("gzip"),
            &body,
        ),
        ("MESSAGE_TOO_LARGE", Some("application/json"), None, &large),
    ];
    for (code, content_type, content_encoding, body) in cases {
        let id = Uuid::new_v4().to_string();
        env.client
            .publish_any(&AnyMessage {
                content_type,
                content_encoding,
                ..transfer_message(Some(&id), Vec::new(), body)
            })
            .await?;
        let failed = watch.next_for(&id, ANSWER).await?;
        assert_eq!(failed.routing_key, "transfer.failed");
        assert_eq!(failed.body["reason"]["code"], code);
    }
    workers.stop().await
}
