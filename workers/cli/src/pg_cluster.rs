//! The Patroni-managed PostgreSQL pair of `deploy/cluster/postgres.sh`, seen from Rust: its
//! URLs, which server is the primary, and its failover commands. The chaos run's failover mode
//! and the failover tests use it; the script owns every process and file of the cluster.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The script, relative to the workspace root.
pub const HELPER: &str = "deploy/cluster/postgres.sh";
/// The PostgreSQL ports of the two nodes (the script's defaults).
pub const PG_PORTS: [u16; 2] = [5461, 5462];

/// How the primary is made to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failover {
    /// SIGKILL to the primary's postmaster: Patroni promotes the synchronous standby.
    Kill,
    /// `patronictl switchover`: the primary steps down cleanly.
    Switchover,
}

impl Failover {
    /// The script's flag.
    pub fn flag(self) -> &'static str {
        match self {
            Failover::Kill => "--kill",
            Failover::Switchover => "--switchover",
        }
    }
}

/// A cluster run by [`HELPER`] with its data in `dir` (`PG_CLUSTER_DIR`).
#[derive(Debug, Clone)]
pub struct PgCluster {
    /// The script.
    pub helper: PathBuf,
    /// Its data directory.
    pub dir: PathBuf,
}

impl PgCluster {
    /// The cluster whose data is in `dir`.
    pub fn new(helper: &Path, dir: &Path) -> PgCluster {
        PgCluster {
            helper: helper.to_owned(),
            dir: dir.to_owned(),
        }
    }

    /// Both servers, for the workers: they keep to the one that takes writes.
    pub fn url(database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{database}?target_session_attrs=read-write",
            PG_PORTS[0], PG_PORTS[1]
        )
    }

    /// Both servers, for reads that may come from the replica.
    pub fn read_url(database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{database}?target_session_attrs=prefer-standby",
            PG_PORTS[0], PG_PORTS[1]
        )
    }

    /// Runs `postgres.sh COMMAND ARGS` and returns its standard output.
    pub async fn run(&self, command: &str, args: &[&str]) -> anyhow::Result<String> {
        let output = tokio::process::Command::new(&self.helper)
            .arg(command)
            .args(args)
            .env("PG_CLUSTER_DIR", &self.dir)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .with_context(|| format!("running {}", self.helper.display()))?;
        if !output.status.success() {
            bail!(
                "{} {command} failed ({}): {}",
                self.helper.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The PostgreSQL port of the node Patroni calls the primary (`GET /primary` = 200).
    pub async fn primary_port(&self) -> anyhow::Result<u16> {
        let port = self.run("primary", &[]).await?;
        port.trim()
            .parse()
            .with_context(|| format!("{HELPER} primary printed {port:?}"))
    }

    /// Fails the primary over and waits until the other node is the primary; how long that
    /// took from the command (Patroni's detection and promotion).
    pub async fn fail_over(&self, how: Failover, patience: Duration) -> anyhow::Result<Duration> {
        let old = self.primary_port().await?;
        let started = Instant::now();
        self.run("failover", &[how.flag()]).await?;
        loop {
            if let Ok(port) = self.primary_port().await
                && port != old
            {
                return Ok(started.elapsed());
            }
            if started.elapsed() > patience {
                bail!("no new primary {patience:?} after the failover of 127.0.0.1:{old}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
