//! Configuration: layered files plus environment overrides, validated once at start-up.
//!
//! Secrets (the broker URI with its password, the database URL, management credentials) are
//! [`SecretString`]s: they never print in `Debug` output or logs.
//! This module reads files and the environment and does nothing else.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use simflow_schemas::topology::TopologyParams;

/// The built-in defaults, the lowest configuration layer.
pub const DEFAULTS: &str = include_str!("../../../config/default.toml");

/// Broker settings.
#[derive(Debug, Clone, Deserialize)]
pub struct AmqpSettings {
    /// `amqp://user:password@host:port/vhost`: the broker, or with [`AmqpSettings::uris`] set,
    /// the first of its entries (the loader makes it so).
    pub uri: SecretString,
    /// Every node of a broker cluster, in the order to try them first (a file:
    /// `uris = ["amqp://…@10.0.0.1:5672/%2f", …]`; the environment: comma separated).
    /// Empty: `uri` alone. A process connects to the first that answers and, when its node goes
    /// away, reconnects starting with the next ([`crate::brokers`]).
    #[serde(default, deserialize_with = "secrets_or_comma_separated")]
    pub uris: Vec<SecretString>,
    /// Per-consumer prefetch; also how many jobs one worker handles at once.
    pub prefetch: u16,
    /// Base URL of the management HTTP API (with `management_urls` set, its first entry).
    pub management_url: String,
    /// The management API of every cluster node, tried in turn when one does not answer
    /// (a list, or comma separated). Empty: `management_url` alone.
    #[serde(default, deserialize_with = "texts_or_comma_separated")]
    pub management_urls: Vec<String>,
    /// Management API user.
    pub management_user: String,
    /// Management API password.
    pub management_password: SecretString,
    /// The largest message body a worker accepts, in bytes; larger ones are dead-lettered as
    /// `MESSAGE_TOO_LARGE`. Keep the broker's `max_message_size` at this value
    /// (deploy/rabbitmq) so the broker refuses bigger ones at publish.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
}

fn default_max_message_bytes() -> usize {
    usize::try_from(simflow_schemas::topology::MAX_MESSAGE_BYTES).unwrap_or(usize::MAX)
}

impl AmqpSettings {
    /// The broker addresses to connect to: `uris`, or `uri` alone.
    /// Each call starts a fresh turn; keep the result to fail over across reconnects.
    pub fn addresses(&self) -> crate::brokers::BrokerAddresses {
        match crate::brokers::BrokerAddresses::new(self.uris.clone()) {
            Ok(addresses) => addresses,
            Err(_) => crate::brokers::BrokerAddresses::single(self.uri.clone()),
        }
    }

    /// Base URLs of the management API in the order to try them: `management_urls`, or
    /// `management_url` alone.
    pub fn management_bases(&self) -> Vec<String> {
        if self.management_urls.is_empty() {
            vec![self.management_url.clone()]
        } else {
            self.management_urls.clone()
        }
    }

    /// Points these settings at one broker node (and its management API): any list set
    /// before is dropped, so nothing fails over to another broker.
    pub fn use_single_broker(&mut self, uri: SecretString, management_url: String) {
        self.uri = uri;
        self.uris.clear();
        self.management_url = management_url;
        self.management_urls.clear();
    }

    /// Points these settings at every node of a cluster (the first of each list becomes
    /// `uri` and `management_url`); empty lists leave them as they are.
    pub fn use_cluster(&mut self, uris: Vec<SecretString>, management_urls: Vec<String>) {
        if let Some(first) = uris.first() {
            self.uri = first.clone();
        }
        if let Some(first) = management_urls.first() {
            self.management_url = first.clone();
        }
        self.uris = uris;
        self.management_urls = management_urls;
    }

