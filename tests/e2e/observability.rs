//! What ops watch, proven on a running pipeline: real Prometheus (Debian's package, with the
//! checked-in `deploy/prometheus` configuration and rules) scrapes every worker, an outlet node,
//! the ops console and RabbitMQ's Prometheus plugin; every alert rule and every Grafana panel
//! query evaluates without error, and every series they read exists.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use simflow_cli::pipeline::{self, WorkerKind};
use simflow_runtime::amqp::JobRoute;
use simflow_runtime::metrics::{Health, Metrics};
use simflow_runtime::shutdown::CancellationToken;
use simflow_schemas::common::CardSelection;
use simflow_tests::TestEnv;
use simflow_tests::prometheus::{PrometheusServer, Targets, metric_names};
use simflow_tests::writing::ScratchDir;
use uuid::Uuid;

use crate::support::{ANSWER, hexi_transfer, receive_hexi_normal};

/// Serves a fresh registry and health state on a free port, as a process does.
async fn served(
    stop: &CancellationToken,
) -> anyhow::Result<(Arc<Metrics>, Health, std::net::SocketAddr)> {
    let metrics = Arc::new(Metrics::new());
    let health = Health::default();
    let (address, _) = simflow_runtime::http::serve(
        "127.0.0.1:0",
        Arc::clone(&metrics),
        health.clone(),
        stop.clone(),
    )
    .await?;
    Ok((metrics, health, address))
}

/// Provisions outlet HX01 and runs its node in this process with its metrics served (no card
/// reader is opened until work comes, so none is needed here).
async fn start_outlet_node(
    env: &TestEnv,
    dir: &ScratchDir,
    stop: &CancellationToken,
) -> anyhow::Result<std::net::SocketAddr> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let keys = simflow_seal::OutletKeyPair::generate();
    let password = {
        let mut connection = env.pool.acquire().await?;
        simflow_cli::world::provision_outlet(
            &mut connection,
            &env.client,
            &env.settings,
            "HX01",
            "ESS0601",
            &keys.public_key(),
        )
        .await?
    };
    let settings = simflow_cli::world::node_settings(
        "HX01",
        "no reader needed",
        &dir.0,
        simflow_cli::world::outlet_uri(&env.settings, "HX01", &password)?,
        5,
    );
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&settings.key_file)?
        .write_all(keys.secret_to_base64().as_bytes())?;
    let (metrics, health, address) = served(stop).await?;
    let stop = stop.clone();
    tokio::spawn(async move { simflow_outlet::run(&settings, metrics, health, false, stop).await });
    Ok(address)
}

