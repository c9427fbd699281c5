//! The private RabbitMQ node and PostgreSQL cluster of `deploy/chaos/services.sh`, seen from
//! Rust: their ports (read from the directory the script manages), settings that point at
//! them, and the script's restart commands. The chaos run and the tests that raise broker
//! alarms use them, so faults never reach the machine's own services.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use secrecy::SecretString;
use simflow_runtime::Settings;

/// The helper script, relative to the workspace root.
pub const HELPER: &str = "deploy/chaos/services.sh";

/// A private broker node and database cluster started by [`HELPER`] in `dir`.
#[derive(Debug, Clone)]
pub struct PrivateServices {
    /// The directory the script manages (data, logs, `ports.env`).
    pub dir: PathBuf,
    /// The helper script.
    pub helper: PathBuf,
    /// AMQP port on 127.0.0.1.
    pub amqp_port: u16,
    /// Management API port on 127.0.0.1.
    pub management_port: u16,
    /// PostgreSQL port on 127.0.0.1.
    pub pg_port: u16,
}

impl PrivateServices {
    /// Reads the ports the script chose (`DIR/ports.env`).
    pub fn open(dir: &Path, helper: &Path) -> anyhow::Result<PrivateServices> {
        let text = std::fs::read_to_string(dir.join("ports.env")).with_context(|| {
            format!(
                "{} has no ports.env: start the services with `{HELPER} start DIR` first",
                dir.display()
            )
        })?;
        let port = |name: &str| -> anyhow::Result<u16> {
            let value = text
                .lines()
                .find_map(|line| line.strip_prefix(&format!("{name}=")))
                .with_context(|| format!("ports.env has no {name}"))?;
            Ok(value.trim().parse()?)
        };
        let services = PrivateServices {
            dir: dir.to_owned(),
            helper: helper.to_owned(),
            amqp_port: port("CHAOS_AMQP_PORT")?,
            management_port: port("CHAOS_MANAGEMENT_PORT")?,
            pg_port: port("CHAOS_PG_PORT")?,
        };
        for machine_port in [5672, 15672, 5432] {
            if [
                services.amqp_port,
                services.management_port,
                services.pg_port,
            ]
            .contains(&machine_port)
            {
                bail!("port {machine_port} belongs to the machine's own services");
            }
        }
        Ok(services)
    }

    /// `base` pointed at the private node's default vhost and at `database` on the private
    /// cluster (guest on loopback; trust authentication).
    pub fn settings(&self, base: &Settings, database: &str) -> Settings {
        let mut settings = base.clone();
        // One node: a cluster's address lists from the base settings must not come along.
        settings.amqp.use_single_broker(
            SecretString::from(format!(
                "amqp://guest:guest@127.0.0.1:{}/%2f",
                self.amqp_port
            )),
            format!("http://127.0.0.1:{}", self.management_port),
        );
        settings.amqp.management_user = "guest".into();
        settings.amqp.management_password = SecretString::from("guest".to_owned());
        settings.database.url = SecretString::from(format!(
            "postgres://postgres@127.0.0.1:{}/{database}",
            self.pg_port
        ));
        settings
    }

    /// Runs `services.sh <command> DIR <args>` and waits for it (bounded by the script).
    pub async fn run(&self, command: &str, args: &[&str]) -> anyhow::Result<()> {
        let output = tokio::process::Command::new(&self.helper)
            .arg(command)
            .arg(&self.dir)
            .args(args)
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
        Ok(())
    }
}