    fn validate(&self) -> anyhow::Result<()> {
        if !self.uri.expose_secret().starts_with("amqp") {
            bail!("amqp.uri must be an amqp:// or amqps:// URI");
        }
        let vhost = crate::amqp::vhost_of(&self.uri)?;
        for (index, uri) in self.uris.iter().enumerate() {
            let number = index + 1;
            if !uri.expose_secret().starts_with("amqp") {
                bail!("amqp.uris entry {number} must be an amqp:// or amqps:// URI");
            }
            let entry_vhost =
                crate::amqp::vhost_of(uri).with_context(|| format!("amqp.uris entry {number}"))?;
            if entry_vhost != vhost {
                bail!(
                    "amqp.uris entry {number} names vhost {entry_vhost:?}, the first names {vhost:?}: every node must be the same broker"
                );
            }
        }
        for (index, url) in self.management_urls.iter().enumerate() {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!(
                    "amqp.management_urls entry {} must be an http:// or https:// URL",
                    index + 1
                );
            }
        }
        Ok(())
    }
}

/// Database settings.
#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    /// `postgres://user@host:port/database`, or several servers in libpq's form
    /// (`postgres://user@h1:5461,h2:5462/simflow?target_session_attrs=read-write`): the pool
    /// then stays on the one that takes writes, also across a failover.
    pub url: SecretString,
    /// Where reads that may come from a replica go (console pages, `simflow inventory`), e.g.
    /// `postgres://user@h1:5461,h2:5462/simflow?target_session_attrs=prefer-standby`.
    /// Absent: they read from `url`. Nothing that decides a job's effect reads here.
    #[serde(default)]
    pub read_url: Option<SecretString>,
    /// Pool size.
    pub max_connections: u32,
    /// How long a job waits for a pooled connection before the attempt counts as transient.
    pub acquire_timeout_ms: u64,
}

/// Topology settings (see `simflow_schemas::topology`).
#[derive(Debug, Clone, Deserialize)]
pub struct TopologySettings {
    /// Broker delivery limit of work queues.
    pub delivery_limit: u32,
    /// Retry levels in milliseconds, shortest first (from the environment: `1000,5000`).
    #[serde(deserialize_with = "numbers_or_comma_separated")]
    pub retry_delays_ms: Vec<u64>,
    /// TTL of outlet work in milliseconds.
    pub outlet_message_ttl_ms: u64,
}

/// A list of numbers from a file (`[1000, 5000]`) or from the environment (`"1000,5000"`).
fn numbers_or_comma_separated<'de, D>(deserializer: D) -> Result<Vec<u64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Numbers {
        List(Vec<u64>),
        Text(String),
    }
    match Numbers::deserialize(deserializer)? {
        Numbers::List(numbers) => Ok(numbers),
        Numbers::Text(text) => text
            .split(',')
            .map(|part| part.trim().parse::<u64>())
            .collect::<Result<_, _>>()
            .map_err(|error| serde::de::Error::custom(format!("{text:?}: {error}"))),
    }
}

/// A list of texts from a file (`["a", "b"]`) or from the environment (`"a,b"`); blanks
/// around entries are trimmed and an empty entry is refused.
fn texts_or_comma_separated<'de, D>(deserializer: D) -> Result<Vec<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Texts {
        List(Vec<String>),
        Text(String),
    }
    let texts: Vec<String> = match Texts::deserialize(deserializer)? {
        Texts::List(texts) => texts,
        Texts::Text(text) if text.trim().is_empty() => Vec::new(),
        Texts::Text(text) => text.split(',').map(str::to_owned).collect(),
    };
    texts
        .into_iter()
        .enumerate()
        .map(|(index, text)| {
            let trimmed = text.trim();
            if trimmed.is_empty() {
                Err(serde::de::Error::custom(format!(
                    "entry {} of the list is empty",
                    index + 1
                )))
            } else {
                Ok(trimmed.to_owned())
            }
        })
        .collect()
}

