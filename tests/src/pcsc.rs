//! Virtual card readers for the end-to-end tests: the real pcscd with vpcd readers, leased to
//! tests one (or a few) at a time.
//!
//! The first lease in a test process makes sure pcscd runs with our virtual readers by running
//! `deploy/pcsc/setup.sh` (which reuses a running one) and remembers whether that started it.
//! pcscd is left running when the process ends, for the next run to reuse;
//! `deploy/pcsc/stop.sh` stops it.
//! Tests in one binary run on parallel threads, so readers come from an in-process pool: a lease
//! waits (it never fails) while all readers are busy, and gives its readers back on drop.
//! Test binaries of other checkouts may share the one pcscd, so a leased reader is also held
//! by an exclusive lock on `STATE_DIR/lease-<port>.lock` (the one `simflow bench card` takes
//! too), released when the lease drops.
//! This module does not insert cards or talk PC/SC beyond checking a leased reader is empty.

use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

/// One virtual reader: the PC/SC name the host uses and the vpcd port the card connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualReader {
    pub name: String,
    pub port: u16,
}

impl VirtualReader {
    /// Where a soft SIM connects to sit in this reader.
    pub fn vpcd_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

/// The running pcscd and its readers.
#[derive(Debug)]
pub struct VirtualReaders {
    pub readers: Vec<VirtualReader>,
    /// True when this process started pcscd (rather than reusing one).
    pub started_by_us: bool,
    pub pid: u32,
    pub state_dir: PathBuf,
}

struct Pool {
    free: Mutex<Vec<VirtualReader>>,
    returned: Condvar,
}

static READERS: OnceLock<Result<VirtualReaders, String>> = OnceLock::new();
static POOL: OnceLock<Pool> = OnceLock::new();

/// The repository's `deploy/pcsc/setup.sh`.
pub fn setup_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/pcsc/setup.sh")
}

fn state_dir() -> PathBuf {
    std::env::var_os("SIMFLOW_PCSC_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/simflow/pcsc"))
}

