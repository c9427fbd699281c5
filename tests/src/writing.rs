//! A world for write-card tests: cards issued to an agent, their card data file imported (with
//! generated keys), number pools filled, outlets provisioned with generated key pairs, and the
//! central workers running.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use simflow_carddata::import::{CardFile, ImportRequest, NoProgress};
use simflow_cli::pipeline::{RunningWorkers, WorkerKind};
use simflow_runtime::amqp::{Client, EventWatch, JobRoute};
use simflow_schemas::common::CardSelection;
use simflow_schemas::issue::{IssueCommit, IssuePrepare};
use simflow_seal::OutletKeyPair;

use crate::TestEnv;

/// One test card: what the vendor's card data file says about it.
#[derive(Debug, Clone)]
pub struct TestCard {
    /// ICCID.
    pub iccid: String,
    /// Ki, hex (generated for the test).
    pub ki: String,
    /// OPc, hex (generated for the test).
    pub opc: String,
    /// ADM1, 8 ASCII digits.
    pub adm1: String,
}

/// A provisioned test outlet.
#[derive(Debug)]
pub struct TestOutlet {
    /// Outlet code.
    pub code: String,
    /// Its key pair (the node's secret).
    pub keys: OutletKeyPair,
    /// Its broker password.
    pub password: SecretString,
}

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

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buffer = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buffer);
    hex::encode(buffer)
}