/// A list of secrets from a file (`["a", "b"]`) or from the environment (`"a,b"`),
/// trimmed, an empty entry refused (other crates' sections use it too).
/// Like `texts_or_comma_separated`, for secrets (URIs with passwords): an error never
/// repeats the text.
pub fn secrets_or_comma_separated<'de, D>(deserializer: D) -> Result<Vec<SecretString>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(texts_or_comma_separated(deserializer)?
        .into_iter()
        .map(SecretString::from)
        .collect())
}

/// Worker behaviour.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkerSettings {
    /// Tries of one job before it is dead-lettered (first try included).
    pub max_attempts: u32,
    /// Quick in-process tries of a transient failure before a retry queue is used.
    pub in_process_tries: u32,
    /// How long shutdown waits for in-flight jobs.
    pub shutdown_grace_ms: u64,
    /// Inbox retention in days.
    pub inbox_retention_days: u32,
    /// Most jobs one transaction carries (group commit); also bounded by the prefetch.
    pub batch_size: usize,
    /// How long a batch may wait for more jobs while a slot is free (0: leave at once).
    pub batch_max_wait_ms: u64,
    /// Batches handled at once, each on its own database connection.
    pub batch_concurrency: usize,
}

/// The metrics and health endpoint.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    /// `host:port` to listen on.
    pub listen: String,
}

/// Card data import settings, in their raw shape: `simflow-carddata` parses the keys and owns
/// every rule about them; the runtime only reads them with the other layers, so one `--config`
/// file and one set of `SIMFLOW__…` variables configure the whole process.
///
/// Keys never belong in a committed file: set them in the environment
/// (`SIMFLOW__CARDDATA__KEK`, …) or in an uncommitted local file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct CardDataSettings {
    /// The id of the key-encryption key that encrypts new rows (stored with every row).
    pub kek_id: String,
    /// The current key-encryption key: 64 hex digits (AES-256). Empty or absent: import refuses.
    pub kek: Option<SecretString>,
    /// Older key-encryption keys rows may still be under, as `id:hex` separated by commas.
    pub retired_keks: Option<SecretString>,
    /// Transport keys by name, as `name:hex` separated by commas (AES-128, -192 or -256).
    pub transport_keys: Option<SecretString>,
    /// Rows validated, encrypted and staged per checkpoint.
    pub chunk_rows: usize,
    /// The longest line a card data file may have, in bytes.
    pub max_line_bytes: usize,
    /// How many refused rows an answer lists (all are counted).
    pub max_listed_problems: usize,
}

impl Default for CardDataSettings {
    fn default() -> Self {
        CardDataSettings {
            kek_id: String::new(),
            kek: None,
            retired_keks: None,
            transport_keys: None,
            chunk_rows: 20_000,
            max_line_bytes: 64 * 1024,
            max_listed_problems: 100,
        }
    }
}

/// Every setting of a simflow process.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// Broker.
    pub amqp: AmqpSettings,
    /// Database.
    pub database: DatabaseSettings,
    /// Topology.
    pub topology: TopologySettings,
    /// Worker behaviour.
    pub worker: WorkerSettings,
    /// Metrics and health endpoint.
    pub http: HttpSettings,
    /// Card data import (optional section).
    #[serde(default)]
    pub carddata: CardDataSettings,
    /// Every layer merged, for the sections worker crates own (`[inventory]`, `[carddata]` …).
    #[serde(skip)]
    raw: RawConfig,
}

/// The merged layers. Its `Debug` prints nothing of the values: they include secrets.
#[derive(Clone, Default)]
struct RawConfig(std::sync::Arc<config::Config>);

impl std::fmt::Debug for RawConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("<layered configuration>")
    }
}

impl Settings {
    /// Loads the layers: built-in defaults, `/etc/simflow/simflow.toml`, `config/local.toml`,
    /// the optional `extra` file, then `SIMFLOW__SECTION__KEY` environment variables.
    pub fn load(extra: Option<&Path>) -> anyhow::Result<Settings> {
        Settings::load_with_environment(extra, None)
    }

