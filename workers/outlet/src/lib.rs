//! The outlet writer node (现场写卡器): one process per outlet and reader. It consumes only its
//! outlet's queue (single active consumer, prefetch 1) as the outlet's own broker user, reads
//! and writes cards through PC/SC, journals every step in a local SQLite file, and publishes
//! results with a broker-validated `user_id`. It has no PostgreSQL and no card keys except the
//! ones inside the one script it is writing, sealed to its own key pair.
//!
//! - [`node`]: the queue handler (checks, journal, results);
//! - [`card`]: the blocking card work (wait, read, write, recover after a pull);
//! - [`journal`]: the SQLite journal;
//! - [`metrics`]: the node's metrics (writes, reader state, time and APDUs per card, journal);
//! - [`status`]: what the clerk sees on the console, `/healthz` and the counter page;
//! - [`readers`]: the readers pcscd has and whether a card is in, followed all the time;
//! - [`counter`]: the counter page and its local API (loopback; CORS for the CRM origin only).

pub mod card;
pub mod counter;
pub mod journal;
pub mod metrics;
pub mod node;
pub mod readers;
pub mod status;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use simflow_runtime::metrics::{Health, Metrics};
use simflow_runtime::outlet::{OutletConnection, outlet_user, valid_outlet_code};
use simflow_runtime::shutdown::CancellationToken;
use simflow_seal::OutletKeyPair;

pub use node::OutletNode;
pub use status::{ClerkState, Status};

/// The `[outlet]` section of a node's configuration (see `config/outlet.example.toml`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutletSettings {
    /// The outlet code, as provisioned (`simflow outlets provision`).
    #[serde(default)]
    pub code: String,
    /// The PC/SC reader name, exactly as `pcsc_scan` or `simflow outlet readers` lists it.
    #[serde(default)]
    pub reader: String,
    /// The node's secret key file (`simflow outlet keygen` writes it, mode 0600).
    #[serde(default)]
    pub key_file: PathBuf,
    /// The journal file (SQLite); created when missing.
    #[serde(default)]
    pub journal: PathBuf,
    /// The broker URI with the outlet's own user and password, e.g.
    /// `amqp://simflow-outlet-HX01:<password>@broker:5672/%2f` (set it from the environment:
    /// `SIMFLOW__OUTLET__BROKER_URI`).
    #[serde(default)]
    pub broker_uri: Option<SecretString>,
    /// Seconds to wait for the clerk to insert a card.
    #[serde(default = "default_card_wait")]
    pub card_wait_seconds: u64,
    /// Seconds to wait for a card pulled mid-write to come back.
    #[serde(default = "default_reinsert_wait")]
    pub reinsert_wait_seconds: u64,
    /// Where the counter page and its API listen (a loopback address); empty: not served.
    #[serde(default = "default_counter_listen")]
    pub counter_listen: String,
    /// Allow a `counter_listen` that is not a loopback address (then firewall it).
    #[serde(default)]
    pub counter_allow_remote: bool,
    /// The one web origin (the CRM page's, e.g. `https://crm.example.cn`) allowed to call the
    /// counter API from another origin; none when empty.
    #[serde(default)]
    pub crm_origin: Option<String>,
    /// The writer serial of each reader whose driver reports none
    /// (`SCARD_ATTR_VENDOR_IFD_SERIAL_NO`), by PC/SC reader name, e.g. the virtual reader used
    /// with the software SIM: `[outlet.reader_serials] "Virtual PCD 00 00" = "VPCD-HX0001"`.
    /// A serial the driver reports wins over this one.
    #[serde(default)]
    pub reader_serials: BTreeMap<String, String>,
}

fn default_counter_listen() -> String {
    "127.0.0.1:9466".to_owned()
}

fn default_card_wait() -> u64 {
    60
}

fn default_reinsert_wait() -> u64 {
    30
}

impl std::fmt::Debug for OutletSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutletSettings")
            .field("code", &self.code)
            .field("reader", &self.reader)
            .field("key_file", &self.key_file)
            .field("journal", &self.journal)
            .field("broker_uri", &self.broker_uri.as_ref().map(|_| "<secret>"))
            .field("card_wait_seconds", &self.card_wait_seconds)
            .field("reinsert_wait_seconds", &self.reinsert_wait_seconds)
            .field("counter_listen", &self.counter_listen)
            .field("counter_allow_remote", &self.counter_allow_remote)
            .field("crm_origin", &self.crm_origin)
            .field("reader_serials", &self.reader_serials)
            .finish()
    }
}

