//! Database URLs that name several servers, and pools that stay on the server the URL asks for.
//!
//! sqlx's `PgConnectOptions` takes one host, so we read libpq's multi-host form ourselves:
//! `postgres://user@127.0.0.1:5461,127.0.0.1:5462/simflow?target_session_attrs=read-write`.
//! A pool built from such a URL (`db::lazy_pool`, `db::read_pool`) checks every new
//! connection (`after_connect`) and every idle one it hands out (`before_acquire`, in place of
//! sqlx's ping) with `pg_is_in_recovery()`, and refuses one on a server of the wrong kind; a
//! background task (the [`Locator`]) checks the chosen server every second and, when it no
//! longer answers or no longer fits, tries every host and points the pool at the one that
//! does (`Pool::set_connect_options`). So after a failover the pool moves to the new primary by
//! itself, and what jobs meet meanwhile (connection refused, 57P01 admin shutdown, 25006
//! read-only transaction, a timed-out acquire) is transient to the runtime.
//!
//! We chose this over asking Patroni's REST API (`GET /primary`) because the database itself is
//! the authority on whether it takes writes, the workers then need no second address per
//! server, and the same URL works without Patroni. This module neither retries jobs (the
//! runtime does) nor knows about Patroni.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

/// How often the locator checks the server a pool uses.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long the locator waits for one server to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Which server a session may use: libpq's `target_session_attrs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionTarget {
    /// Any server that answers.
    Any,
    /// A server that takes writes (not in recovery, not read-only by default).
    ReadWrite,
    /// A server not in recovery.
    Primary,
    /// A server in recovery or read-only by default.
    ReadOnly,
    /// A server in recovery (a replica).
    Standby,
    /// A replica if one answers, else any server.
    PreferStandby,
}

impl SessionTarget {
    /// The spellings libpq accepts.
    pub const NAMES: &'static str = "any, read-write, primary, read-only, standby, prefer-standby";

    fn parse(text: &str) -> Option<SessionTarget> {
        Some(match text {
            "any" => SessionTarget::Any,
            "read-write" => SessionTarget::ReadWrite,
            "primary" => SessionTarget::Primary,
            "read-only" => SessionTarget::ReadOnly,
            "standby" => SessionTarget::Standby,
            "prefer-standby" => SessionTarget::PreferStandby,
            _ => return None,
        })
    }

    /// Whether a session on a server of this role may stay (prefer-standby takes any server;
    /// the locator prefers a replica when it chooses).
    pub fn accepts(self, role: ServerRole) -> bool {
        match self {
            SessionTarget::Any | SessionTarget::PreferStandby => true,
            SessionTarget::ReadWrite => !role.in_recovery && !role.read_only,
            SessionTarget::Primary => !role.in_recovery,
            SessionTarget::ReadOnly => role.in_recovery || role.read_only,
            SessionTarget::Standby => role.in_recovery,
        }
    }

    /// Whether sessions of this target can write (what `database.url` needs).
    pub fn writes(self) -> bool {
        matches!(self, SessionTarget::ReadWrite | SessionTarget::Primary)
    }
}

/// What a server says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerRole {
    /// `pg_is_in_recovery()`: a replica (or a server still recovering).
    pub in_recovery: bool,
    /// `default_transaction_read_only` is on.
    pub read_only: bool,
}

/// Asks the server behind `connection` what it is (one round trip).
pub async fn role_of(connection: &mut PgConnection) -> Result<ServerRole, sqlx::Error> {
    let (in_recovery, read_only): (bool, bool) = sqlx::query_as(
        "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only') = 'on'",
    )
    .fetch_one(connection)
    .await?;
    Ok(ServerRole {
        in_recovery,
        read_only,
    })
}

