//! The outlet writer node (现场写卡器): one process per outlet and reader. It consumes only its
//! outlet's queue (single active consumer, prefetch 1) as the outlet's own broker user, reads
//! and writes cards through PC/SC, journals every step in a local SQLite file, and publishes
//! results with a broker-validated `user_id`. It has no PostgreSQL and no card keys except the
//! ones inside the one script it is writing, sealed to its own key pair.
//!
//! - [`node`]: the queue handler (checks, journal, results);
//! - [`card`]: the blocking card work (wait, read, write, recover after a pull);
//! - [`journal`]: the SQLite journal;
//! - [`keys`]: the key ring and key rotation (the secret keys never leave the node);
//! - [`metrics`]: the node's metrics (writes, reader state, time and APDUs per card, journal);
//! - [`status`]: what the clerk sees on the console, `/healthz` and the counter page;
//! - [`readers`]: the readers pcscd has and whether a card is in, followed all the time;
//! - [`counter`]: the counter page and its local API (loopback; CORS for the CRM origin only).

pub mod card;
pub mod counter;
pub mod journal;
pub mod keys;
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
use simflow_runtime::outlet_tls::ClientTls;
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
    /// Further nodes of the same broker cluster, with the same user, password and vhost, tried
    /// in turn after `broker_uri` when a node does not answer or goes away (a list, or from the
    /// environment comma separated: `SIMFLOW__OUTLET__BROKER_FAILOVER_URIS`).
    #[serde(
        default,
        deserialize_with = "simflow_runtime::settings::secrets_or_comma_separated"
    )]
    pub broker_failover_uris: Vec<SecretString>,
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
    /// Over TLS (`amqps://…?auth_mechanism=external`): the outlet CA's certificate, the only
    /// issuer the broker's certificate may chain to.
    #[serde(default)]
    pub tls_ca_cert: Option<PathBuf>,
    /// Over TLS: the node's certificate, as the centre issued it at provisioning.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// Over TLS: the node's private key (`simflow outlet tls-request` made it; mode 0600).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Seconds between heartbeats to the centre (its "last seen"); 0: none.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_seconds: u64,
    /// Seconds the key before a rotation still opens scripts (sealed before the centre heard
    /// of the rotation); then the node deletes it. Keep it above the scripts' TTL
    /// (`[writecard] script_ttl_seconds`, 110).
    #[serde(default = "default_key_grace")]
    pub key_grace_seconds: u64,
    /// The writer serial of each reader whose driver reports none
    /// (`SCARD_ATTR_VENDOR_IFD_SERIAL_NO`), by PC/SC reader name, e.g. the virtual reader used
    /// with the software SIM: `[outlet.reader_serials] "Virtual PCD 00 00" = "VPCD-HX0001"`.
    /// A serial the driver reports wins over this one.
    #[serde(default)]
    pub reader_serials: BTreeMap<String, String>,
}

fn default_key_grace() -> u64 {
    600
}