    /// Like [`Settings::load`], with the environment variables given as a map instead of read
    /// from the process (`None`: the process environment). Tests use it: setting variables in
    /// a running test process is `unsafe` in edition 2024.
    ///
    /// Values from the environment stay strings until the field they fill asks for a number:
    /// `SIMFLOW__WRITECARD__SMSP='+8613800100500'` is the text `+8613800100500`, never the
    /// integer 8613800100500, and an MCC/MNC `001` keeps its zeros.
    pub fn load_with_environment(
        extra: Option<&Path>,
        environment: Option<std::collections::HashMap<String, String>>,
    ) -> anyhow::Result<Settings> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml))
            .add_source(config::File::with_name("/etc/simflow/simflow.toml").required(false))
            .add_source(config::File::with_name("config/local.toml").required(false));
        if let Some(path) = extra {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        let raw = builder
            .add_source(
                config::Environment::with_prefix("SIMFLOW")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(false)
                    .source(environment),
            )
            .build()
            .context("reading configuration")?;
        Settings::from_raw(raw)
    }

    fn from_raw(raw: config::Config) -> anyhow::Result<Settings> {
        let mut settings: Settings = raw
            .clone()
            .try_deserialize()
            .context("configuration does not fit the expected shape")?;
        settings.raw = RawConfig(std::sync::Arc::new(raw));
        let (uris, management_urls) = (
            std::mem::take(&mut settings.amqp.uris),
            std::mem::take(&mut settings.amqp.management_urls),
        );
        settings.amqp.use_cluster(uris, management_urls);
        settings.validate()?;
        Ok(settings)
    }

    /// A section owned by a worker crate, e.g. `settings.section::<InventorySettings>("inventory")`.
    /// A missing section deserialises from nothing, so its fields need serde defaults.
    pub fn section<T: serde::de::DeserializeOwned>(&self, name: &str) -> anyhow::Result<T> {
        match self.raw.0.get::<T>(name) {
            Ok(section) => Ok(section),
            Err(config::ConfigError::NotFound(_)) => serde_json::from_value(serde_json::json!({}))
                .with_context(|| format!("configuration section [{name}] is missing")),
            Err(error) => Err(error).with_context(|| format!("configuration section [{name}]")),
        }
    }

    /// These settings with one more value set (tests and tools; `key` like `inventory.issue_hold_seconds`).
    pub fn with_value(
        &self,
        key: &str,
        value: impl Into<config::Value>,
    ) -> anyhow::Result<Settings> {
        let raw = config::Config::builder()
            .add_source((*self.raw.0).clone())
            .set_override(key, value)?
            .build()?;
        let mut settings = Settings::from_raw(raw)?;
        // Keep the typed fields as the caller changed them.
        settings.amqp = self.amqp.clone();
        settings.database = self.database.clone();
        settings.topology = self.topology.clone();
        settings.worker = self.worker.clone();
        settings.http = self.http.clone();
        settings.carddata = self.carddata.clone();
        Ok(settings)
    }

    /// The built-in defaults only (tests override fields afterwards).
    pub fn defaults() -> anyhow::Result<Settings> {
        let raw = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml))
            .build()?;
        Settings::from_raw(raw)
    }

    /// These settings pointed at another vhost and database on the same broker and server
    /// (the demo, benchmarks and tests each work in a namespace of their own).
    pub fn in_namespace(&self, vhost: &str, database: &str) -> Settings {
        fn replace_path(url: &str, last_segment: &str) -> String {
            // The vhost or database is the last path segment of the URL; a query string
            // (`?target_session_attrs=…`) stays as it is.
            let (url, query) = match url.split_once('?') {
                Some((url, query)) => (url, Some(query)),
                None => (url, None),
            };
            let replaced = match url.rsplit_once('/') {
                Some((base, _))
                    if base.contains("://") && base.len() > base.find("://").unwrap_or(0) + 3 =>
                {
                    format!("{base}/{last_segment}")
                }
                _ => format!("{}/{last_segment}", url.trim_end_matches('/')),
            };
            match query {
                Some(query) => format!("{replaced}?{query}"),
                None => replaced,
            }
        }
        let mut settings = self.clone();
        settings.amqp.uri = SecretString::from(replace_path(
            self.amqp.uri.expose_secret(),
            &crate::uri::encode_segment(vhost),
        ));
        settings.amqp.uris = self
            .amqp
            .uris
            .iter()
            .map(|uri| {
                SecretString::from(replace_path(
                    uri.expose_secret(),
                    &crate::uri::encode_segment(vhost),
                ))
            })
            .collect();
        settings.database.url =
            SecretString::from(replace_path(self.database.url.expose_secret(), database));
        settings.database.read_url = self
            .database
            .read_url
            .as_ref()
            .map(|url| SecretString::from(replace_path(url.expose_secret(), database)));
        settings
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.amqp.prefetch == 0 {
            bail!("amqp.prefetch must be at least 1");
        }
        if self.amqp.max_message_bytes < 1024 {
            bail!("amqp.max_message_bytes must be at least 1024");
        }
        self.amqp.validate()?;
        if self.topology.retry_delays_ms.is_empty() {
            bail!("topology.retry_delays_ms needs at least one level");
        }
        if self.topology.delivery_limit == 0 {
            bail!("topology.delivery_limit must be at least 1");
        }
        if self.worker.max_attempts == 0 || self.worker.in_process_tries == 0 {
            bail!("worker.max_attempts and worker.in_process_tries must be at least 1");
        }
        if self.worker.batch_size == 0 || self.worker.batch_concurrency == 0 {
            bail!("worker.batch_size and worker.batch_concurrency must be at least 1");
        }
        if self.worker.batch_size > 64 {
            // PostgreSQL caches 64 subtransactions per transaction; more makes every other
            // session's snapshots slower.
            bail!("worker.batch_size must be at most 64 (one savepoint per job)");
        }
        let url = crate::db::parse_url(&self.database.url, "database.url")?;
        if let Some(target) = url.target()
            && !target.writes()
        {
            bail!(
                "database.url must reach the primary: give target_session_attrs=read-write (or \
                 primary), or none; reads from a replica go in database.read_url"
            );
        }
        if let Some(read_url) = &self.database.read_url {
            crate::db::parse_url(read_url, "database.read_url")?;
        }
        if self.database.max_connections == 0 {
            bail!("database.max_connections must be at least 1");
        }
        if self.carddata.chunk_rows == 0 || self.carddata.max_line_bytes < 256 {
            bail!(
                "carddata.chunk_rows must be at least 1 and carddata.max_line_bytes at least 256"
            );
        }
        Ok(())
    }

    /// The topology parameters these settings describe.
    pub fn topology_params(&self) -> TopologyParams {
        TopologyParams {
            delivery_limit: self.topology.delivery_limit,
            retry_delays: self
                .topology
                .retry_delays_ms
                .iter()
                .map(|millis| Duration::from_millis(*millis))
                .collect(),
            outlet_message_ttl: Duration::from_millis(self.topology.outlet_message_ttl_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_parse_and_validate() {
        let settings = Settings::defaults().expect("defaults are valid");
        assert_eq!(settings.topology_params(), TopologyParams::default());
    }

    #[test]
    fn a_namespace_replaces_the_vhost_and_the_database() {
        let settings = Settings::defaults()
            .expect("defaults are valid")
            .in_namespace("simflow_x", "simflow_y");
        assert_eq!(
            settings.amqp.uri.expose_secret(),
            "amqp://guest:guest@127.0.0.1:5672/simflow_x"
        );
        assert_eq!(
            settings.database.url.expose_secret(),
            "postgres://postgres@127.0.0.1:5432/simflow_y"
        );
        let slash = settings.in_namespace("/", "db");
        assert_eq!(
            slash.amqp.uri.expose_secret(),
            "amqp://guest:guest@127.0.0.1:5672/%2F"
        );
    }

    fn load(variables: &[(&str, &str)]) -> anyhow::Result<Settings> {
        let environment = variables
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        Settings::load_with_environment(None, Some(environment))
    }

    #[test]
    fn a_comma_separated_uri_list_from_the_environment_makes_the_first_the_uri() {
        let settings = load(&[(
            "SIMFLOW__AMQP__URIS",
            "amqp://u:p@127.0.0.1:5701/%2f, amqp://u:p@127.0.0.1:5702/%2f,amqp://u:p@127.0.0.1:5703/%2f",
        )])
        .expect("valid");
        let uris: Vec<&str> = settings
            .amqp
            .uris
            .iter()
            .map(|uri| uri.expose_secret())
            .collect();
        assert_eq!(
            uris,
            [
                "amqp://u:p@127.0.0.1:5701/%2f",
                "amqp://u:p@127.0.0.1:5702/%2f",
                "amqp://u:p@127.0.0.1:5703/%2f"
            ]
        );
        assert_eq!(
            settings.amqp.uri.expose_secret(),
            "amqp://u:p@127.0.0.1:5701/%2f"
        );
        assert_eq!(settings.amqp.addresses().len(), 3);
    }

    #[test]
    fn a_uri_list_from_a_file_is_a_list() {
        let raw = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml))
            .add_source(config::File::from_str(
                "[amqp]\nuris = [\"amqp://a:b@10.0.0.1:5672/v\", \"amqp://a:b@10.0.0.2:5672/v\"]\nmanagement_urls = [\"http://10.0.0.1:15672\", \"http://10.0.0.2:15672\"]\n",
                config::FileFormat::Toml,
            ))
            .build()
            .expect("layers");
        let settings = Settings::from_raw(raw).expect("valid");
        assert_eq!(settings.amqp.uris.len(), 2);
        assert_eq!(
            settings.amqp.uri.expose_secret(),
            "amqp://a:b@10.0.0.1:5672/v"
        );
        assert_eq!(settings.amqp.management_url, "http://10.0.0.1:15672");
        assert_eq!(settings.amqp.management_bases().len(), 2);
    }

    #[test]
    fn without_a_list_the_one_uri_is_the_only_address() {
        let settings = Settings::defaults().expect("defaults are valid");
        assert!(settings.amqp.uris.is_empty());
        assert_eq!(settings.amqp.addresses().len(), 1);
        assert_eq!(
            settings.amqp.addresses().first_to_try().expose_secret(),
            settings.amqp.uri.expose_secret()
        );
        assert_eq!(settings.amqp.management_bases(), ["http://127.0.0.1:15672"]);
    }

    #[test]
    fn an_empty_entry_in_the_list_is_refused_with_its_position() {
        let error = load(&[(
            "SIMFLOW__AMQP__URIS",
            "amqp://u:p@h1:5672/%2f,,amqp://u:p@h2/%2f",
        )])
        .expect_err("an empty entry");
        assert!(
            format!("{error:#}").contains("entry 2 of the list is empty"),
            "{error:#}"
        );
    }

    #[test]
    fn a_list_entry_that_is_not_amqp_is_refused_without_printing_it() {
        let error = load(&[(
            "SIMFLOW__AMQP__URIS",
            "amqp://u:hunter2@h1:5672/%2f,http://u:hunter2@h2:5672/%2f",
        )])
        .expect_err("not amqp");
        let message = format!("{error:#}");
        assert!(message.contains("amqp.uris entry 2"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn nodes_naming_different_vhosts_are_refused() {
        let error = load(&[(
            "SIMFLOW__AMQP__URIS",
            "amqp://u:p@h1:5672/a,amqp://u:p@h2:5672/b",
        )])
        .expect_err("two vhosts");
        assert!(
            format!("{error:#}").contains("every node must be the same broker"),
            "{error:#}"
        );
    }

    #[test]
    fn a_management_list_entry_that_is_not_http_is_refused() {
        let error = load(&[("SIMFLOW__AMQP__MANAGEMENT_URLS", "http://h1:15672,h2:15672")])
            .expect_err("not http");
        assert!(
            format!("{error:#}").contains("management_urls entry 2"),
            "{error:#}"
        );
    }

    #[test]
    fn a_namespace_replaces_the_vhost_of_every_node() {
        let settings = load(&[(
            "SIMFLOW__AMQP__URIS",
            "amqp://u:p@h1:5701/%2f,amqp://u:p@h2:5702/%2f",
        )])
        .expect("valid")
        .in_namespace("simflow_x", "db");
        let uris: Vec<&str> = settings
            .amqp
            .uris
            .iter()
            .map(|uri| uri.expose_secret())
            .collect();
        assert_eq!(
            uris,
            [
                "amqp://u:p@h1:5701/simflow_x",
                "amqp://u:p@h2:5702/simflow_x"
            ]
        );
        assert_eq!(
            settings.amqp.uri.expose_secret(),
            "amqp://u:p@h1:5701/simflow_x"
        );
    }

    #[test]
    fn a_namespace_keeps_the_query_of_a_multi_host_url_and_moves_the_read_url_too() {
        let mut settings = Settings::defaults().expect("defaults are valid");
        settings.database.url = SecretString::from(
            "postgres://postgres@127.0.0.1:5461,127.0.0.1:5462/simflow?target_session_attrs=read-write",
        );
        settings.database.read_url = Some(SecretString::from(
            "postgres://postgres@127.0.0.1:5461,127.0.0.1:5462/simflow?target_session_attrs=prefer-standby",
        ));
        let moved = settings.in_namespace("v", "simflow_t");
        assert_eq!(
            moved.database.url.expose_secret(),
            "postgres://postgres@127.0.0.1:5461,127.0.0.1:5462/simflow_t?target_session_attrs=read-write"
        );
        assert_eq!(
            moved.database.read_url.as_ref().map(|url| url.expose_secret().to_owned()),
            Some(
                "postgres://postgres@127.0.0.1:5461,127.0.0.1:5462/simflow_t?target_session_attrs=prefer-standby"
                    .to_owned()
            )
        );
    }

    #[test]
    fn a_database_url_that_cannot_reach_the_primary_is_refused_with_the_reason() {
        let mut settings = Settings::defaults().expect("defaults are valid");
        settings.database.url = SecretString::from(
            "postgres://app:hunter2@h1,h2/simflow?target_session_attrs=prefer-standby",
        );
        let error = format!("{:#}", settings.validate().expect_err("a replica target"));
        assert!(error.contains("database.read_url"), "{error}");
        settings.database.url = SecretString::from("postgres://app:hunter2@h1,h2:x/simflow");
        let error = format!("{:#}", settings.validate().expect_err("a bad port"));
        assert!(error.starts_with("database.url "), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
        settings.database.url = SecretString::from("postgres://app@h1/simflow");
        settings.database.read_url = Some(SecretString::from(
            "postgres://app@h1,h2/simflow?target_session_attrs=replica",
        ));
        let error = format!("{:#}", settings.validate().expect_err("an unknown target"));
        assert!(error.starts_with("database.read_url "), "{error}");
    }

    #[test]
    fn secrets_do_not_print_in_debug_output() {
        let mut settings = Settings::defaults().expect("defaults are valid");
        settings.database.url = SecretString::from("postgres://app:hunter2@db/simflow");
        let printed = format!("{settings:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("guest:guest"), "{printed}");
    }
}