/// Why a database URL was refused. The messages never repeat the URL (it may hold a password).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    /// Not `postgres://` or `postgresql://`.
    #[error("is not a postgres:// URL")]
    NotPostgres,
    /// A host in the list is empty (`h1,,h2` or a trailing comma).
    #[error("names an empty host in its host list")]
    EmptyHost,
    /// A port that is not a number from 1 to 65535.
    #[error("has a port that is not a number from 1 to 65535: {0:?}")]
    BadPort(String),
    /// An unknown `target_session_attrs`.
    #[error("has target_session_attrs={0:?}; use one of {names}", names = SessionTarget::NAMES)]
    UnknownTarget(String),
    /// What sqlx said about the rest of the URL.
    #[error("is not a valid postgres:// URL ({0})")]
    Invalid(String),
}

/// One server of a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Name or address (an IPv6 address without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl std::fmt::Display for Host {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(formatter, "[{}]:{}", self.host, self.port)
        } else {
            write!(formatter, "{}:{}", self.host, self.port)
        }
    }
}

/// A parsed database URL: its servers in order, the connect options of the first (user,
/// database and every other parameter are shared), and the session target it asks for.
#[derive(Clone)]
pub struct DatabaseUrl {
    hosts: Vec<Host>,
    options: PgConnectOptions,
    target: Option<SessionTarget>,
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("DatabaseUrl")
            .field("hosts", &self.hosts)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl DatabaseUrl {
    /// Parses `postgres://[user[:password]@]host[:port][,host[:port]…][/database][?params]`.
    /// `target_session_attrs` is ours to read; every other parameter goes to sqlx.
    pub fn parse(url: &str) -> Result<DatabaseUrl, UrlError> {
        let (scheme, rest) = url.split_once("://").ok_or(UrlError::NotPostgres)?;
        if scheme != "postgres" && scheme != "postgresql" {
            return Err(UrlError::NotPostgres);
        }
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let (userinfo, host_list) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, authority),
        };
        let (path, query) = match tail.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (tail, None),
        };
        let mut target = None;
        let mut kept = Vec::new();
        for pair in query.into_iter().flat_map(|query| query.split('&')) {
            match pair.split_once('=') {
                Some(("target_session_attrs", value)) => {
                    target = Some(
                        SessionTarget::parse(value)
                            .ok_or_else(|| UrlError::UnknownTarget(value.to_owned()))?,
                    );
                }
                _ if pair.is_empty() => {}
                _ => kept.push(pair),
            }
        }
        let entries: Vec<&str> = host_list.split(',').collect();
        let mut hosts = Vec::with_capacity(entries.len());
        if entries.len() > 1 || !host_list.is_empty() {
            for entry in &entries {
                hosts.push(parse_host(entry)?);
            }
        }
        // sqlx reads the first server's URL; the others differ only in host and port.
        let first = entries.first().copied().unwrap_or_default();
        let mut single = format!("{scheme}://");
        if let Some(userinfo) = userinfo {
            single.push_str(userinfo);
            single.push('@');
        }
        single.push_str(first);
        single.push_str(path);
        if !kept.is_empty() {
            single.push('?');
            single.push_str(&kept.join("&"));
        }
        let options = single
            .parse::<PgConnectOptions>()
            .map_err(|error| UrlError::Invalid(scrub(&error.to_string())))?;
        Ok(DatabaseUrl {
            hosts,
            options,
            target,
        })
    }

    /// The servers, in the URL's order (empty: sqlx's default, a local socket).
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The `target_session_attrs` the URL gives, if any.
    pub fn target(&self) -> Option<SessionTarget> {
        self.target
    }

    /// Whether a pool must check which server it reaches: several servers, or a target given.
    pub fn needs_locating(&self) -> bool {
        self.hosts.len() > 1 || self.target.is_some()
    }

    /// The same URL with its connect options changed (application name, logging).
    pub fn map_options(
        mut self,
        change: impl FnOnce(PgConnectOptions) -> PgConnectOptions,
    ) -> DatabaseUrl {
        self.options = change(self.options);
        self
    }

    /// The connect options of server `index` (the first when the URL named none).
    pub fn options(&self, index: usize) -> PgConnectOptions {
        match self.hosts.get(index) {
            Some(host) if index > 0 => self.options.clone().host(&host.host).port(host.port),
            _ => self.options.clone(),
        }
    }

    /// The first server from `start` on that fits `target` (for prefer-standby: a replica if
    /// one answers, else any): its index, a connection to it and its role.
    pub async fn locate(
        &self,
        target: SessionTarget,
        start: usize,
    ) -> Result<(usize, PgConnection, ServerRole), LocateError> {
        let count = self.hosts.len().max(1);
        let mut seen = Vec::with_capacity(count);
        let mut fallback = None;
        for step in 0..count {
            let index = (start + step) % count;
            let host = self.host_name(index);
            match probe(&self.options(index)).await {
                Ok((connection, role)) => {
                    if target == SessionTarget::PreferStandby && !role.in_recovery {
                        seen.push(format!("{host}: primary"));
                        if fallback.is_none() {
                            fallback = Some((index, connection, role));
                        }
                        continue;
                    }
                    if target.accepts(role) {
                        return Ok((index, connection, role));
                    }
                    seen.push(format!("{host}: {}", describe(role)));
                }
                Err(error) => seen.push(format!("{host}: {error}")),
            }
        }
        fallback.ok_or(LocateError { target, seen })
    }

    fn host_name(&self, index: usize) -> String {
        self.hosts
            .get(index)
            .map_or_else(|| "the default server".to_owned(), Host::to_string)
    }
}