fn random_digits(count: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..count)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
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
        env.settings.carddata.kek_id = "test-kek".into();
        env.settings.carddata.kek = Some(SecretString::from(random_hex(32)));
        settings_change(&mut env.settings);
        let iccids = env
            .receive_cards(
                "13ZDF16",
                "USIM128K_NORMAL",
                "DU06",
                898_601_100_000_000_000,
                cards,
            )
            .await?;
        let cards: Vec<TestCard> = iccids
            .iter()
            .map(|iccid| TestCard {
                iccid: iccid.clone(),
                ki: random_hex(16),
                opc: random_hex(16),
                adm1: random_digits(8),
            })
            .collect();

        // Card data for the first `with_card_data` cards.
        let importer =
            simflow_carddata::Importer::from_settings(env.pool.clone(), &env.settings.carddata)?;
        if with_card_data > 0 {
            importer
                .import(
                    CardFile::Bytes(Arc::from(
                        card_data_file(&cards[..with_card_data]).into_bytes(),
                    )),
                    &import_request(),
                    &NoProgress,
                )
                .await?;
        }

        // Numbers.
        let mut db = env.pool.acquire().await?;
        simflow_writecard::numbers::add_msisdns(&mut db, FIRST_MSISDN, 100).await?;
        simflow_writecard::numbers::add_imsis(&mut db, FIRST_IMSI, 100).await?;

        // Outlets of ESS0601.
        let mut test_outlets = Vec::new();
        let vhost = simflow_runtime::amqp::vhost_of(&env.settings.amqp.uri)?;
        for code in outlets {
            let keys = OutletKeyPair::generate();
            let password = SecretString::from(random_hex(16));
            simflow_writecard::outlets::provision(
                &mut db,
                &env.client,
                &env.management,
                &env.settings.topology_params(),
                &simflow_writecard::outlets::Provisioning {
                    outlet_code: code,
                    agent_code: "ESS0601",
                    public_key: &keys.public_key().to_base64(),
                    password: &password,
                    vhost: &vhost,
                },
            )
            .await?;
            test_outlets.push(TestOutlet {
                code: (*code).to_owned(),
                keys,
                password,
            });
        }
        drop(db);

        let workers = env.start_workers(&[WorkerKind::Issue, WorkerKind::WriteCard]);
        let mut watch = env.watch().await?;
        // Issue every card to ESS0601 the way the business does.
        let batch_id = uuid::Uuid::new_v4();
        let prepare = IssuePrepare {
            batch_id,
            staff_id: "T0601".into(),
            warehouse: "13ZDF16".into(),
            agent_ess_code: "ESS0601".into(),
            card_type: "USIM128K_NORMAL".into(),
            cards: CardSelection::Quantity {
                quantity: u32::try_from(iccids.len())?,
            },
        };
        for step in 0..2 {
            let id = uuid::Uuid::new_v4().to_string();
            if step == 0 {
                env.client
                    .publish_job(&prepare, &id, JobRoute::Default)
                    .await?;
            } else {
                env.client
                    .publish_job(
                        &IssueCommit {
                            batch_id,
                            staff_id: "T0601".into(),
                        },
                        &id,
                        JobRoute::Default,
                    )
                    .await?;
            }
            let answer = watch.next_for(&id, Duration::from_secs(20)).await?;
            anyhow::ensure!(
                !answer.routing_key.ends_with("rejected"),
                "issuing the test cards failed: {}",
                answer.body
            );
        }
        Ok(WriteWorld {
            env,
            cards,
            outlets: test_outlets,
            workers: Some(workers),
            watch,
        })
    }

    /// The broker URI of an outlet's own user.
    pub fn outlet_uri(&self, code: &str) -> anyhow::Result<SecretString> {
        use secrecy::ExposeSecret;
        let outlet = self
            .outlets
            .iter()
            .find(|outlet| outlet.code == code)
            .ok_or_else(|| anyhow::anyhow!("no outlet {code}"))?;
        let vhost = simflow_runtime::uri::encode_segment(&self.env.vhost);
        Ok(SecretString::from(format!(
            "amqp://{}:{}@127.0.0.1:5672/{vhost}",
            simflow_runtime::uri::encode_segment(&simflow_runtime::outlet::outlet_user(
                &self.env.vhost,
                code
            )),
            outlet.password.expose_secret()
        )))
    }

    /// A client connected as an outlet's own broker user.
    pub async fn outlet_client(&self, code: &str) -> anyhow::Result<Client> {
        Ok(Client::connect(&self.outlet_uri(code)?, "simflow-test-outlet").await?)
    }

    /// Imports the card data of these cards (a second vendor file).
    pub async fn import_card_data(&self, cards: &[TestCard]) -> anyhow::Result<()> {
        let importer = simflow_carddata::Importer::from_settings(
            self.env.pool.clone(),
            &self.env.settings.carddata,
        )?;
        importer
            .import(
                CardFile::Bytes(Arc::from(card_data_file(cards).into_bytes())),
                &import_request(),
                &NoProgress,
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
}

fn import_request() -> ImportRequest {
    ImportRequest {
        file_name: "vendor-test.csv".into(),
        card_type: "USIM128K_NORMAL".into(),
        transport_key: None,
        staff_id: "test".into(),
    }
}

/// A vendor card data file (pySim-shell spelling) for these cards.
pub fn card_data_file(cards: &[TestCard]) -> String {
    let mut text = String::from("ICCID,IMSI,KI,OPC,ADM1\n");
    for (index, card) in cards.iter().enumerate() {
        text.push_str(&format!(
            "{},{:015},{},{},{}\n",
            card.iccid,
            1_019_990_000_000 + index as u64,
            card.ki,
            card.opc,
            card.adm1
        ));
    }
    text
}

/// An outlet node running in the test process against a virtual reader.
#[derive(Debug)]
pub struct RunningNode {
    /// The node's settings (key file, journal) for restarts.
    pub settings: simflow_outlet::OutletSettings,
    /// `/healthz` state of the node (the clerk state is component `reader`).
    pub health: simflow_runtime::metrics::Health,
    stop: simflow_runtime::shutdown::CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningNode {
    /// Stops the node (a write in progress finishes first) and returns how it ended.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await?
    }

    /// Whether the node task has ended (e.g. refused by the broker), and how.
    pub async fn ended(self, within: Duration) -> anyhow::Result<anyhow::Result<()>> {
        Ok(tokio::time::timeout(within, self.task).await??)
    }
}

impl WriteWorld {
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
        let outlet = self
            .outlets
            .iter()
            .find(|outlet| outlet.code == code)
            .ok_or_else(|| anyhow::anyhow!("no outlet {code}"))?;
        std::fs::create_dir_all(dir)?;
        let key_file = dir.join(format!("{code}.key"));
        if !key_file.exists() {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&key_file)?;
            file.write_all(outlet.keys.secret_to_base64().as_bytes())?;
        }
        Ok(simflow_outlet::OutletSettings {
            code: code.to_owned(),
            reader: reader.to_owned(),
            key_file,
            journal: dir.join(format!("{code}.journal.sqlite")),
            broker_uri: Some(self.outlet_uri(code)?),
            card_wait_seconds: 8,
            reinsert_wait_seconds: 8,
        })
    }

    /// Starts a node in this process with `settings`.
    pub fn start_node(&self, settings: simflow_outlet::OutletSettings) -> RunningNode {
        let health = simflow_runtime::metrics::Health::default();
        let metrics = Arc::new(simflow_runtime::metrics::Metrics::new());
        let stop = simflow_runtime::shutdown::CancellationToken::new();
        let task = {
            let settings = settings.clone();
            let health = health.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                simflow_outlet::run(&settings, metrics, health, false, stop).await
            })
        };
        RunningNode {
            settings,
            health,
            stop,
            task,
        }
    }
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
            outlet_code: code.into(),
            user: simflow_runtime::outlet::outlet_user(&self.env.vhost, code),
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