fn start_readers() -> anyhow::Result<VirtualReaders> {
    let state_dir = state_dir();
    let output = Command::new("bash")
        .arg(setup_script())
        .arg(&state_dir)
        .output()
        .context("running deploy/pcsc/setup.sh")?;
    if !output.status.success() {
        bail!(
            "deploy/pcsc/setup.sh failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let (outcome, pid) = last
        .split_once(' ')
        .context("setup.sh prints `started|reused <pid>` last")?;
    let tsv =
        std::fs::read_to_string(state_dir.join("readers.tsv")).context("reading readers.tsv")?;
    let readers = tsv
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (name, port) = line
                .split_once('\t')
                .context("readers.tsv line has a tab")?;
            Ok(VirtualReader {
                name: name.to_string(),
                port: port.parse().context("vpcd port")?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(VirtualReaders {
        readers,
        started_by_us: outcome == "started",
        pid: pid.parse().context("pcscd pid")?,
        state_dir,
    })
}

/// Make sure pcscd runs with the virtual readers (once per process) and describe them.
pub fn virtual_readers() -> anyhow::Result<&'static VirtualReaders> {
    READERS
        .get_or_init(|| start_readers().map_err(|error| format!("{error:#}")))
        .as_ref()
        .map_err(|error| anyhow::anyhow!("{error}"))
}

fn pool() -> anyhow::Result<&'static Pool> {
    let readers = virtual_readers()?;
    Ok(POOL.get_or_init(|| Pool {
        free: Mutex::new(readers.readers.clone()),
        returned: Condvar::new(),
    }))
}

/// Readers leased to one test; they go back to the pool when this is dropped.
#[derive(Debug)]
pub struct ReaderLease {
    readers: Vec<VirtualReader>,
    /// One locked file per reader: other processes wait on them.
    _locks: Vec<std::fs::File>,
}

impl ReaderLease {
    /// The first (or only) leased reader.
    pub fn reader(&self) -> &VirtualReader {
        &self.readers[0]
    }

    /// All leased readers.
    pub fn readers(&self) -> &[VirtualReader] {
        &self.readers
    }
}

impl Drop for ReaderLease {
    fn drop(&mut self) {
        if let Some(pool) = POOL.get() {
            let mut free = pool
                .free
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            free.append(&mut self.readers);
            pool.returned.notify_all();
        }
    }
}

/// Lease `count` readers at once, waiting while too few are free. Blocking: call it from
/// `spawn_blocking` in async tests. Each reader is checked to be empty first (a card left by the
/// previous test disappears at pcscd's next poll).
pub fn lease_readers(count: usize) -> anyhow::Result<ReaderLease> {
    let pool = pool()?;
    let total = virtual_readers()?.readers.len();
    if count > total {
        bail!("{count} readers wanted but pcscd has only {total}");
    }
    let readers = {
        let mut free = pool
            .free
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while free.len() < count {
            free = pool
                .returned
                .wait(free)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        let at = free.len() - count;
        free.split_off(at)
    };
    // Another process may hold these readers: wait for its lease to end. Readers are taken in
    // port order within one lease and across processes, so two leases never wait on each other.
    let mut by_port = readers.clone();
    by_port.sort_by_key(|reader| reader.port);
    let mut locks = Vec::with_capacity(count);
    for reader in &by_port {
        locks.push(lock_across_processes(reader)?);
    }
    let lease = ReaderLease {
        readers,
        _locks: locks,
    };
    for reader in lease.readers() {
        let handle = simflow_reader::Reader::open(&reader.name)
            .with_context(|| format!("opening {}", reader.name))?;
        if !handle.wait_for_empty(Duration::from_secs(3)) {
            bail!(
                "reader {} still shows a card from an earlier test",
                reader.name
            );
        }
    }
    Ok(lease)
}

/// Locks `reader` against other test processes (and the card bench), waiting while one holds it.
fn lock_across_processes(reader: &VirtualReader) -> anyhow::Result<std::fs::File> {
    simflow_cli::commands::vreaders::lock_port(&virtual_readers()?.state_dir, reader.port)
}

/// Lease one reader (see [`lease_readers`]).
pub fn lease_reader() -> anyhow::Result<ReaderLease> {
    lease_readers(1)
}

/// A pcscd of one test's own, for tests that stop it: the shared pcscd serves other tests (and
/// other checkouts' tests) and is never stopped.
///
/// pcsc-lite 1.9.9's daemon always uses `/run/pcscd/pcscd.comm` (only the client library reads
/// `PCSCLITE_CSOCK_NAME`), and refuses to start while another pcscd owns that path. So this one
/// runs in a mount namespace of its own (`unshare --mount`), where a scratch directory is
/// bind-mounted over `/run/pcscd`: the shared daemon's socket and PID file are untouched, and a
/// client finds this daemon at `<scratch>/run/pcscd.comm` through `PCSCLITE_CSOCK_NAME`.
/// It is started through a link named `pcscd-private`, so `deploy/pcsc/setup.sh` (which looks
/// for processes named `pcscd`) never mistakes it for a foreign pcscd.
/// It has one vpcd entry (two readers) on free ports; the driver is the system's copy.
#[derive(Debug)]
pub struct PrivatePcscd {
    dir: crate::writing::ScratchDir,
    /// The entry's first reader (slot 0).
    pub reader: VirtualReader,
    child: Option<std::process::Child>,
}

impl PrivatePcscd {
    /// Starts a private pcscd and waits until its socket and vpcd port are ready.
    pub fn start() -> anyhow::Result<PrivatePcscd> {
        let dir = crate::writing::ScratchDir::new("private-pcscd")?;
        std::fs::create_dir_all(dir.0.join("run"))?;
        std::fs::create_dir_all(dir.0.join("conf"))?;
        let port = free_port_pair()?;
        std::fs::write(
            dir.0.join("conf/vpcd"),
            format!(
                "FRIENDLYNAME \"private vpcd\"\nDEVICENAME   /dev/null:0x{port:X}\n\
                 LIBPATH      /usr/lib/pcsc/drivers/serial/libifdvpcd.so\nCHANNELID    0x{port:X}\n"
            ),
        )?;
        std::os::unix::fs::symlink("/usr/sbin/pcscd", dir.0.join("pcscd-private"))?;
        let mut pcscd = PrivatePcscd {
            dir,
            reader: VirtualReader {
                name: "private vpcd 00 00".to_owned(),
                port,
            },
            child: None,
        };
        pcscd.restart()?;
        Ok(pcscd)
    }

    /// The socket path a client gives as `PCSCLITE_CSOCK_NAME`.
    pub fn socket(&self) -> PathBuf {
        self.dir.0.join("run/pcscd.comm")
    }

    /// Starts the daemon again (after [`PrivatePcscd::stop`]).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "the private pcscd already runs");
        let dir = self.dir.0.display().to_string();
        let log = std::fs::File::create(self.dir.0.join("pcscd.log"))?;
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount --bind '{dir}/run' /run/pcscd && exec '{dir}/pcscd-private' --foreground --info -c '{dir}/conf'"
            ))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting a private pcscd (unshare, mount and pcscd need root)")?;
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !(self.socket().exists() && port_listens(self.reader.port)) {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                let log = std::fs::read_to_string(self.dir.0.join("pcscd.log")).unwrap_or_default();
                self.child = None;
                bail!("the private pcscd exited ({status}): {log}");
            }
            if std::time::Instant::now() > deadline {
                bail!("the private pcscd did not open its socket and port in 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Stops the daemon the way `systemctl stop` does (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let pid =
                rustix::process::Pid::from_raw(i32::try_from(child.id())?).context("bad pid")?;
            rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for PrivatePcscd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A port whose next port is free too (a vpcd entry listens on both).
fn free_port_pair() -> anyhow::Result<u16> {
    for _ in 0..50 {
        let first = std::net::TcpListener::bind("0.0.0.0:0")?;
        let port = first.local_addr()?.port();
        if port < u16::MAX && std::net::TcpListener::bind(("0.0.0.0", port + 1)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no two free ports in a row")
}

/// Whether a TCP port is in LISTEN state (read from /proc, without connecting: a connection to
/// a vpcd port would be a card).
fn port_listens(port: u16) -> bool {
    let local = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|path| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.len() > 3 && fields[1].ends_with(&local) && fields[3] == "0A"
            })
    })
}
