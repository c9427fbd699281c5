//! Harness for the end-to-end tests: each test gets its own RabbitMQ vhost and its own
//! PostgreSQL database (both removed when the test's [`TestEnv`] drops, even on panic), the
//! org seed data loaded, and helpers to start workers in process or as a real `simflow` process.
//!
//! Nothing here mocks the broker or the database: the point of these tests is the real thing.

pub mod broker;
pub mod browser;
pub mod patroni;
pub mod pcsc;
pub mod pg;
pub mod process;
pub mod prometheus;
pub mod rules;
pub mod writing;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use secrecy::SecretString;
use simflow_cli::pipeline::{self, RunningWorkers, WorkerKind};
use simflow_runtime::Settings;
use simflow_runtime::amqp::{Client, EventWatch};
use simflow_runtime::management::Management;
use sqlx::PgPool;

/// The workspace root (where `config/` lives).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The broker host:port used by tests (`SIMFLOW_TEST_AMQP`, default 127.0.0.1:5672).
fn amqp_authority() -> String {
    std::env::var("SIMFLOW_TEST_AMQP").unwrap_or_else(|_| "guest:guest@127.0.0.1:5672".to_owned())
}

/// The PostgreSQL base URL used by tests (`SIMFLOW_TEST_POSTGRES`, default trust on localhost).
pub fn postgres_base() -> String {
    std::env::var("SIMFLOW_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// A short unique name for test resources.
pub fn unique_name(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}_{}", &id[..12])
}

/// Settings pointing at a vhost and database, with short retry delays for tests.
pub fn test_settings(vhost: &str, database_url: &str) -> anyhow::Result<Settings> {
    let mut settings = Settings::defaults()?;
    settings.amqp.uri = SecretString::from(format!(
        "amqp://{}/{}",
        amqp_authority(),
        simflow_runtime::uri::encode_segment(vhost)
    ));
    settings.database.url = SecretString::from(database_url.to_owned());
    settings.database.max_connections = 8;
    settings.database.acquire_timeout_ms = 1500;
    settings.http.listen = "127.0.0.1:0".to_owned();
    settings.topology.retry_delays_ms = vec![300, 1000, 2000];
    settings.worker.max_attempts = 8;
    settings.worker.shutdown_grace_ms = 10_000;
    Ok(settings)
}

/// One test's private world: a vhost, a database, org data, a client.
#[derive(Debug)]
pub struct TestEnv {
    /// Settings for workers of this test.
    pub settings: Settings,
    /// The vhost.
    pub vhost: String,
    /// The database name.
    pub database: String,
    /// A pool on the test database.
    pub pool: PgPool,
    /// A publishing client on the vhost.
    pub client: Client,
    /// The management API.
    pub management: Management,
}

impl TestEnv {
    /// Creates a vhost and a database, migrates, loads the org seed data and declares the
    /// central topology.
    pub async fn new() -> anyhow::Result<TestEnv> {
        // lapin logs every connection the test's cleanup closes as an error; keep the output for
        // what the test is about.
        simflow_runtime::telemetry::init_with_default("warn,lapin=off");
        let vhost = unique_name("simflow_test");
        let database = vhost.clone();
        let database_url = format!("{}/{database}", postgres_base());
        let settings = test_settings(&vhost, &database_url)?;
        let management = Management::new(&settings.amqp);
        management
            .create_vhost(&vhost)
            .await
            .context("creating the test vhost (is rabbitmq_management enabled?)")?;
        management
            .set_permissions(&vhost, &settings.amqp.management_user, ".*", ".*", ".*")
            .await?;
        let (pool, _) =
            simflow_cli::world::migrate_with_org(&settings, &workspace_root().join("config/org"))
                .await?;
        let client = simflow_cli::world::central_client(&settings, "simflow-test-client").await?;
        Ok(TestEnv {
            settings,
            vhost,
            database,
            pool,
            client,
            management,
        })
    }

    /// Receives `count` blank cards of `card_type` into `warehouse` for `department`,
    /// starting at ICCID body `first_body`; returns their ICCIDs.
    pub async fn receive_cards(
        &self,
        warehouse: &str,
        card_type: &str,
        department: &str,
        first_body: u64,
        count: u64,
    ) -> anyhow::Result<Vec<String>> {
        let receipt =
            simflow_cli::world::receipt(warehouse, card_type, department, first_body, count);
        let mut connection = self.pool.acquire().await?;
        simflow_cli::world::receive_cards(&mut connection, &receipt, "test").await
    }

    /// Starts workers in this process.
    pub fn start_workers(&self, kinds: &[WorkerKind]) -> RunningWorkers {
        self.start_workers_with(&self.settings, kinds)
    }

    /// Starts workers in this process with other settings (e.g. another database).
    pub fn start_workers_with(&self, settings: &Settings, kinds: &[WorkerKind]) -> RunningWorkers {
        let pool =
            simflow_runtime::db::lazy_pool(&settings.database).expect("valid database settings");
        pipeline::start_own(settings, &pool, kinds).expect("workers start")
    }

    /// Watches every event of the vhost.
    pub async fn watch(&self) -> anyhow::Result<EventWatch> {
        Ok(self.client.watch_events(&["#"]).await?)
    }

    /// Messages waiting in a queue of this vhost (ready + unacknowledged).
    pub async fn queue_depth(&self, queue: &str) -> anyhow::Result<u64> {
        // The management API's counters lag by up to a few seconds; poll until stable.
        Ok(self.management.queue(&self.vhost, queue).await?.messages)
    }

    /// Waits until `condition` holds, polling.
    pub async fn eventually<F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        condition: F,
    ) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<bool>>,
    {
        eventually(what, timeout, condition).await
    }
}

/// Waits until `condition` holds, polling every 100 ms, at most `timeout`.
pub async fn eventually<F, Fut>(
    what: &str,
    timeout: Duration,
    mut condition: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await? {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let management = self.management.clone();
        let vhost = self.vhost.clone();
        let database = self.database.clone();
        let pool = self.pool.clone();
        // Clean up on a separate thread with its own runtime: Drop may run during a panic or
        // inside the test's runtime, where blocking on async work is not allowed.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let Ok(runtime) = runtime else { return };
            runtime.block_on(async move {
                pool.close().await;
                let _ = management.delete_vhost(&vhost).await;
                if let Ok(mut admin) =
                    sqlx::PgConnection::connect(&format!("{}/postgres", postgres_base())).await
                {
                    let statement = format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                        .execute(&mut admin)
                        .await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

use sqlx::Connection as _;
