//! The 3-node broker cluster (`deploy/cluster/rabbitmq.sh`): worker processes given every
//! node's address keep the pipeline going when the node leading the busiest queue is SIGKILLed
//! in the middle of a load.
//!
//! The load, the fault and the checks are the chaos run's (`simflow chaos --cluster`): chains
//! of jobs with duplicates and malformed messages, then one outcome per job, no effect twice
//! (every card's ledger), a reconciled ledger and exactly the malformed messages dead-lettered.
//! The cluster has fixed ports (5701–5703), so this module holds the one test that starts it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use simflow_tests::{postgres_base, process::simflow_binary, unique_name, workspace_root};

const SCRIPT: &str = "deploy/cluster/rabbitmq.sh";
/// The chaos run's bound; with the cluster's start and stop the test stays near 3 minutes.
const RUN_LIMIT: Duration = Duration::from_secs(150);

/// The cluster, stopped and removed on drop (also when the test fails), and its addresses.
struct Cluster {
    env: Vec<(String, String)>,
}

fn script(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(workspace_root().join(SCRIPT))
        .args(args)
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {SCRIPT}"))?;
    if !output.status.success() {
        bail!(
            "{SCRIPT} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

impl Cluster {
    fn start() -> anyhow::Result<Cluster> {
        // Whatever an earlier, interrupted run left goes first: the test starts from nothing.
        script(&["stop"])?;
        // The guard exists before the start, so a start that fails half-way is stopped too.
        let mut cluster = Cluster { env: Vec::new() };
        script(&["start"])?;
        cluster.env = script(&["env"])?
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
        Ok(cluster)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(error) = script(&["stop"]) {
            eprintln!("could not stop the cluster: {error:#}");
        }
    }
}

/// SIGKILL to every worker the chaos run left (it was itself killed), by their pid files.
fn kill_left_workers(work: &Path) {
    let Ok(entries) = std::fs::read_dir(work.join("workers")) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == "pid")
            && let Ok(pid) = std::fs::read_to_string(&path)
        {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
    }
}

#[test]
fn killing_the_leader_of_the_busiest_queue_mid_load_loses_nothing_and_does_nothing_twice()
-> anyhow::Result<()> {
    let simflow = simflow_binary()?;
    let cluster = Cluster::start()?;
    let work: PathBuf = std::env::temp_dir().join(unique_name("simflow_cluster_chaos"));
    let output = workspace_root().join("target").join(format!(
        "{}.out",
        work.file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("chaos")
    ));
    let stdout = std::fs::File::create(&output)?;
    let mut child = Command::new(&simflow)
        .args(["chaos", "--cluster", "--short", "--jobs", "150"])
        .args(["--leader-kills", "1", "--work-dir"])
        .arg(&work)
        .env_remove("SIMFLOW_CONFIG")
        .envs(cluster.env.iter().cloned())
        .env(
            "SIMFLOW__DATABASE__URL",
            format!("{}/postgres", postgres_base()),
        )
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting simflow chaos --cluster")?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    kill_left_workers(&work);
    let _ = std::fs::remove_dir_all(&work);
    let report = std::fs::read_to_string(&output).unwrap_or_default();
    let _ = std::fs::remove_file(&output);
    println!("{report}");
    drop(cluster);

    let Some(status) = status else {
        bail!("the chaos run did not finish within {RUN_LIMIT:?}");
    };
    assert!(
        status.success(),
        "the chaos run failed ({status}):\n{report}"
    );
    assert!(
        report.contains("chaos: every check passed"),
        "no verdict:\n{report}"
    );
    for check in [
        "jobs with exactly one outcome",
        "lost (no outcome)",
        "doubled (two different outcomes for one job)",
        "cards whose ledger holds each movement once",
        "faults: queue leader SIGKILLs",
        "after a queue leader SIGKILL: next new outcome",
    ] {
        assert!(
            report.contains(check),
            "the report lacks {check:?}:\n{report}"
        );
    }
    assert!(!report.contains("FAIL"), "a check failed:\n{report}");
    Ok(())
}