/// No server of a URL fits its target; what each said.
#[derive(Debug, thiserror::Error)]
#[error("no database server fits target_session_attrs {target:?} ({})", seen.join("; "))]
pub struct LocateError {
    target: SessionTarget,
    seen: Vec<String>,
}

fn parse_host(entry: &str) -> Result<Host, UrlError> {
    let (host, port) = if let Some(bracketed) = entry.strip_prefix('[') {
        let (address, after) = bracketed
            .split_once(']')
            .ok_or_else(|| UrlError::BadPort(entry.to_owned()))?;
        match after {
            "" => (address, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (address, Some(port)),
                None => return Err(UrlError::BadPort(entry.to_owned())),
            },
        }
    } else {
        match entry.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (entry, None),
        }
    };
    if host.is_empty() {
        return Err(UrlError::EmptyHost);
    }
    let port = match port {
        None => 5432,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|port| *port > 0)
            .ok_or_else(|| UrlError::BadPort(port.to_owned()))?,
    };
    Ok(Host {
        host: host.to_owned(),
        port,
    })
}

/// sqlx's parse errors may quote the URL; keep only what precedes a quoted part.
fn scrub(message: &str) -> String {
    message
        .split(['"', '\''])
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn describe(role: ServerRole) -> &'static str {
    match (role.in_recovery, role.read_only) {
        (true, _) => "standby",
        (false, true) => "primary, read-only by default",
        (false, false) => "primary",
    }
}

async fn probe(options: &PgConnectOptions) -> Result<(PgConnection, ServerRole), String> {
    let connect = async {
        let mut connection = options.connect().await?;
        let role = role_of(&mut connection).await?;
        Ok::<_, sqlx::Error>((connection, role))
    };
    match tokio::time::timeout(PROBE_TIMEOUT, connect).await {
        Ok(Ok(found)) => Ok(found),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
    }
}

/// Keeps one pool on a server that fits its target (see the module documentation).
#[derive(Debug)]
pub struct Locator {
    url: DatabaseUrl,
    target: SessionTarget,
    current: AtomicUsize,
    /// Prefer-standby only: the last search found no replica, so the primary serves reads.
    standby_missing: AtomicBool,
    kick: tokio::sync::Notify,
}

impl Locator {
    /// A locator for `url`, aiming at `target`, starting with the first server.
    pub fn new(url: DatabaseUrl, target: SessionTarget) -> Arc<Locator> {
        Arc::new(Locator {
            url,
            target,
            current: AtomicUsize::new(0),
            standby_missing: AtomicBool::new(false),
            kick: tokio::sync::Notify::new(),
        })
    }

    /// The server the pool now connects to.
    pub fn current(&self) -> Option<&Host> {
        self.url.hosts.get(self.current.load(Ordering::Relaxed))
    }

