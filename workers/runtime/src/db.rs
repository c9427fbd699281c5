//! The PostgreSQL pool and per-crate migrations.
//!
//! Each crate that owns tables keeps them in its own PostgreSQL schema (`runtime`, `inventory`,
//! `carddata`, `writecard`) with its own migration history table in that schema, so no crate
//! reaches into another's tables and migrations of different crates never collide.
//!
//! `database.url` may name several servers (libpq's multi-host form, see [`crate::multihost`]):
//! the pool then follows the primary across a failover. `database.read_url`, when set, is a
//! second pool for reads that may come from a replica ([`read_pool`]); nothing that decides a
//! job's effect reads through it.

use std::time::Duration;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

use crate::multihost::{DatabaseUrl, Locator, SessionTarget};
use crate::settings::DatabaseSettings;

/// The runtime's own migrations (the inbox).
pub fn runtime_migrator() -> Migrator {
    sqlx::migrate!("./migrations")
}

/// Builds a pool that connects lazily: a worker starts even while the database is down and
/// treats the outage as a transient failure of each job. With several servers in
/// `database.url`, the pool stays on the one that takes writes (read-write unless the URL says
/// `primary`).
pub fn lazy_pool(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    pool_for(
        settings,
        &settings.url,
        "database.url",
        SessionTarget::ReadWrite,
    )
}

/// The pool for reads that may come from a replica (console pages, `simflow inventory`):
/// `database.read_url` when set (several servers with `target_session_attrs=prefer-standby`
/// read from a replica while one answers), else `primary` itself.
pub fn read_pool(settings: &DatabaseSettings, primary: &PgPool) -> anyhow::Result<PgPool> {
    match &settings.read_url {
        Some(url) => pool_for(settings, url, "database.read_url", SessionTarget::Any),
        None => Ok(primary.clone()),
    }
}

fn pool_for(
    settings: &DatabaseSettings,
    url: &SecretString,
    name: &str,
    default_target: SessionTarget,
) -> anyhow::Result<PgPool> {
    let url = parse_url(url, name)?;
    let pool_options = PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms));
    if !url.needs_locating() {
        return Ok(pool_options
            .test_before_acquire(true)
            .connect_lazy_with(url.options(0)));
    }
    let target = url.target().unwrap_or(default_target);
    Ok(Locator::new(url, target).lazy_pool(pool_options))
}

/// Parses a (possibly multi-host) database URL and sets our connect options on it.
pub fn parse_url(url: &SecretString, name: &str) -> anyhow::Result<DatabaseUrl> {
    let url = DatabaseUrl::parse(url.expose_secret())
        .map_err(|error| anyhow::anyhow!("{name} {error}"))?;
    Ok(url.map_options(quiet))
}

/// Parses a database URL, keeping SQL statement logging quiet (statements carry no secrets,
/// but bulk imports would flood the log). With several servers these are the first one's
/// options (the pools find the one that takes writes).
pub fn connect_options(url: &SecretString) -> anyhow::Result<PgConnectOptions> {
    Ok(parse_url(url, "database.url")?.options(0))
}

fn quiet(options: PgConnectOptions) -> PgConnectOptions {
    options
        .application_name("simflow")
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(5))
}

/// Applies one crate's migrations inside its own schema.
pub async fn migrate(
    pool: &PgPool,
    schema: &'static str,
    mut migrator: Migrator,
) -> anyhow::Result<()> {
    migrator.create_schema(schema);
    migrator.dangerous_set_table_name(format!("{schema}._sqlx_migrations"));
    migrator.set_ignore_missing(false);
    migrator
        .run(pool)
        .await
        .with_context(|| format!("migrating schema {schema}"))
}

/// Applies the runtime's migrations.
pub async fn migrate_runtime(pool: &PgPool) -> anyhow::Result<()> {
    migrate(pool, "runtime", runtime_migrator()).await
}

/// The name of the database in `url`, and a connection to the `postgres` maintenance database
/// of the same server (to create or drop it).
async fn maintenance(url: &SecretString) -> anyhow::Result<(String, PgConnection)> {
    let url = parse_url(url, "database.url")?;
    let database = url
        .options(0)
        .get_database()
        .context("database.url names no database")?
        .to_owned();
    // The database may not exist yet: look for the primary through `postgres`.
    let url = url.map_options(|options| options.database("postgres"));
    let admin = if url.needs_locating() {
        let target = url.target().unwrap_or(SessionTarget::ReadWrite);
        let (_, connection, _) = url.locate(target, 0).await?;
        connection
    } else {
        PgConnection::connect_with(&url.options(0))
            .await
            .context("connecting to the postgres maintenance database")?
    };
    Ok((database, admin))
}

/// Creates the database named in `url` if it does not exist (connecting to `postgres` first).
pub async fn ensure_database(url: &SecretString) -> anyhow::Result<()> {
    let (database, mut admin) = maintenance(url).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&database)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        let statement = format!("CREATE DATABASE \"{}\"", database.replace('"', "\"\""));
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut admin)
            .await?;
        tracing::info!(database, "created database");
    }
    admin.close().await?;
    Ok(())
}

/// Drops the database named in `url` (closing its connections), if it exists.
pub async fn drop_database(url: &SecretString) -> anyhow::Result<()> {
    let (database, mut admin) = maintenance(url).await?;
    let statement = format!(
        "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
        database.replace('"', "\"\"")
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    Ok(())
}