/// The default heartbeat interval: the centre calls a node offline after
/// `simflow_writecard::outlets::OFFLINE_AFTER` (90 s) without one, three missed beats.
pub fn default_heartbeat() -> u64 {
    30
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
            .field("broker_failover_uris", &self.broker_failover_uris.len())
            .field("card_wait_seconds", &self.card_wait_seconds)
            .field("reinsert_wait_seconds", &self.reinsert_wait_seconds)
            .field("counter_listen", &self.counter_listen)
            .field("counter_allow_remote", &self.counter_allow_remote)
            .field("crm_origin", &self.crm_origin)
            .field("tls_ca_cert", &self.tls_ca_cert)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("heartbeat_seconds", &self.heartbeat_seconds)
            .field("key_grace_seconds", &self.key_grace_seconds)
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
        if self.client_tls()?.is_some() {
            let text = uri.expose_secret();
            anyhow::ensure!(
                text.starts_with("amqps://") && text.contains("auth_mechanism=external"),
                "[outlet] broker_uri: with a client certificate, use amqps://HOST:PORT/VHOST?auth_mechanism=external"
            );
            return Ok(());
        }
        anyhow::ensure!(
            uri.expose_secret().contains(&format!(
                "//{}:",
                simflow_runtime::uri::encode_segment(&user)
            )),
            "[outlet] broker_uri must connect as the outlet's own user {user}"
        );
        let vhost = simflow_runtime::amqp::vhost_of(uri)?;
        for (index, other) in self.broker_failover_uris.iter().enumerate() {
            let number = index + 1;
            anyhow::ensure!(
                other.expose_secret().starts_with("amqp"),
                "[outlet] broker_failover_uris entry {number} must be an amqp:// or amqps:// URI"
            );
            anyhow::ensure!(
                simflow_runtime::amqp::vhost_of(other)? == vhost
                    && other.expose_secret().contains(&format!(
                        "//{}:",
                        simflow_runtime::uri::encode_segment(&user)
                    )),
                "[outlet] broker_failover_uris entry {number} must connect as {user} to the vhost of broker_uri"
            );
        }
        Ok(())
    }

    /// The node's TLS files when it connects with a client certificate (all three set), `None`
    /// when it uses a password (none set); some but not all is an error.
    pub fn client_tls(&self) -> anyhow::Result<Option<ClientTls>> {
        match (&self.tls_ca_cert, &self.tls_cert, &self.tls_key) {
            (None, None, None) => Ok(None),
            (Some(ca_cert), Some(cert), Some(key)) => Ok(Some(ClientTls {
                ca_cert: ca_cert.clone(),
                cert: cert.clone(),
                key: key.clone(),
            })),
            _ => anyhow::bail!(
                "[outlet] tls_ca_cert, tls_cert and tls_key: set all three (a client certificate) or none (a password)"
            ),
        }
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
            failover_uris: self.broker_failover_uris.clone(),
            outlet_code: self.code.clone(),
            user: outlet_user(
                &simflow_runtime::amqp::vhost_of(
                    self.broker_uri
                        .as_ref()
                        .context("[outlet] broker_uri is missing")?,
                )?,
                &self.code,
            ),
            tls: match self.client_tls()? {
                Some(files) => Some(files.load()?),
                None => None,
            },
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

/// Rotates the node's key: a new key pair in the node's key files, announced to the centre
/// (`outlet.key_rotated.v1`, as the outlet's own broker user), then made current; the old key
/// keeps opening scripts for `key_grace_seconds`. The secret key never leaves the node; the
/// centre learns only the public key, from the outlet's own broker identity. Run it beside a
/// running node: the node picks the new key up from the files. Interrupted, run it again: it
/// announces the same new key again.
pub async fn rotate_key(settings: &OutletSettings) -> anyhow::Result<keys::PreparedRotation> {
    settings.validate()?;
    let rotation = keys::prepare_rotation(
        &settings.key_file,
        Duration::from_secs(settings.key_grace_seconds),
    )?;
    let next = rotation.next.public_key();
    let announcement = simflow_schemas::outlet::OutletKeyRotated {
        outlet_code: settings.code.clone(),
        public_key: next.to_base64(),
        previous_fingerprint: rotation.previous.public_key().fingerprint(),
        previous_key_retires_at: rotation.previous_key_retires_at,
    };
    let message_id = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!(
            "simflow key rotation {} {}",
            settings.code,
            next.fingerprint()
        )
        .as_bytes(),
    );
    simflow_runtime::outlet::announce(
        &settings.connection()?,
        &message_id.to_string(),
        &simflow_runtime::outlet::OutletAnswer::of(&announcement),
    )
    .await
    .context("announcing the new key to the centre (run rotate-key again to retry)")?;
    keys::complete_rotation(&settings.key_file, &rotation)?;
    tracing::info!(outlet = %settings.code, key = %next.fingerprint(), previous = %rotation.previous.public_key().fingerprint(), retires_at = %rotation.previous_key_retires_at, "key rotated");
    Ok(rotation)
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
    let keys = keys::KeyRing::load(&settings.key_file)?;
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
    tracing::info!(outlet = %settings.code, reader = %settings.reader, key = %keys.fingerprint(), "outlet node starting");
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
    let mut node = OutletNode::new(
        &settings.code,
        load_key_file(&settings.key_file)?,
        journal.clone(),
        work.clone(),
    )
    .with_key_ring(keys)
    .with_metrics(outlet_metrics)
    .with_configured_serial(settings.reader_serials.get(&settings.reader).cloned());
    if settings.heartbeat_seconds > 0 {
        node = node.with_heartbeat(Duration::from_secs(settings.heartbeat_seconds));
    }
    let node = Arc::new(node);
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