    async fn fits(&self, connection: &mut PgConnection) -> Result<bool, sqlx::Error> {
        let role = role_of(connection).await?;
        let fits = match self.target {
            // A primary serves reads only while no replica answers (or the URL names one server).
            SessionTarget::PreferStandby => {
                role.in_recovery
                    || self.url.hosts.len() < 2
                    || self.standby_missing.load(Ordering::Relaxed)
            }
            target => target.accepts(role),
        };
        if !fits {
            // The server changed role under us: look again now rather than at the next tick.
            self.kick.notify_one();
        }
        Ok(fits)
    }

    /// A lazy pool with `pool_options` whose connections are checked against the target, and
    /// the task that moves it (ends when the pool is closed). Needs a tokio runtime.
    pub fn lazy_pool(self: &Arc<Locator>, pool_options: PgPoolOptions) -> PgPool {
        let on_connect = Arc::clone(self);
        let on_acquire = Arc::clone(self);
        let pool = pool_options
            // The role check replaces sqlx's ping: one round trip either way.
            .test_before_acquire(false)
            .after_connect(move |connection, _| {
                let locator = Arc::clone(&on_connect);
                Box::pin(async move {
                    if locator.fits(connection).await? {
                        Ok(())
                    } else {
                        Err(sqlx::Error::Protocol(format!(
                            "the database server does not fit target_session_attrs {:?}",
                            locator.target
                        )))
                    }
                })
            })
            .before_acquire(move |connection, _| {
                let locator = Arc::clone(&on_acquire);
                Box::pin(async move { locator.fits(connection).await })
            })
            .connect_lazy_with(self.url.options(0));
        tokio::spawn(Arc::clone(self).follow(pool.clone()));
        pool
    }

