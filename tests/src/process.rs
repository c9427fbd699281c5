//! Running the real `simflow` binary as a child process (for signal and crash tests).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;

use anyhow::{Context, bail};
use secrecy::ExposeSecret;
use simflow_runtime::Settings;

/// Builds `simflow` once per test run and returns its path.
pub fn simflow_binary() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let status = std::process::Command::new(cargo)
                .args(["build", "--quiet", "-p", "simflow-cli", "--bin", "simflow"])
                .current_dir(crate::workspace_root())
                .status()
                .map_err(|error| format!("running cargo build: {error}"))?;
            if !status.success() {
                return Err(format!("cargo build of simflow failed: {status}"));
            }
            // The test binary lives in target/<profile>/deps; simflow in target/<profile>.
            let exe = std::env::current_exe().map_err(|error| error.to_string())?;
            let profile_dir = exe
                .parent()
                .and_then(|deps| deps.parent())
                .ok_or("test binary has no target directory")?;
            Ok(profile_dir.join("simflow"))
        })
        .clone()
        .map_err(|error| anyhow::anyhow!(error))
}

/// The environment that points a `simflow` process at a test's vhost and database.
pub fn settings_env(settings: &Settings) -> Vec<(String, String)> {
    vec![
        (
            "SIMFLOW__AMQP__URI".into(),
            settings.amqp.uri.expose_secret().to_owned(),
        ),
        (
            "SIMFLOW__AMQP__PREFETCH".into(),
            settings.amqp.prefetch.to_string(),
        ),
        (
            "SIMFLOW__DATABASE__URL".into(),
            settings.database.url.expose_secret().to_owned(),
        ),
        ("SIMFLOW__HTTP__LISTEN".into(), settings.http.listen.clone()),
        // An outlet node's counter page on a free port: tests run nodes side by side.
        (
            "SIMFLOW__OUTLET__COUNTER_LISTEN".into(),
            "127.0.0.1:0".into(),
        ),
        (
            "SIMFLOW__TOPOLOGY__RETRY_DELAYS_MS".into(),
            settings
                .topology
                .retry_delays_ms
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ),
        (
            "SIMFLOW__WORKER__SHUTDOWN_GRACE_MS".into(),
            settings.worker.shutdown_grace_ms.to_string(),
        ),
        ("RUST_LOG".into(), "info,sqlx=warn".into()),
    ]
}

/// A `simflow` child process.
#[derive(Debug)]
pub struct SimflowProcess {
    child: tokio::process::Child,
}

impl SimflowProcess {
    /// Starts `simflow <args>` with the test's settings.
    pub fn start(settings: &Settings, args: &[&str]) -> anyhow::Result<SimflowProcess> {
        SimflowProcess::start_with(settings, args, &[])
    }

    /// Starts `simflow <args>` with the test's settings and more environment variables.
    pub fn start_with(
        settings: &Settings,
        args: &[&str],
        extra_env: &[(String, String)],
    ) -> anyhow::Result<SimflowProcess> {
        let child = tokio::process::Command::new(simflow_binary()?)
            .args(args)
            .envs(settings_env(settings))
            .envs(extra_env.iter().cloned())
            .current_dir(crate::workspace_root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting simflow")?;
        Ok(SimflowProcess { child })
    }

    /// The process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) -> anyhow::Result<()> {
        let Some(pid) = self.child.id() else {
            bail!("the process has already exited")
        };
        let pid = rustix::process::Pid::from_raw(i32::try_from(pid)?).context("bad pid")?;
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
        Ok(())
    }

    /// Sends SIGKILL (a crash).
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// Waits for the exit status.
    pub async fn wait(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        Ok(self.child.wait().await?)
    }
}
