//! Honest health: a worker started while its database is down stays up, says it is not ready
//! and why, and starts working once the database comes (migrating it first); a broker memory
//! alarm makes it not ready, naming the blocked broker, and a publish fail within its bound,
//! saying so.

use std::time::Duration;

use simflow_runtime::amqp::JobRoute;
use simflow_schemas::common::CardSelection;
use simflow_tests::broker::PrivateNode;
use simflow_tests::pg::PrivateServer;
use simflow_tests::process::SimflowProcess;
use simflow_tests::{TestEnv, eventually};
use uuid::Uuid;

use crate::support::{ANSWER, hexi_transfer};

async fn probe(address: &str, path: &str) -> anyhow::Result<(u16, serde_json::Value)> {
    let response = reqwest::get(format!("http://{address}{path}")).await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or_default()))
}

/// A `simflow worker <which>` process whose database (a private server) is stopped, once it
/// serves `/livez`.
struct WorkerWithoutDatabase {
    env: TestEnv,
    server: PrivateServer,
    settings: simflow_runtime::Settings,
    address: String,
    worker: SimflowProcess,
}

impl WorkerWithoutDatabase {
    async fn start(which: &str) -> anyhow::Result<WorkerWithoutDatabase> {
        let env = TestEnv::new().await?;
        let server = tokio::task::spawn_blocking(PrivateServer::start).await??;
        server.stop()?;
        let mut settings = env.settings.clone();
        settings.database.url = server.url("simflow").into();
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        settings.http.listen = format!("127.0.0.1:{port}");
        let address = settings.http.listen.clone();
        let worker = SimflowProcess::start(&settings, &["worker", which])?;
        env.eventually(
            "the worker to serve health",
            Duration::from_secs(60),
            || async {
                Ok(probe(&address, "/livez")
                    .await
                    .is_ok_and(|(status, _)| status == 200))
            },
        )
        .await?;
        Ok(WorkerWithoutDatabase {
            env,
            server,
            settings,
            address,
            worker,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_its_database_stays_up_says_why_and_works_once_it_comes()
-> anyhow::Result<()> {
    let WorkerWithoutDatabase {
        env,
        server,
        settings,
        address,
        mut worker,
    } = WorkerWithoutDatabase::start("transfer").await?;
    // A few seconds of outage: it stays up and not ready, with the reason.
    for _ in 0..3 {
        let (status, body) = probe(&address, "/readyz").await?;
        assert_eq!(status, 503, "{body}");
        let why = body["components"]["database"]["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            why.starts_with("not ready") || why.starts_with("connecting"),
            "{why}"
        );
        assert_eq!(probe(&address, "/livez").await?.0, 200);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    server.start_again()?;
    env.eventually(
        "the worker to be ready",
        Duration::from_secs(60),
        || async { Ok(probe(&address, "/readyz").await?.0 == 200) },
    )
    .await?;
    // It migrated the new database itself; give it cards and a job.
    let pool = simflow_runtime::db::lazy_pool(&settings.database)?;
    {
        let mut connection = pool.acquire().await?;
        simflow_cli::commands::seed::load_org(
            &mut connection,
            &simflow_tests::workspace_root().join("config/org"),
        )
        .await?;
        let receipt = simflow_inventory::org::Receipt {
            warehouse: "130041".into(),
            card_type: "USIM128K_NORMAL".into(),
            department_id: "DU06".into(),
            first_body: 898_601_100_000_000_000,
            count: 1,
        };
        simflow_inventory::org::receive_blank_cards(&mut connection, &receipt, "test").await?;
    }
    pool.close().await;
    let mut watch = env.watch().await?;
    let id = Uuid::new_v4().to_string();
    let job = hexi_transfer(Uuid::new_v4(), CardSelection::Quantity { quantity: 1 });
    env.client.publish_job(&job, &id, JobRoute::Default).await?;
    assert_eq!(
        watch.next_for(&id, ANSWER).await?.routing_key,
        "transfer.created"
    );
    worker.terminate()?;
    assert!(worker.wait().await?.success());
    Ok(())
}

/// Bug found by the chaos run: a worker process restarted after a SIGKILL answered `/readyz`
/// with 200 as soon as its database answered, before any of its consumers had registered
/// (readiness judges only the components it knows), so it said ready before it consumed.
/// Every consumer is now listed, not ready, from the process's start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_lists_every_consumer_as_not_ready_before_it_consumes()
-> anyhow::Result<()> {
    let WorkerWithoutDatabase {
        env: _env,
        server: _server,
        settings: _,
        address,
        mut worker,
    } = WorkerWithoutDatabase::start("all").await?;
    let (status, body) = probe(&address, "/readyz").await?;
    assert_eq!(status, 503, "{body}");
    for consumer in [
        "transfer",
        "issue",
        "return",
        "cardfile",
        "writecard",
        "outlet-results",
        "outlet-expired",
    ] {
        let component = &body["components"][consumer];
        assert_eq!(component["healthy"], false, "{consumer}: {body}");
        assert_eq!(
            component["state"], "not ready: waiting for the database",
            "{consumer}: {body}"
        );
    }
    worker.terminate()?;
    assert!(worker.wait().await?.success());
    Ok(())
}

/// `simflow publish` of the example transfer, waiting `wait` seconds; (success, stdout,
/// stderr, how long it took).
async fn publish_example(
    settings: &simflow_runtime::Settings,
    wait: u64,
) -> anyhow::Result<(bool, String, String, Duration)> {
    let started = std::time::Instant::now();
    let output = tokio::process::Command::new(simflow_tests::process::simflow_binary()?)
        .args([
            "publish",
            "transfer.create.v1",
            "schemas/examples/transfer.create.v1.json",
            "--wait",
            &wait.to_string(),
        ])
        .envs(simflow_tests::process::settings_env(settings))
        .current_dir(simflow_tests::workspace_root())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        started.elapsed(),
    ))
}

/// A real memory alarm on a node of the test's own. Bug found here: RabbitMQ tells a connection
/// of an alarm only once it has published, so an idle worker stayed ready through the alarm
/// (its readiness waited for a `connection.blocked` that never came); workers now publish a
/// small probe nobody receives every few seconds while not blocked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_memory_alarm_makes_the_worker_not_ready_and_a_publish_fail_in_its_bound_saying_why()
-> anyhow::Result<()> {
    let node = tokio::task::spawn_blocking(PrivateNode::start).await??;
    let mut settings = node.settings("simflow")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    settings.http.listen = format!("127.0.0.1:{port}");
    let address = settings.http.listen.clone();
    let mut worker = SimflowProcess::start(&settings, &["worker", "transfer"])?;
    eventually(
        "the worker to be ready",
        Duration::from_secs(90),
        || async {
            Ok(probe(&address, "/readyz")
                .await
                .is_ok_and(|(status, _)| status == 200))
        },
    )
    .await?;

    node.raise_memory_alarm()?;
    eventually(
        "the worker to say the broker blocks publishers",
        Duration::from_secs(30),
        || async {
            let (status, body) = probe(&address, "/readyz").await?;
            Ok(status == 503
                && body["components"]
                    .to_string()
                    .contains("the broker is blocking publishers"))
        },
    )
    .await?;
    let (status, body) = probe(&address, "/readyz").await?;
    assert_eq!(status, 503, "{body}");
    let reason = body["components"]["transfer"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        reason.starts_with("not ready: the broker is blocking publishers"),
        "{body}"
    );
    assert!(reason.contains("memory"), "{reason}");
    assert_eq!(probe(&address, "/livez").await?.0, 200);

    // A publish during the alarm ends within its bound and says what it waited for.
    let (published, _, stderr, took) = publish_example(&settings, 3).await?;
    assert!(
        !published,
        "a publish went through a memory alarm: {stderr}"
    );
    assert!(
        stderr.contains("the broker is blocking publishers"),
        "the publish did not say why it failed: {stderr}"
    );
    assert!(
        took < Duration::from_secs(20),
        "a 3 s publish bound took {took:?}"
    );

    node.clear_memory_alarm()?;
    eventually(
        "the worker to be ready again",
        Duration::from_secs(30),
        || async { Ok(probe(&address, "/readyz").await?.0 == 200) },
    )
    .await?;
    let (published, stdout, stderr, _) = publish_example(&settings, 30).await?;
    assert!(published, "the publish after the alarm failed: {stderr}");
    // Answered: the worker handled it (the empty database knows no such staff: a rejection).
    assert!(stdout.contains("transfer."), "{stdout}");
    worker.terminate()?;
    assert!(worker.wait().await?.success());
    Ok(())
}
