//! The ops console (`simflow console serve`): a small web UI, in the spirit of Sidekiq's Web UI
//! and Oban Web, for the people who run simflow.
//!
//! - pipeline health (each worker process's `/readyz`), queues with depth, consumers and rates
//!   (the broker's management API);
//! - dead letters with their Chinese and English reasons and their bodies, secrets masked
//!   ([`mask`]); replay (through `simflow_runtime::deadletter::replay`) and discard, each after
//!   a confirmation page and with an audit record of who did it ([`audit`], table
//!   `console.audit`);
//! - outlets online or offline with their reader state ([`outlets`]), stock per warehouse and
//!   agent, one card's history (`simflow_inventory::queries`);
//! - `/metrics`: the business counters `simflow_cards_total{unit,event}` ([`business`]).
//!
//! Every page needs a login ([`auth`]): users, roles (`viewer` reads, `operator` also replays
//! and discards) and Argon2id password hashes come from the `[console]` configuration; no user
//! or password ships. Sessions live in this process (an `HttpOnly`, `SameSite=Strict` cookie),
//! and every form carries the session's CSRF token.
//! Pages are rendered on the server with no script and no external asset.
//!
//! The console never touches a delivery itself (the runtime's dead-letter functions do) and
//! never reads inventory or write-card tables except through those crates' query functions.

// Handlers return `Result<Response, Response>`: the error side is the page to answer with
// instead (the login page, a refusal), built once per request; boxing it would buy nothing.
#![allow(clippy::result_large_err)]

pub mod audit;
pub mod auth;
pub mod business;
mod html;
pub mod mask;
pub mod outlets;
mod pages;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use serde::Deserialize;
use simflow_runtime::Settings;
use simflow_runtime::management::Management;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use auth::{Role, User};

/// The `[console]` section of the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSettings {
    /// Where the console listens.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Base URLs of the worker processes' health endpoints (their `[http] listen`), probed for
    /// `/readyz`.
    #[serde(default)]
    pub workers: Vec<String>,
    /// Base URLs of outlet nodes' health endpoints by outlet code, for their reader state
    /// (optional: without one an outlet shows online or offline from its queue's consumer).
    #[serde(default)]
    pub outlet_nodes: BTreeMap<String, String>,
    /// Who may log in. Nothing ships: without users the console refuses to start.
    #[serde(default)]
    pub users: Vec<User>,
    /// Minutes a login lasts.
    #[serde(default = "default_session_minutes")]
    pub session_minutes: u64,
    /// Seconds the business counters are cached between database queries.
    #[serde(default = "default_business_refresh")]
    pub business_refresh_seconds: u64,
    /// Mark the session cookie `Secure` (set it when the console is served over TLS, e.g.
    /// behind a reverse proxy).
    #[serde(default)]
    pub secure_cookies: bool,
}

fn default_listen() -> String {
    "127.0.0.1:9470".to_owned()
}

fn default_session_minutes() -> u64 {
    480
}

fn default_business_refresh() -> u64 {
    60
}

impl ConsoleSettings {
    /// Checks what the console needs before it starts.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.users.is_empty(),
            "[console] users: configure at least one user (simflow console hash-password makes a password hash); no user ships with simflow"
        );
        for user in &self.users {
            user.validate()?;
        }
        Ok(())
    }
}

/// Everything a request handler reaches.
#[derive(Debug)]
pub struct Console {
    /// The process's settings (broker, database).
    pub settings: Settings,
    /// The console's own settings.
    pub console: ConsoleSettings,
    /// The database (the primary): the audit, dead-letter marks, the business counters.
    pub pool: PgPool,
    /// Reads that may come from a replica (`database.read_url`; else the same pool as `pool`):
    /// the stock and card pages.
    pub read_pool: PgPool,
    /// The broker's management API.
    pub management: Management,
    /// The vhost the pipeline runs in.
    pub vhost: String,
    /// Logged-in sessions.
    pub sessions: auth::Sessions,
    /// The business counters, cached.
    pub business: business::BusinessCounters,
    /// For probing health endpoints.
    pub http: reqwest::Client,
}

/// Applies the console's migrations (`console.audit`).
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    simflow_runtime::db::migrate(pool, "console", sqlx::migrate!("./migrations")).await
}

/// The console's routes.
pub fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/", get(pages::overview))
        .route("/queues", get(pages::queues))
        .route("/dead-letters", get(pages::dead_letters))
        .route(
            "/dead-letters/{queue}/{message_id}",
            get(pages::dead_letter),
        )
        .route(
            "/dead-letters/{queue}/{message_id}/{action}",
            get(pages::confirm).post(pages::act),
        )
        .route("/outlets", get(pages::outlets))
        .route("/stock", get(pages::stock))
        .route("/cards", get(pages::card))
        .route("/audit", get(pages::audit))
        .route("/metrics", get(business::render))
        .route("/livez", get(|| async { "live" }))
        .with_state(console)
}

/// Builds the console and serves it on `[console] listen` until `shutdown`; returns the bound
/// address and the server task.
pub async fn serve(
    settings: Settings,
    console_settings: ConsoleSettings,
    pool: PgPool,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    console_settings.validate()?;
    let vhost = simflow_runtime::amqp::vhost_of(&settings.amqp.uri)?;
    let listener = tokio::net::TcpListener::bind(&console_settings.listen)
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "cannot listen on {} for the console: {error}",
                console_settings.listen
            )
        })?;
    let address = listener.local_addr()?;
    let read_pool = simflow_runtime::db::read_pool(&settings.database, &pool)?;
    let console = Arc::new(Console {
        management: Management::new(&settings.amqp),
        vhost,
        sessions: auth::Sessions::default(),
        business: business::BusinessCounters::new(std::time::Duration::from_secs(
            console_settings.business_refresh_seconds,
        )),
        http: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(2))
            .build()?,
        settings,
        console: console_settings,
        pool,
        read_pool,
    });
    let app = router(console);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "the console stopped");
        }
    });
    tracing::info!(%address, "serving the ops console");
    Ok((address, task))
}
