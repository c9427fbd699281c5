//! Database failover: a Patroni-managed primary and synchronous standby
//! (`deploy/cluster/postgres.sh`). Workers given both servers keep to the one that takes
//! writes, also after the primary is killed; reads configured for a replica go to it; and the
//! chaos run's load, with the primary SIGKILLed in the middle of it, loses no job and does none
//! twice.
//!
//! The cluster's ports are fixed, so these tests take turns (`simflow_tests::patroni`).

use std::path::Path;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use simflow_cli::pg_cluster::{Failover, PgCluster};
use simflow_runtime::db;
use simflow_runtime::handler::is_transient_db_error;
use simflow_tests::broker::PrivateNode;
use simflow_tests::patroni::PatroniCluster;
use simflow_tests::{test_settings, unique_name, workspace_root};
use sqlx::PgPool;

/// What the server behind a pool says it is: in recovery, and its port.
async fn server_of(pool: &PgPool) -> anyhow::Result<(bool, u16)> {
    let (in_recovery, port): (bool, i32) =
        sqlx::query_as("SELECT pg_is_in_recovery(), inet_server_port()")
            .fetch_one(pool)
            .await?;
    Ok((in_recovery, u16::try_from(port)?))
}

/// The first success of `attempt` within 20 s, or its last error.
async fn until_ok<T, F, Fut>(what: &str, attempt: F) -> anyhow::Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let started = Instant::now();
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if started.elapsed() > Duration::from_secs(20) => {
                return Err(error.context(format!("waiting for {what}")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_set_to_prefer_a_standby_go_to_the_replica_and_everything_else_to_the_primary()
-> anyhow::Result<()> {
    let cluster = PatroniCluster::start().await?;
    let database = unique_name("simflow_reads");
    let mut settings = test_settings("/", &PgCluster::url(&database))?;
    settings.database.read_url = Some(SecretString::from(PgCluster::read_url(&database)));
    settings.validate()?;
    db::ensure_database(&settings.database.url).await?;
    let primary_port = cluster.cluster.primary_port().await?;

    let writes = db::lazy_pool(&settings.database)?;
    let reads = db::read_pool(&settings.database, &writes)?;
    assert_eq!(
        server_of(&writes).await?,
        (false, primary_port),
        "the primary pool reaches the primary"
    );
    // The new database reaches the replica with the WAL it was created in; until then
    // prefer-standby reads from the primary, then moves to the replica: wait for that.
    let (in_recovery, port) = until_ok("reads to move to the replica", || async {
        let (in_recovery, port) = server_of(&reads).await?;
        anyhow::ensure!(in_recovery, "still on the primary");
        Ok((in_recovery, port))
    })
    .await?;
    assert!(
        in_recovery,
        "a read set to prefer a standby runs on the replica"
    );
    assert_ne!(port, primary_port);

    // A row committed on the primary shows on the replica once replayed there.
    sqlx::query("CREATE TABLE seen (id int PRIMARY KEY)")
        .execute(&writes)
        .await?;
    sqlx::query("INSERT INTO seen VALUES (1)")
        .execute(&writes)
        .await?;
    let on_replica: i64 = until_ok("the row to reach the replica", || async {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM seen")
            .fetch_one(&reads)
            .await?;
        anyhow::ensure!(count == 1, "not replayed yet");
        Ok(count)
    })
    .await?;
    assert_eq!(on_replica, 1);
    let refused = sqlx::query("INSERT INTO seen VALUES (2)")
        .execute(&reads)
        .await
        .expect_err("the replica refuses writes");
    assert!(refused.to_string().contains("read-only"), "{refused}");

    // Without a read URL, reads use the primary pool.
    settings.database.read_url = None;
    let same = db::read_pool(&settings.database, &writes)?;
    assert_eq!(server_of(&same).await?, (false, primary_port));

    reads.close().await;
    writes.close().await;
    db::drop_database(&settings.database.url).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_given_both_servers_writes_to_the_new_primary_after_the_old_one_is_killed()
-> anyhow::Result<()> {
    let cluster = PatroniCluster::start().await?;
    let database = unique_name("simflow_follow");
    let settings = test_settings("/", &PgCluster::url(&database))?;
    db::ensure_database(&settings.database.url).await?;
    let pool = db::lazy_pool(&settings.database)?;
    sqlx::query("CREATE TABLE written (id int PRIMARY KEY)")
        .execute(&pool)
        .await?;
    let (_, old_port) = server_of(&pool).await?;

    let killed = Instant::now();
    let promoted = cluster
        .cluster
        .fail_over(Failover::Kill, Duration::from_secs(60))
        .await?;
    // Until the pool has moved, writes fail, and only in ways the runtime retries.
    let mut failures = 0;
    let mut id = 0;
    let written = loop {
        id += 1;
        match sqlx::query("INSERT INTO written VALUES ($1)")
            .bind(id)
            .execute(&pool)
            .await
        {
            Ok(_) => break killed.elapsed(),
            Err(error) => {
                assert!(
                    is_transient_db_error(&error),
                    "a failover error the runtime would not retry: {error}"
                );
                failures += 1;
            }
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "no write succeeded within 60 s of the failover"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (in_recovery, new_port) = server_of(&pool).await?;
    assert!(!in_recovery);
    assert_ne!(new_port, old_port, "the pool moved to the other server");
    assert_eq!(new_port, cluster.cluster.primary_port().await?);
    eprintln!(
        "failover: primary 127.0.0.1:{old_port} SIGKILLed; Patroni promoted 127.0.0.1:{new_port} after {:.1} s; \
         the pool wrote again after {:.1} s ({failures} transient failures meanwhile)",
        promoted.as_secs_f64(),
        written.as_secs_f64()
    );
    pool.close().await;
    db::drop_database(&settings.database.url).await?;
    Ok(())
}

/// Worker processes the chaos run started, should the run itself be killed (their pid files).
struct Workers<'a>(&'a Path);

impl Drop for Workers<'_> {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.0.join("workers")) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|extension| extension == "pid")
                && let Ok(pid) = std::fs::read_to_string(&path)
            {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", pid.trim()])
                    .status();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_mid_load_loses_no_job_doubles_no_effect_and_answers_each_job_once()
-> anyhow::Result<()> {
    let cluster = PatroniCluster::start().await?;
    let node = tokio::task::spawn_blocking(PrivateNode::start).await??;
    let simflow = simflow_tests::process::simflow_binary()?;
    let _workers = Workers(&node.services.dir);
    let run = tokio::process::Command::new(simflow)
        .current_dir(workspace_root())
        .env_remove("SIMFLOW_CONFIG")
        .env("RUST_LOG", "warn")
        .arg("chaos")
        .arg("--services")
        .arg(&node.services.dir)
        .arg("--helper")
        .arg(&node.services.helper)
        .args([
            "--short",
            "--jobs",
            "200",
            "--kills",
            "0",
            "--broker-restarts",
            "0",
        ])
        .args(["--failovers", "1", "--seed", "13"])
        .arg("--database-url")
        .arg(PgCluster::url("simflow_chaos"))
        .arg("--pg-cluster-helper")
        .arg(&cluster.cluster.helper)
        .arg("--pg-cluster-dir")
        .arg(cluster.dir())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(170), run)
        .await
        .map_err(|_| anyhow::anyhow!("the chaos run took more than 170 s"))??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(output.status.success(), "the chaos run failed");
    for check in [
        "| faults: database failovers",
        "| jobs with exactly one outcome",
        "| lost (no outcome)",
        "| doubled (two different outcomes for one job)",
        "| cards whose ledger holds each movement once",
        "| ledger reconciles",
    ] {
        let line = stdout
            .lines()
            .find(|line| line.starts_with(check))
            .unwrap_or_else(|| panic!("the report has no line {check:?}"));
        assert!(line.trim_end().ends_with("| ok     |"), "{line}");
    }
    assert!(stdout.contains("after a database failover: next new outcome"));
    assert!(stdout.contains("chaos: every check passed"));
    Ok(())
}
