//! A world for write-card tests: cards issued to an agent, their card data file imported (with
//! generated keys), number pools filled, outlets provisioned with generated key pairs, and the
//! central workers running.
//!
//! The world itself is built by `simflow_cli::world`, as the demo and the benchmarks build
//! theirs; this module only puts it in a test's own vhost and database and adds what tests
//! alone need (outlet clients, node settings with key files, capturing outlet work).

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use simflow_cli::pipeline::{RunningWorkers, WorkerKind};
use simflow_cli::world::{self, WritingPlan};
use simflow_runtime::amqp::{Client, EventWatch};

use crate::TestEnv;

/// A provisioned test outlet, with its key pair (the node's secret) and broker password.
pub use simflow_cli::world::ProvisionedOutlet as TestOutlet;
/// An outlet node running in the test process against a virtual reader.
pub use simflow_cli::world::RunningNode;
/// One test card: what the vendor's card data file says about it (keys generated).
pub use simflow_cli::world::VendorCard as TestCard;

/// The write-card world.
#[derive(Debug)]
pub struct WriteWorld {
    /// The test's vhost and database.
    pub env: TestEnv,
    /// Cards issued to ESS0601, in ICCID order.
    pub cards: Vec<TestCard>,
    /// Outlets, each for agent ESS0601.
    pub outlets: Vec<TestOutlet>,
    /// The running central workers (write-card and issue).
    pub workers: Option<RunningWorkers>,
    /// Events of the vhost.
    pub watch: EventWatch,
}

/// The first MSISDN and IMSI of the pools a world gets (100 of each).
pub const FIRST_MSISDN: u64 = 13_012_340_000;
/// The first IMSI of the pool (MCC 001, MNC 01: the test network).
pub const FIRST_IMSI: u64 = 1_010_000_000_001;

impl WriteWorld {
    /// A world with `cards` cards issued to ESS0601 (card data imported for the first
    /// `with_card_data` of them), `outlets` outlets of ESS0601, and the central workers running
    /// with `settings_change` applied.
    pub async fn new(
        cards: u64,
        with_card_data: usize,
        outlets: &[&str],
        settings_change: impl FnOnce(&mut simflow_runtime::Settings),
    ) -> anyhow::Result<WriteWorld> {
        let mut env = TestEnv::new().await?;
        world::generate_kek(&mut env.settings.carddata, "test-kek");
        settings_change(&mut env.settings);
        let plan = WritingPlan {
            cards,
            with_card_data,
            first_msisdn: FIRST_MSISDN,
            first_imsi: FIRST_IMSI,
            numbers: 100,
            outlets,
            agent: "ESS0601",
            by: "test",
        };
        let writing = world::prepare_writing(&env.pool, &env.client, &env.settings, &plan).await?;
        let workers = env.start_workers(&[WorkerKind::Issue, WorkerKind::WriteCard]);
        let mut watch = env.watch().await?;
        // Issue every card to ESS0601 the way the business does.
        world::issue_to_agent(
            &env.client,
            &mut watch,
            "ESS0601",
            cards,
            Duration::from_secs(20),
        )
        .await?;
        Ok(WriteWorld {
            env,
            cards: writing.cards,
            outlets: writing.outlets,
            workers: Some(workers),
            watch,
        })
    }

    fn outlet(&self, code: &str) -> anyhow::Result<&TestOutlet> {
        self.outlets
            .iter()
            .find(|outlet| outlet.code == code)
            .ok_or_else(|| anyhow::anyhow!("no outlet {code}"))
    }

    /// The broker URI of an outlet's own user.
    pub fn outlet_uri(&self, code: &str) -> anyhow::Result<SecretString> {
        world::outlet_uri(&self.env.settings, code, &self.outlet(code)?.password)
    }

    /// A client connected as an outlet's own broker user.
    pub async fn outlet_client(&self, code: &str) -> anyhow::Result<Client> {
        Ok(Client::connect(&self.outlet_uri(code)?, "simflow-test-outlet").await?)
    }

    /// Imports the card data of these cards (a second vendor file).
    pub async fn import_card_data(&self, cards: &[TestCard]) -> anyhow::Result<()> {
        world::import_card_data(
            &self.env.pool,
            &self.env.settings.carddata,
            "vendor-test.csv",
            "test",
            card_data_file(cards),
        )
        .await?;
        Ok(())
    }

