//! The PostgreSQL pool and per-crate migrations.
//!
//! Each crate that owns tables keeps them in its own PostgreSQL schema (`runtime`, `inventory`,
//! `carddata`, `writecard`) with its own migration history table in that schema, so no crate
//! reaches into another's tables and migrations of different crates never collide.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

use crate::settings::DatabaseSettings;

/// The runtime's own migrations (the inbox).
pub fn runtime_migrator() -> Migrator {
    sqlx::migrate!("./migrations")
}

/// Builds a pool that connects lazily: a worker starts even while the database is down and
/// treats the outage as a transient failure of each job.
pub fn lazy_pool(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    let options = connect_options(&settings.url)?;
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .test_before_acquire(true)
        .connect_lazy_with(options))
}

/// Parses a database URL, keeping SQL statement logging quiet (statements carry no secrets,
/// but bulk imports would flood the log).
pub fn connect_options(url: &SecretString) -> anyhow::Result<PgConnectOptions> {
    let options = PgConnectOptions::from_str(url.expose_secret())
        .context("database.url is not a valid postgres:// URL")?
        .application_name("simflow")
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(5));
    Ok(options)
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
    let options = connect_options(url)?;
    let database = options
        .get_database()
        .context("database.url names no database")?
        .to_owned();
    let admin = PgConnection::connect_with(&options.database("postgres"))
        .await
        .context("connecting to the postgres maintenance database")?;
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
