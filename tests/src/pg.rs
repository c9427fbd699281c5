//! A private PostgreSQL server for tests that stop and start the database: the shared server
//! must keep running for every other test, so sabotage happens on a server of the test's own.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

/// A PostgreSQL server owned by one test; stopped and removed on drop.
#[derive(Debug)]
pub struct PrivateServer {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
}

fn postgres_bin() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL server binaries not found under /usr/lib/postgresql")?
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .context("no pg_ctl under /usr/lib/postgresql/*/bin")
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Runs a PostgreSQL tool as the `postgres` user when we are root (initdb refuses root).
fn as_postgres(bin: &std::path::Path, tool: &str, args: &[&str]) -> anyhow::Result<()> {
    let is_root = rustix::process::geteuid().is_root();
    let program = bin.join(tool);
    let output = if is_root {
        Command::new("runuser")
            .arg("-u")
            .arg("postgres")
            .arg("--")
            .arg(&program)
            .args(args)
            .output()?
    } else {
        Command::new(&program).args(args).output()?
    };
    if !output.status.success() {
        bail!(
            "{tool} failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

impl PrivateServer {
    /// Initialises and starts a server on a free port (trust auth, user `postgres`).
    pub fn start() -> anyhow::Result<PrivateServer> {
        let bin = postgres_bin()?;
        let dir = std::env::temp_dir().join(crate::unique_name("simflow_pg"));
        std::fs::create_dir_all(&dir)?;
        if rustix::process::geteuid().is_root() {
            let status = Command::new("chown")
                .arg("postgres:postgres")
                .arg(&dir)
                .status()?;
            anyhow::ensure!(status.success(), "chown of {} failed", dir.display());
        }
        let data = dir.join("data");
        let data_text = data.to_string_lossy().into_owned();
        as_postgres(
            &bin,
            "initdb",
            &[
                "-D",
                &data_text,
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )?;
        let server = PrivateServer {
            dir,
            bin,
            port: free_port()?,
        };
        server.start_again()?;
        Ok(server)
    }

    /// The URL of a database on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts the (stopped) server.
    pub fn start_again(&self) -> anyhow::Result<()> {
        let data = self.dir.join("data").to_string_lossy().into_owned();
        let log = self.dir.join("server.log").to_string_lossy().into_owned();
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.to_string_lossy()
        );
        as_postgres(
            &self.bin,
            "pg_ctl",
            &["-D", &data, "-l", &log, "-o", &options, "-w", "start"],
        )
    }

    /// Stops the server (fast shutdown: open connections are cut).
    pub fn stop(&self) -> anyhow::Result<()> {
        let data = self.dir.join("data").to_string_lossy().into_owned();
        as_postgres(
            &self.bin,
            "pg_ctl",
            &["-D", &data, "-m", "fast", "-w", "stop"],
        )
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