fn dashboard_queries() -> anyhow::Result<Vec<(String, String)>> {
    let mut queries = Vec::new();
    let dir = simflow_tests::workspace_root().join("deploy/grafana/dashboards");
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let dashboard: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        for panel in dashboard["panels"].as_array().cloned().unwrap_or_default() {
            for target in panel["targets"].as_array().cloned().unwrap_or_default() {
                queries.push((
                    format!(
                        "{} / {}",
                        dashboard["title"].as_str().unwrap_or_default(),
                        panel["title"].as_str().unwrap_or_default()
                    ),
                    target["expr"].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
    }
    Ok(queries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_finds_every_series_the_alert_rules_and_dashboards_read_on_a_running_pipeline()
-> anyhow::Result<()> {
    let mut env = TestEnv::new().await?;
    simflow_cli::world::generate_kek(&mut env.settings.carddata, "test-kek");
    receive_hexi_normal(&env, 3).await?;
    let stop = CancellationToken::new();

    // Every worker, as `simflow worker all` runs them, with the database watch.
    let (metrics, health, workers_address) = served(&stop).await?;
    let watch =
        simflow_runtime::readiness::watch_database(env.pool.clone(), health.clone(), stop.clone());
    let workers = pipeline::start(
        &env.settings,
        &env.pool,
        &WorkerKind::ALL,
        metrics,
        health,
        stop.clone(),
    )?;
    let dir = ScratchDir::new("observability")?;
    let outlet_address = start_outlet_node(&env, &dir, &stop).await?;
    let (console_address, console_stop) =
        crate::console::start_console(&env.settings, &env.pool, Vec::new()).await?;

    // Some traffic, so the histograms hold data.
    let mut events = env.watch().await?;
    let message_id = Uuid::new_v4().to_string();
    let job = hexi_transfer(Uuid::new_v4(), CardSelection::Quantity { quantity: 1 });
    env.client
        .publish_job(&job, &message_id, JobRoute::Default)
        .await?;
    events.next_for(&message_id, ANSWER).await?;

    let prometheus = PrometheusServer::start(&Targets {
        workers: vec![workers_address],
        outlets: vec![(outlet_address, "HX01".to_owned())],
        console: vec![console_address],
    })
    .await?;
    let all_up =
        simflow_tests::eventually("every target to be up", Duration::from_secs(60), || async {
            let targets = prometheus.targets().await?;
            let jobs: BTreeSet<&str> = targets.iter().map(|(job, _, _)| job.as_str()).collect();
            Ok(jobs.len() == 5 && targets.iter().all(|(_, health, _)| health == "up"))
        })
        .await;
    if let Err(error) = all_up {
        anyhow::bail!("{error}: {:?}", prometheus.targets().await?);
    }
    // The test's own queues, through the plugin's per-queue endpoint.
    let vhost = env.vhost.clone();
    simflow_tests::eventually("the test vhost's queues", Duration::from_secs(30), || async {
            let data = prometheus
                .query(&format!(
                    "rabbitmq_detailed_queue_consumers{{vhost=\"{vhost}\",queue=\"simflow.outlet.HX01\"}} == 1"
                ))
                .await?;
            Ok(!data["result"].as_array().cloned().unwrap_or_default().is_empty())
        })
        .await?;

    // Every rule has been evaluated without error, and every series it reads exists.
    simflow_tests::eventually(
        "every rule to be evaluated",
        Duration::from_secs(30),
        || async {
            let data = prometheus.api("/api/v1/rules", &[]).await?;
            Ok(rules_of(&data).iter().all(|rule| {
                rule["health"] == "ok" && rule["lastEvaluation"] != "0001-01-01T00:00:00Z"
            }))
        },
    )
    .await?;
    let rules = rules_of(&prometheus.api("/api/v1/rules", &[]).await?);
    let recorded: BTreeSet<String> = rules
        .iter()
        .filter(|rule| rule["type"] == "recording")
        .filter_map(|rule| rule["name"].as_str().map(str::to_owned))
        .collect();
    let mut missing = Vec::new();
    let mut checked = BTreeSet::new();
    for rule in &rules {
        let query = rule["query"].as_str().unwrap_or_default();
        prometheus.query(query).await?;
        for name in metric_names(query) {
            if recorded.contains(&name) {
                continue;
            }
            if prometheus.series(&name).await?.is_empty() {
                missing.push(format!("{}: {name}", rule["name"]));
            }
            checked.insert(name);
        }
    }
    assert!(missing.is_empty(), "series no target exports: {missing:?}");
    let alerts = rules
        .iter()
        .filter(|rule| rule["type"] == "alerting")
        .count();
    assert_eq!(alerts, 11, "every alert of the issue is loaded");

    // Every dashboard panel's query evaluates, on series that exist.
    let panels = dashboard_queries()?;
    for (panel, expr) in &panels {
        let data = prometheus
            .query(expr)
            .await
            .map_err(|error| anyhow::anyhow!("{panel}: {error}"))?;
        assert!(
            matches!(
                data["resultType"].as_str(),
                Some("vector" | "scalar" | "matrix")
            ),
            "{panel}: {data}"
        );
        for name in metric_names(expr) {
            if recorded.contains(&name) {
                continue;
            }
            assert!(
                !prometheus.series(&name).await?.is_empty(),
                "{panel}: no series {name}"
            );
            checked.insert(name);
        }
    }
    println!(
        "prometheus: {} rules ({alerts} alerts) and {} dashboard queries evaluate; {} metric names exist: {checked:?}",
        rules.len(),
        panels.len(),
        checked.len()
    );

    console_stop.cancel();
    workers.stop().await?;
    let _ = watch.await;
    drop(prometheus);
    Ok(())
}

fn rules_of(data: &serde_json::Value) -> Vec<serde_json::Value> {
    data["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
        .collect()
}