    /// Stops the central workers.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(workers) = self.workers.take() {
            workers.stop().await?;
        }
        Ok(())
    }

    /// Settings for a node of outlet `code` on `reader`: its key written to a fresh 0600 file
    /// under `dir`, its journal beside it.
    pub fn node_settings(
        &self,
        code: &str,
        reader: &str,
        dir: &std::path::Path,
    ) -> anyhow::Result<simflow_outlet::OutletSettings> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let outlet = self.outlet(code)?;
        std::fs::create_dir_all(dir)?;
        let settings = world::node_settings(code, reader, dir, self.outlet_uri(code)?, 8);
        if !settings.key_file.exists() {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&settings.key_file)?;
            file.write_all(outlet.keys.secret_to_base64().as_bytes())?;
        }
        Ok(settings)
    }

    /// Starts a node in this process with `settings`.
    pub fn start_node(&self, settings: simflow_outlet::OutletSettings) -> RunningNode {
        RunningNode::start(settings)
    }
}

/// A vendor card data file (pySim-shell spelling) for these cards.
pub fn card_data_file(cards: &[TestCard]) -> String {
    world::card_data_file(cards, 1_019_990_000_000)
}

/// A scratch directory for a test, removed when dropped.
#[derive(Debug)]
pub struct ScratchDir(pub std::path::PathBuf);

impl ScratchDir {
    /// A new empty directory under the system temp dir.
    pub fn new(prefix: &str) -> anyhow::Result<ScratchDir> {
        let path = std::env::temp_dir().join(crate::unique_name(prefix));
        std::fs::create_dir_all(&path)?;
        Ok(ScratchDir(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Takes outlet work off an outlet's queue as the outlet's own user and hands it to the test
/// (the test plays a writer that answers nothing).
#[derive(Debug)]
struct Capture(tokio::sync::mpsc::UnboundedSender<simflow_runtime::outlet::OutletWork>);

impl simflow_runtime::outlet::OutletHandler for Capture {
    async fn handle(
        &self,
        work: simflow_runtime::outlet::OutletWork,
        _shutdown: simflow_runtime::shutdown::CancellationToken,
    ) -> simflow_runtime::outlet::OutletDecision {
        let _ = self.0.send(work);
        simflow_runtime::outlet::OutletDecision::Answer(Vec::new())
    }
}

/// Outlet work captured off an outlet's queue.
#[derive(Debug)]
pub struct CapturedWork {
    /// What arrived, in order.
    pub work: tokio::sync::mpsc::UnboundedReceiver<simflow_runtime::outlet::OutletWork>,
    stop: simflow_runtime::shutdown::CancellationToken,
    task: tokio::task::JoinHandle<Result<(), simflow_runtime::outlet::OutletError>>,
}

impl CapturedWork {
    /// The next piece of work, within `timeout`.
    pub async fn next(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<simflow_runtime::outlet::OutletWork> {
        tokio::time::timeout(timeout, self.work.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the capture ended"))
    }

    /// How the consumer ended by itself (e.g. refused by the broker), within `timeout`.
    pub async fn ended(
        self,
        timeout: Duration,
    ) -> anyhow::Result<Result<(), simflow_runtime::outlet::OutletError>> {
        Ok(tokio::time::timeout(timeout, self.task).await??)
    }

    /// Stops consuming and waits until the consumer is gone (so another may take the queue).
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await??;
        Ok(())
    }
}

impl WriteWorld {
    /// Consumes outlet `code`'s queue as that outlet's user, handing the work to the test.
    pub fn capture_outlet_work(&self, code: &str) -> anyhow::Result<CapturedWork> {
        Ok(capture_work_as(simflow_runtime::outlet::OutletConnection {
            uri: self.outlet_uri(code)?,
            failover_uris: Vec::new(),
            outlet_code: code.into(),
            user: simflow_runtime::outlet::outlet_user(&self.env.vhost, code),
            tls: None,
        }))
    }
}

/// Consumes an outlet queue with the given connection (which may name another outlet's
/// queue than its credentials allow), handing the work to the test.
pub fn capture_work_as(connection: simflow_runtime::outlet::OutletConnection) -> CapturedWork {
    let (sender, work) = tokio::sync::mpsc::unbounded_channel();
    let stop = simflow_runtime::shutdown::CancellationToken::new();
    {
        let task = {
            let stop = stop.clone();
            tokio::spawn(async move {
                simflow_runtime::outlet::run(
                    connection,
                    Arc::new(Capture(sender)),
                    Arc::new(simflow_runtime::metrics::Metrics::new()),
                    simflow_runtime::metrics::Health::default(),
                    stop,
                )
                .await
            })
        };
        CapturedWork { work, stop, task }
    }
}