impl OutletSettings {
    /// Checks every field a node needs, with one clear message per missing one.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            valid_outlet_code(&self.code),
            "[outlet] code {:?}: use 1–32 letters, digits, - or _",
            self.code
        );
        anyhow::ensure!(
            !self.reader.is_empty(),
            "[outlet] reader: name the PC/SC reader (simflow outlet readers lists them)"
        );
        anyhow::ensure!(
            !self.key_file.as_os_str().is_empty(),
            "[outlet] key_file: give the node's key file (simflow outlet keygen makes one)"
        );
        anyhow::ensure!(
            !self.journal.as_os_str().is_empty(),
            "[outlet] journal: give a path for the node's SQLite journal"
        );
        self.counter_access()?;
        let uri = self.broker_uri.as_ref().context(
            "[outlet] broker_uri: set SIMFLOW__OUTLET__BROKER_URI to the outlet user's broker URI",
        )?;
        let user = outlet_user(&simflow_runtime::amqp::vhost_of(uri)?, &self.code);
        anyhow::ensure!(
            uri.expose_secret().contains(&format!(
                "//{}:",
                simflow_runtime::uri::encode_segment(&user)
            )),
            "[outlet] broker_uri must connect as the outlet's own user {user}"
        );
        Ok(())
    }

    /// Where the counter page listens and who may call it; `None` when it is off.
    pub fn counter_access(&self) -> anyhow::Result<Option<counter::CounterAccess>> {
        if self.counter_listen.trim().is_empty() {
            return Ok(None);
        }
        counter::CounterAccess::check(
            self.counter_listen.trim(),
            self.counter_allow_remote,
            self.crm_origin.as_deref(),
        )
        .map(Some)
    }

    /// The broker connection of the node.
    pub fn connection(&self) -> anyhow::Result<OutletConnection> {
        Ok(OutletConnection {
            uri: self
                .broker_uri
                .clone()
                .context("[outlet] broker_uri is missing")?,
            outlet_code: self.code.clone(),
            user: outlet_user(
                &simflow_runtime::amqp::vhost_of(
                    self.broker_uri
                        .as_ref()
                        .context("[outlet] broker_uri is missing")?,
                )?,
                &self.code,
            ),
        })
    }
}

/// Writes a new key pair to `path` (mode 0600, never over an existing file) and returns it.
pub fn generate_key_file(path: &Path) -> anyhow::Result<OutletKeyPair> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let keys = OutletKeyPair::generate();
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    file.write_all(keys.secret_to_base64().as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    Ok(keys)
}

/// Reads the node's key pair, refusing a key file others may read.
pub fn load_key_file(path: &Path) -> anyhow::Result<OutletKeyPair> {
    use std::os::unix::fs::PermissionsExt;
    let metadata =
        std::fs::metadata(path).with_context(|| format!("reading key file {}", path.display()))?;
    anyhow::ensure!(
        metadata.permissions().mode() & 0o077 == 0,
        "key file {} is readable by others; chmod 600 it",
        path.display()
    );
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("reading key file {}", path.display()))?,
    );
    OutletKeyPair::from_base64(text.trim())
        .map_err(|error| anyhow::anyhow!("key file {}: {error}", path.display()))
}

/// Runs a node until `shutdown`: opens the journal, reports unfinished writes, and consumes
/// the outlet's queue. Returns an error when the broker refuses the outlet.
pub async fn run(
    settings: &OutletSettings,
    metrics: Arc<Metrics>,
    health: Health,
    console: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    settings.validate()?;
    let keys = load_key_file(&settings.key_file)?;
    let journal = journal::Journal::open(&settings.journal)
        .await
        .with_context(|| format!("opening journal {}", settings.journal.display()))?;
    let status = Status::new(health.clone(), console);
    let work = card::CardWork {
        reader: settings.reader.clone(),
        card_wait: Duration::from_secs(settings.card_wait_seconds),
        reinsert_wait: Duration::from_secs(settings.reinsert_wait_seconds),
        status,
    };
    tracing::info!(outlet = %settings.code, reader = %settings.reader, key = %keys.public_key().fingerprint(), "outlet node starting");
    let outlet_metrics = metrics::OutletMetrics::register(metrics.registry())
        .context("registering the outlet metrics")?;
    outlet_metrics.add_outlet(&settings.code, &work.status);
    let journal_watch = metrics::watch_journal(
        outlet_metrics.clone(),
        settings.code.clone(),
        journal.clone(),
        shutdown.clone(),
    );
    let (readers, reader_watch) = readers::watch_readers(
        settings.reader.clone(),
        work.status.clone(),
        shutdown.clone(),
    );
    let node = Arc::new(
        OutletNode::new(&settings.code, keys, journal.clone(), work.clone())
            .with_metrics(outlet_metrics)
            .with_configured_serial(settings.reader_serials.get(&settings.reader).cloned()),
    );
    let counter = match settings.counter_access()? {
        Some(access) => {
            let counter = counter::Counter {
                outlet_code: settings.code.clone(),
                work,
                readers,
                journal: journal.clone(),
                card_lock: node.card_lock(),
            };
            let (address, task) = counter::serve(access, counter, shutdown.clone()).await?;
            if console {
                println!("counter page: http://{address}/");
            }
            Some(task)
        }
        None => None,
    };
    let result = simflow_runtime::outlet::run(
        settings.connection()?,
        node,
        metrics,
        health,
        shutdown.clone(),
    )
    .await;
    // The broker refused the node: stop the page and the watcher too.
    shutdown.cancel();
    if let Some(counter) = counter {
        let _ = counter.await;
    }
    let _ = reader_watch.await;
    journal_watch.abort();
    journal.close().await;
    result.map_err(anyhow::Error::from)
}
