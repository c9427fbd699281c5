//! The Patroni pair of `deploy/cluster/postgres.sh` for the failover tests: started with its
//! data in a directory of the test's own, and purged (every process stopped, the directory
//! removed) when the fixture drops, also on panic.
//!
//! The cluster's ports are fixed (etcd 2479/2480, PostgreSQL 5461/5462, Patroni 8061/8062), so
//! one test at a time holds it: the fixture takes a process-wide lock first.

use std::path::PathBuf;
use std::process::Command;

use simflow_cli::pg_cluster::{HELPER, PgCluster};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A running primary and synchronous standby, owned by one test.
#[derive(Debug)]
pub struct PatroniCluster {
    /// The script and the data directory.
    pub cluster: PgCluster,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl PatroniCluster {
    /// Starts etcd and both nodes and waits until one is the primary and the other streams
    /// from it as the synchronous standby (about ten seconds).
    pub async fn start() -> anyhow::Result<PatroniCluster> {
        let turn = ONE_AT_A_TIME.lock().await;
        let dir = std::env::temp_dir().join(crate::unique_name("simflow_patroni"));
        let cluster = PatroniCluster {
            cluster: PgCluster::new(&crate::workspace_root().join(HELPER), &dir),
            _turn: turn,
        };
        cluster.cluster.run("start", &[]).await?;
        Ok(cluster)
    }

    /// The data directory (`PG_CLUSTER_DIR`).
    pub fn dir(&self) -> PathBuf {
        self.cluster.dir.clone()
    }
}

impl Drop for PatroniCluster {
    fn drop(&mut self) {
        let purged = Command::new(&self.cluster.helper)
            .arg("purge")
            .env("PG_CLUSTER_DIR", &self.cluster.dir)
            .output();
        match purged {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "could not purge the Patroni cluster: {}",
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(error) => eprintln!("could not purge the Patroni cluster: {error}"),
        }
    }
}
