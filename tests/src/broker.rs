//! A private RabbitMQ node and PostgreSQL cluster for tests that sabotage the broker (alarms,
//! restarts): the shared broker must stay healthy for every other test, so the sabotage happens
//! on a node of the test's own, started by the same `deploy/chaos/services.sh` as the chaos run,
//! on free loopback ports (so it can run beside the chaos run), and stopped and removed on drop.

use std::process::Command;

use anyhow::{Context, bail};
use simflow_cli::services::{HELPER, PrivateServices};
use simflow_runtime::Settings;

/// A broker node and a database cluster owned by one test.
#[derive(Debug)]
pub struct PrivateNode {
    /// Their ports and the helper that runs them.
    pub services: PrivateServices,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn helper(
    command: &str,
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, String)],
) -> anyhow::Result<String> {
    let output = Command::new(crate::workspace_root().join(HELPER))
        .arg(command)
        .arg(dir)
        .args(args)
        .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
        .current_dir(crate::workspace_root())
        .output()
        .with_context(|| format!("running {HELPER}"))?;
    if !output.status.success() {
        bail!(
            "{HELPER} {command} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

impl PrivateNode {
    /// Starts a node (named after the test run) and a cluster on free ports; blocks until both
    /// answer (run it on a blocking thread). The ports are free when chosen but may be taken
    /// by a test running beside this one before the node binds them (a node that loses its
    /// port stops during boot: `rabbit_is_not_running`), so a failed start is tried again, at
    /// most three times, each on new ports.
    pub fn start() -> anyhow::Result<PrivateNode> {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Self::start_once() {
                Ok(node) => return Ok(node),
                Err(error) => failures.push(format!("{error:#}")),
            }
        }
        bail!(
            "the private node did not start: {}",
            failures.join(" | then: ")
        )
    }

    fn start_once() -> anyhow::Result<PrivateNode> {
        let dir = std::env::temp_dir().join(crate::unique_name("simflow_node"));
        let env = [
            ("CHAOS_AMQP_PORT", free_port()?.to_string()),
            ("CHAOS_MANAGEMENT_PORT", free_port()?.to_string()),
            ("CHAOS_DIST_PORT", free_port()?.to_string()),
            ("CHAOS_PG_PORT", free_port()?.to_string()),
            ("CHAOS_NODE", crate::unique_name("simflow-test")),
        ];
        if let Err(error) = helper("start", &dir, &[], &env) {
            let _ = helper("stop", &dir, &[], &[]);
            return Err(error);
        }
        let services = PrivateServices::open(&dir, &crate::workspace_root().join(HELPER))?;
        Ok(PrivateNode { services })
    }

    /// Test settings pointed at this node's default vhost and at `database` on this cluster.
    pub fn settings(&self, database: &str) -> anyhow::Result<Settings> {
        let base = crate::test_settings("/", "postgres://unused")?;
        Ok(self.services.settings(&base, database))
    }

    /// `rabbitmqctl ARGS` against this node; its output.
    pub fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        helper("ctl", &self.services.dir, args, &[])
    }

    /// Raises the memory alarm (a 1-byte high watermark): the node blocks every publisher.
    pub fn raise_memory_alarm(&self) -> anyhow::Result<()> {
        self.ctl(&["set_vm_memory_high_watermark", "absolute", "1"])
            .map(drop)
    }

    /// Puts the high watermark back to the default (40% of memory): the alarm clears.
    pub fn clear_memory_alarm(&self) -> anyhow::Result<()> {
        self.ctl(&["set_vm_memory_high_watermark", "0.4"]).map(drop)
    }
}

impl Drop for PrivateNode {
    fn drop(&mut self) {
        if let Err(error) = helper("stop", &self.services.dir, &[], &[]) {
            eprintln!("could not stop the private node: {error:#}");
        }
    }
}