    /// Checks the current server every [`CHECK_INTERVAL`] (or at once when a connection found
    /// the wrong kind of server) and moves the pool when it no longer fits.
    async fn follow(self: Arc<Locator>, pool: PgPool) {
        let closed = pool.close_event();
        tokio::pin!(closed);
        let mut watched: Option<PgConnection> = None;
        let mut first = true;
        loop {
            if !first {
                tokio::select! {
                    () = &mut closed => break,
                    () = self.kick.notified() => {}
                    () = tokio::time::sleep(CHECK_INTERVAL) => {}
                }
            }
            first = false;
            let current = self.current.load(Ordering::Relaxed);
            if let Some(connection) = watched.as_mut() {
                let still = tokio::time::timeout(PROBE_TIMEOUT, role_of(connection)).await;
                let settled = match still {
                    Ok(Ok(role)) if self.target == SessionTarget::PreferStandby => {
                        // A primary serves reads only until a replica answers again.
                        role.in_recovery || self.url.hosts.len() < 2
                    }
                    Ok(Ok(role)) => self.target.accepts(role),
                    _ => false,
                };
                if settled {
                    continue;
                }
            }
            if let Some(connection) = watched.take() {
                let _ = tokio::time::timeout(PROBE_TIMEOUT, connection.close()).await;
            }
            match self.url.locate(self.target, current).await {
                Ok((index, connection, role)) => {
                    self.standby_missing
                        .store(!role.in_recovery, Ordering::Relaxed);
                    if index != current {
                        self.current.store(index, Ordering::Relaxed);
                        pool.set_connect_options(self.url.options(index));
                        tracing::warn!(
                            server = %self.url.host_name(index),
                            previous = %self.url.host_name(current),
                            target = ?self.target,
                            "database pool moved to another server"
                        );
                    }
                    watched = Some(connection);
                }
                Err(error) => {
                    tracing::warn!(%error, "no database server fits; trying again");
                }
            }
        }
        if let Some(connection) = watched {
            let _ = connection.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(url: &str) -> Vec<String> {
        DatabaseUrl::parse(url)
            .expect("valid")
            .hosts()
            .iter()
            .map(Host::to_string)
            .collect()
    }

    #[test]
    fn a_multi_host_url_gives_every_server_in_order_with_its_port() {
        let url = DatabaseUrl::parse(
            "postgres://app:secret@127.0.0.1:5461,127.0.0.1:5462/simflow?target_session_attrs=read-write",
        )
        .expect("valid");
        assert_eq!(
            hosts("postgres://u@127.0.0.1:5461,127.0.0.1:5462/simflow"),
            ["127.0.0.1:5461", "127.0.0.1:5462"]
        );
        assert_eq!(url.target(), Some(SessionTarget::ReadWrite));
        assert!(url.needs_locating());
        let second = url.options(1);
        assert_eq!(second.get_host(), "127.0.0.1");
        assert_eq!(second.get_port(), 5462);
        assert_eq!(second.get_database(), Some("simflow"));
        assert_eq!(second.get_username(), "app");
        assert_eq!(url.options(0).get_port(), 5461);
    }

    #[test]
    fn a_host_without_a_port_gets_5432_and_ipv6_addresses_keep_their_brackets_apart() {
        assert_eq!(
            hosts("postgresql://u@db-a,[::1]:5433,db-c:6000/x"),
            ["db-a:5432", "[::1]:5433", "db-c:6000"]
        );
    }

    #[test]
    fn a_single_host_url_without_a_target_needs_no_locating_and_keeps_its_parameters() {
        let url = DatabaseUrl::parse("postgres://postgres@127.0.0.1:5432/simflow?sslmode=disable")
            .expect("valid");
        assert!(!url.needs_locating());
        assert_eq!(url.options(0).get_database(), Some("simflow"));
        assert_eq!(url.target(), None);
    }

    #[test]
    fn every_libpq_target_is_read_and_an_unknown_one_is_refused_with_the_choices() {
        for (text, target) in [
            ("any", SessionTarget::Any),
            ("read-write", SessionTarget::ReadWrite),
            ("primary", SessionTarget::Primary),
            ("read-only", SessionTarget::ReadOnly),
            ("standby", SessionTarget::Standby),
            ("prefer-standby", SessionTarget::PreferStandby),
        ] {
            let url = DatabaseUrl::parse(&format!(
                "postgres://u@h1,h2/db?connect_timeout=3&target_session_attrs={text}"
            ))
            .expect("valid");
            assert_eq!(url.target(), Some(target));
        }
        let error = DatabaseUrl::parse("postgres://u@h1,h2/db?target_session_attrs=master")
            .expect_err("unknown target");
        assert_eq!(error, UrlError::UnknownTarget("master".into()));
        assert!(error.to_string().contains("prefer-standby"), "{error}");
    }

    #[test]
    fn bad_urls_are_refused_without_repeating_the_password() {
        for (url, expected) in [
            ("mysql://u:hunter2@h/db", UrlError::NotPostgres),
            ("postgres://u:hunter2@h1,,h2/db", UrlError::EmptyHost),
            (
                "postgres://u:hunter2@h1,h2:/db",
                UrlError::BadPort(String::new()),
            ),
            (
                "postgres://u:hunter2@h1:70000,h2/db",
                UrlError::BadPort("70000".into()),
            ),
            (
                "postgres://u:hunter2@h1:0/db",
                UrlError::BadPort("0".into()),
            ),
        ] {
            let error = DatabaseUrl::parse(url).expect_err(url);
            assert_eq!(error, expected, "{url}");
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
        let debug = format!(
            "{:?}",
            DatabaseUrl::parse("postgres://u:hunter2@h1,h2/db").expect("valid")
        );
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn targets_accept_the_roles_libpq_would() {
        let primary = ServerRole {
            in_recovery: false,
            read_only: false,
        };
        let standby = ServerRole {
            in_recovery: true,
            read_only: false,
        };
        assert!(SessionTarget::ReadWrite.accepts(primary));
        assert!(!SessionTarget::ReadWrite.accepts(standby));
        assert!(!SessionTarget::Standby.accepts(primary));
        assert!(SessionTarget::Standby.accepts(standby));
        assert!(SessionTarget::PreferStandby.accepts(primary));
        assert!(SessionTarget::ReadOnly.accepts(standby));
        assert!(SessionTarget::ReadWrite.writes() && SessionTarget::Primary.writes());
        assert!(!SessionTarget::PreferStandby.writes() && !SessionTarget::Any.writes());
    }
}
