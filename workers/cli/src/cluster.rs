//! The 3-node broker cluster of `deploy/cluster/rabbitmq.sh`, seen from Rust: its script's
//! commands (kill a node, start what is not running) and which node leads the busiest queue.
//! The chaos run's cluster mode and the cluster test use it; it starts no node itself.

use std::path::PathBuf;

use anyhow::{Context, bail};
use simflow_runtime::management::Management;

/// The cluster script, relative to the workspace root.
pub const CLUSTER_HELPER: &str = "deploy/cluster/rabbitmq.sh";

/// A cluster run by [`CLUSTER_HELPER`].
#[derive(Debug, Clone)]
pub struct BrokerCluster {
    /// The script.
    pub helper: PathBuf,
}

impl BrokerCluster {
    /// Runs `rabbitmq.sh <args>` and waits for it (bounded by the script).
    pub async fn run(&self, args: &[&str]) -> anyhow::Result<()> {
        let output = tokio::process::Command::new(&self.helper)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .with_context(|| format!("running {}", self.helper.display()))?;
        if !output.status.success() {
            bail!(
                "{} {} failed ({}): {}",
                self.helper.display(),
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// SIGKILL to the node named `node` (`simflow-c2@localhost`).
    pub async fn kill(&self, node: &str) -> anyhow::Result<()> {
        let short = short_name(node)?;
        self.run(&["kill", short]).await
    }

    /// Starts every node that is not running (a killed node rejoins).
    pub async fn start(&self) -> anyhow::Result<()> {
        self.run(&["start"]).await
    }
}

/// `c2` from `simflow-c2@localhost`; other names are not the script's.
pub fn short_name(node: &str) -> anyhow::Result<&str> {
    node.strip_prefix("simflow-")
        .and_then(|rest| rest.split_once('@'))
        .map(|(short, _)| short)
        .filter(|short| ["c1", "c2", "c3"].contains(short))
        .with_context(|| format!("{node} is not a node of {CLUSTER_HELPER}"))
}

/// The busiest simflow queue of `vhost` (most messages ready or unacknowledged; by name when
/// every queue is empty, the transfer queue first) and the node leading it.
pub async fn leader_of_busiest_queue(
    management: &Management,
    vhost: &str,
) -> anyhow::Result<(String, String)> {
    let queues = management.queues(vhost).await?;
    let busiest = queues
        .iter()
        .map(|queue| &queue.counters)
        .filter(|queue| queue.name.starts_with("simflow.") && queue.queue_type == "quorum")
        .filter(|queue| queue.leader.is_some())
        .max_by_key(|queue| (queue.messages, queue.name == "simflow.transfer"))
        .context("no quorum queue with a leader")?;
    Ok((
        busiest.name.clone(),
        busiest.leader.clone().unwrap_or_default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::short_name;

    #[test]
    fn a_cluster_node_name_gives_the_scripts_short_name() {
        assert_eq!(short_name("simflow-c2@localhost").ok(), Some("c2"));
        assert!(short_name("rabbit@localhost").is_err());
        assert!(short_name("simflow-c4@localhost").is_err());
    }
}
