//! The virtual readers `deploy/pcsc/setup.sh` gives pcscd (vsmartcard-vpcd), for the demo and
//! the card benchmark: their PC/SC names and the vpcd ports a software SIM connects to.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use simflow_softsim::{InsertedCard, SoftSim};

/// One virtual reader.
#[derive(Debug, Clone)]
pub struct VirtualReader {
    /// The PC/SC reader name.
    pub name: String,
    /// Where a soft SIM connects to sit in it.
    pub vpcd: std::net::SocketAddr,
}

/// The state directory of `deploy/pcsc/setup.sh` (`SIMFLOW_PCSC_DIR`, default
/// `/var/lib/simflow/pcsc`).
fn state_dir() -> PathBuf {
    std::env::var_os("SIMFLOW_PCSC_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/simflow/pcsc"))
}

/// The readers listed in `readers.tsv` in the state directory.
pub fn virtual_readers() -> anyhow::Result<Vec<VirtualReader>> {
    let path = state_dir().join("readers.tsv");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (deploy/setup.sh starts pcscd with the virtual readers)",
            path.display()
        )
    })?;
    text.lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (name, port) = line
                .split_once('\t')
                .context("readers.tsv: name<TAB>port")?;
            Ok(VirtualReader {
                name: name.to_owned(),
                vpcd: std::net::SocketAddr::from(([127, 0, 0, 1], port.parse::<u16>()?)),
            })
        })
        .collect()
}

/// Inserts a soft SIM and waits until pcscd shows it in the reader.
pub async fn insert(sim: &SoftSim, reader: &VirtualReader) -> anyhow::Result<InsertedCard> {
    let mut inserted = sim.insert(reader.vpcd);
    tokio::time::timeout(Duration::from_secs(10), inserted.connected())
        .await
        .context("vpcd did not take the soft SIM")?;
    let name = reader.name.clone();
    tokio::task::spawn_blocking(move || {
        simflow_reader::Reader::open(&name)?.wait_for_card(Duration::from_secs(5))
    })
    .await?
    .map_err(|error| anyhow::anyhow!("pcscd does not show the card: {error}"))?;
    Ok(inserted)
}

/// Waits until pcscd shows the reader empty (the clerk took the card out).
pub async fn wait_empty(reader: &VirtualReader) -> anyhow::Result<()> {
    let name = reader.name.clone();
    let empty = tokio::task::spawn_blocking(move || {
        simflow_reader::Reader::open(&name)
            .map(|reader| reader.wait_for_empty(Duration::from_secs(5)))
    })
    .await??;
    anyhow::ensure!(empty, "reader {} still shows a card", reader.name);
    Ok(())
}

/// Holds `reader` against test processes sharing the machine's pcscd (see [`lock_port`]).
pub fn lock(reader: &VirtualReader) -> anyhow::Result<std::fs::File> {
    lock_port(&state_dir(), reader.vpcd.port())
}

/// The exclusive lock on `lease-<port>.lock` in `state_dir` that every user of the virtual reader
/// with vpcd port `port` takes (test reader leases, the card bench), released when the returned
/// file is dropped. Blocking; waits while another process holds it.
pub fn lock_port(state_dir: &std::path::Path, port: u16) -> anyhow::Result<std::fs::File> {
    let path = state_dir.join(format!("lease-{port}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.lock()
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(file)
}
