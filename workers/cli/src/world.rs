//! The world the demo, the benchmarks and the tests build before they send any job: blank cards
//! received into a warehouse, the vendor's card data file for them (with generated keys) written
//! and imported, the number pools filled, outlets provisioned (and their writer nodes started),
//! and cards issued to an agent the way the business issues them (prepare, then commit, through
//! the issue worker).
//!
//! It is one place so that the demo, `simflow bench …` and the test harness (`simflow-tests`)
//! set up the same world the same way.
//! Every key and password here is generated on the spot; no key byte is ever fixed in code.
//! It creates no vhost or database and starts no worker: callers bring their own namespace (a
//! scratch pair for the demo and benchmarks, the test harness's for the tests) and their workers.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use simflow_carddata::import::NoProgress;
use simflow_carddata::{CardFile, ImportReport, ImportRequest, Importer};
use simflow_inventory::org::{self, Receipt};
use simflow_outlet::OutletSettings;
use simflow_runtime::Settings;
use simflow_runtime::amqp::{Client, EventWatch, JobRoute};
use simflow_runtime::metrics::{Health, Metrics};
use simflow_runtime::settings::CardDataSettings;
use simflow_runtime::shutdown::CancellationToken;
use simflow_schemas::common::CardSelection;
use simflow_schemas::issue::{IssueCommit, IssuePrepare};
use simflow_schemas::transfer::TransferCreate;
use simflow_seal::{OutletKeyPair, OutletPublicKey};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Hexi's on-site-writing target warehouse in the seed org data (`config/org`).
pub const HEXI_TARGET: &str = "13ZDF16";
/// Hexi's target-warehouse keeper, who issues cards to agents (ESS staff ID with `ess_batch`).
pub const HEXI_KEEPER: &str = "T0601";
/// The card type of every world's cards.
pub const NORMAL: &str = "USIM128K_NORMAL";
/// The ICCID body of the first card a world receives.
pub const FIRST_BODY: u64 = 898_601_100_000_000_000;

/// `bytes` random bytes as lower-case hex (keys, key-encryption keys, passwords).
pub fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buffer = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buffer);
    hex::encode(buffer)
}

/// `count` random decimal digits (ADM1 codes).
pub fn random_digits(count: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..count)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

/// Gives the settings a key-encryption key generated for this run, under the id `kek_id` (a
/// real one comes from the environment or a secrets store, never from the repository).
pub fn generate_kek(settings: &mut CardDataSettings, kek_id: &str) {
    settings.kek_id = kek_id.into();
    settings.kek = Some(SecretString::from(random_hex(32)));
}

/// Migrates every crate's tables and loads the org seed data from `org_dir`; returns the pool
/// and what was loaded (units, staff bindings, agents).
pub async fn migrate_with_org(
    settings: &Settings,
    org_dir: &Path,
) -> anyhow::Result<(PgPool, (usize, usize, usize))> {
    let pool = crate::pipeline::migrate_all(settings).await?;
    let mut connection = pool.acquire().await?;
    let loaded = crate::commands::seed::load_org(&mut connection, org_dir).await?;
    drop(connection);
    Ok((pool, loaded))
}

/// A client on the settings' vhost, with the central topology declared.
pub async fn central_client(settings: &Settings, name: &str) -> anyhow::Result<Client> {
    let client = Client::connect_any(&settings.amqp.addresses(), name).await?;
    client
        .declare(&simflow_schemas::topology::central_topology(
            &settings.topology_params(),
        ))
        .await?;
    Ok(client)
}

/// The ICCID of ICCID body `body` (its Luhn check digit appended).
pub fn iccid(body: u64) -> anyhow::Result<String> {
    Ok(simflow_inventory::iccid::Iccid::from_body(&body.to_string())?.into_string())
}

/// A receipt of `count` consecutive blank cards from ICCID body `first_body`.
pub fn receipt(
    warehouse: &str,
    card_type: &str,
    department: &str,
    first_body: u64,
    count: u64,
) -> Receipt {
    Receipt {
        warehouse: warehouse.to_owned(),
        card_type: card_type.to_owned(),
        department_id: department.to_owned(),
        first_body,
        count,
    }
}

/// Receives the receipt's blank cards (the ledger names `reference`); returns their ICCIDs in
/// order.
pub async fn receive_cards(
    db: &mut PgConnection,
    receipt: &Receipt,
    reference: &str,
) -> anyhow::Result<Vec<String>> {
    org::receive_blank_cards(db, receipt, reference).await?;
    Ok(org::receipt_iccids(receipt)?
        .into_iter()
        .map(|iccid| iccid.into_string())
        .collect())
}

/// One card as the vendor's card data file describes it.
#[derive(Debug, Clone)]
pub struct VendorCard {
    /// ICCID.
    pub iccid: String,
    /// Ki, hex (generated).
    pub ki: String,
    /// OPc, hex (generated).
    pub opc: String,
    /// ADM1, 8 ASCII digits.
    pub adm1: String,
}

impl VendorCard {
    /// A card with generated Ki, OPc and ADM1.
    pub fn generated(iccid: String) -> VendorCard {
        VendorCard::with_adm1(iccid, random_digits(8))
    }

    /// A card with generated Ki and OPc and a given ADM1 (e.g. one a soft SIM was made with).
    pub fn with_adm1(iccid: String, adm1: String) -> VendorCard {
        VendorCard {
            iccid,
            ki: random_hex(16),
            opc: random_hex(16),
            adm1,
        }
    }
}

/// A vendor card data file (pySim-shell spelling) for these cards, IMSIs from `first_imsi`.
pub fn card_data_file(cards: &[VendorCard], first_imsi: u64) -> String {
    let mut text = String::from("ICCID,IMSI,KI,OPC,ADM1\n");
    for (index, card) in (0u64..).zip(cards) {
        text.push_str(&format!(
            "{},{:015},{},{},{}\n",
            card.iccid,
            first_imsi + index,
            card.ki,
            card.opc,
            card.adm1
        ));
    }
    text
}

/// Imports a card data file of normal cards given as text, as if `staff_id` uploaded it under
/// `file_name`.
pub async fn import_card_data(
    pool: &PgPool,
    settings: &CardDataSettings,
    file_name: &str,
    staff_id: &str,
    text: String,
) -> anyhow::Result<ImportReport> {
    let importer = Importer::from_settings(pool.clone(), settings)?;
    let request = ImportRequest {
        file_name: file_name.into(),
        card_type: NORMAL.into(),
        transport_key: None,
        staff_id: staff_id.into(),
    };
    Ok(importer
        .import(
            CardFile::Bytes(Arc::from(text.into_bytes())),
            &request,
            &NoProgress,
        )
        .await?)
}

/// Fills both number pools: `count` subscriber numbers from `first_msisdn`, `count` IMSIs from
/// `first_imsi`.
pub async fn fill_number_pools(
    db: &mut PgConnection,
    first_msisdn: u64,
    first_imsi: u64,
    count: u64,
) -> anyhow::Result<()> {
    simflow_writecard::numbers::add_msisdns(db, first_msisdn, count).await?;
    simflow_writecard::numbers::add_imsis(db, first_imsi, count).await?;
    Ok(())
}

/// Provisions outlet `code` of `agent` with the node's public key and a generated broker
/// password, on the settings' vhost; returns the password.
pub async fn provision_outlet(
    db: &mut PgConnection,
    client: &Client,
    settings: &Settings,
    code: &str,
    agent: &str,
    public_key: &OutletPublicKey,
) -> anyhow::Result<SecretString> {
    let password = SecretString::from(random_hex(16));
    simflow_writecard::outlets::provision(
        db,
        client,
        &simflow_runtime::management::Management::new(&settings.amqp),
        &settings.topology_params(),
        &simflow_writecard::outlets::Provisioning {
            outlet_code: code,
            agent_code: agent,
            public_key: &public_key.to_base64(),
            password: &password,
            vhost: &simflow_runtime::amqp::vhost_of(&settings.amqp.uri)?,
            by: "simflow world",
        },
    )
    .await?;
    Ok(password)
}

/// An outlet provisioned with a key pair generated in this process.
#[derive(Debug)]
pub struct ProvisionedOutlet {
    /// Outlet code.
    pub code: String,
    /// Its key pair (the node's secret).
    pub keys: OutletKeyPair,
    /// Its broker password.
    pub password: SecretString,
}

/// What a write-card world is made of: cards received into Hexi's target warehouse for
/// department DU06, the card data of some of them, number pools, and outlets of one agent.
#[derive(Debug)]
pub struct WritingPlan<'a> {
    /// How many cards (ICCIDs from [`FIRST_BODY`]).
    pub cards: u64,
    /// For how many of them (the first ones) the card data file is imported.
    pub with_card_data: usize,
    /// The first subscriber number of the pool.
    pub first_msisdn: u64,
    /// The first IMSI of the pool.
    pub first_imsi: u64,
    /// How many numbers and IMSIs the pools get.
    pub numbers: u64,
    /// The outlets to provision.
    pub outlets: &'a [&'a str],
    /// The agent the outlets belong to (and the cards are to be issued to).
    pub agent: &'a str,
    /// Who the receipt and the import name.
    pub by: &'a str,
}

/// A write-card world as [`prepare_writing`] leaves it (the cards not yet issued).
#[derive(Debug)]
pub struct Writing {
    /// The cards, in ICCID order.
    pub cards: Vec<VendorCard>,
    /// The outlets.
    pub outlets: Vec<ProvisionedOutlet>,
}

/// Builds everything of a write-card world that needs no worker: receives the cards, imports
/// the card data of the first `with_card_data` of them (the file's IMSIs, from
/// 001019990000000, are the vendor's; an order takes its IMSI from the pool), fills the number
/// pools and provisions the outlets with generated key pairs.
pub async fn prepare_writing(
    pool: &PgPool,
    client: &Client,
    settings: &Settings,
    plan: &WritingPlan<'_>,
) -> anyhow::Result<Writing> {
    let mut db = pool.acquire().await?;
    let receipt = receipt(HEXI_TARGET, NORMAL, "DU06", FIRST_BODY, plan.cards);
    let cards: Vec<VendorCard> = receive_cards(&mut db, &receipt, plan.by)
        .await?
        .into_iter()
        .map(VendorCard::generated)
        .collect();
    if plan.with_card_data > 0 {
        let file = card_data_file(&cards[..plan.with_card_data], 1_019_990_000_000);
        let file_name = format!("vendor-{}.csv", plan.by);
        import_card_data(pool, &settings.carddata, &file_name, plan.by, file).await?;
    }
    fill_number_pools(&mut db, plan.first_msisdn, plan.first_imsi, plan.numbers).await?;
    let mut outlets = Vec::new();
    for code in plan.outlets {
        let keys = OutletKeyPair::generate();
        let password = provision_outlet(
            &mut db,
            client,
            settings,
            code,
            plan.agent,
            &keys.public_key(),
        )
        .await?;
        outlets.push(ProvisionedOutlet {
            code: (*code).to_owned(),
            keys,
            password,
        });
    }
    Ok(Writing { cards, outlets })
}

/// The broker URI of outlet `code`'s own user: the central URI of the settings with the
/// outlet user's name and `password` in place of the central credentials.
pub fn outlet_uri(
    settings: &Settings,
    code: &str,
    password: &SecretString,
) -> anyhow::Result<SecretString> {
    use secrecy::ExposeSecret;
    let user = simflow_runtime::outlet::outlet_user(
        &simflow_runtime::amqp::vhost_of(&settings.amqp.uri)?,
        code,
    );
    let central = settings.amqp.uri.expose_secret();
    let (scheme, rest) = central
        .split_once("://")
        .ok_or_else(|| anyhow::anyhow!("amqp URI without scheme"))?;
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    Ok(SecretString::from(format!(
        "{scheme}://{}:{}@{host}",
        simflow_runtime::uri::encode_segment(&user),
        password.expose_secret()
    )))
}

/// Settings of a writer node for outlet `code` on `reader`, its key file (`<code>.key`) and
/// journal under `dir`, waiting `wait_seconds` for a card to be inserted or put back.
pub fn node_settings(
    code: &str,
    reader: &str,
    dir: &Path,
    broker_uri: SecretString,
    wait_seconds: u64,
) -> OutletSettings {
    OutletSettings {
        code: code.to_owned(),
        reader: reader.to_owned(),
        key_file: dir.join(format!("{code}.key")),
        journal: dir.join(format!("{code}.journal.sqlite")),
        broker_uri: Some(broker_uri),
        broker_failover_uris: Vec::new(),
        card_wait_seconds: wait_seconds,
        reinsert_wait_seconds: wait_seconds,
        // Nodes started in one process would all want the same port: the counter page is
        // served by nodes that ask for it (`simflow outlet run`, the counter tests).
        counter_listen: String::new(),
        counter_allow_remote: false,
        crm_origin: None,
        tls_ca_cert: None,
        tls_cert: None,
        tls_key: None,
        heartbeat_seconds: simflow_outlet::default_heartbeat(),
        key_grace_seconds: 600,
        reader_serials: Default::default(),
    }
}

/// A writer node running in this process.
#[derive(Debug)]
pub struct RunningNode {
    /// The node's settings (key file, journal), for restarts.
    pub settings: OutletSettings,
    /// `/healthz` state of the node (the clerk state is component `reader`).
    pub health: Health,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningNode {
    /// Starts a node with `settings` (no console: the clerk state goes to `health` only).
    pub fn start(settings: OutletSettings) -> RunningNode {
        let health = Health::default();
        let stop = CancellationToken::new();
        let task = {
            let settings = settings.clone();
            let health = health.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                simflow_outlet::run(&settings, Arc::new(Metrics::new()), health, false, stop).await
            })
        };
        RunningNode {
            settings,
            health,
            stop,
            task,
        }
    }

    /// What the node shows the clerk.
    pub fn clerk_state(&self) -> String {
        self.health
            .snapshot()
            .get("reader")
            .map(|reader| reader.state.clone())
            .unwrap_or_default()
    }

    /// Stops the node (a write in progress finishes first) and returns how it ended.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await?
    }

    /// Whether the node task has ended by itself (e.g. refused by the broker) within `within`,
    /// and how.
    pub async fn ended(self, within: Duration) -> anyhow::Result<anyhow::Result<()>> {
        Ok(tokio::time::timeout(within, self.task).await??)
    }
}

/// A transfer create job (调拨): `cards` of `card_type` from `source` down to `target`, asked
/// for by `staff`.
pub fn transfer_create(
    transfer_id: Uuid,
    staff: &str,
    source: &str,
    target: &str,
    card_type: &str,
    cards: CardSelection,
) -> TransferCreate {
    TransferCreate {
        transfer_id,
        staff_id: staff.into(),
        source_warehouse: source.into(),
        target_warehouse: target.into(),
        card_type: card_type.into(),
        cards,
    }
}

/// A batch issue prepare by Hexi's target-warehouse keeper, from Hexi's target warehouse.
pub fn issue_prepare(
    batch_id: Uuid,
    agent: &str,
    card_type: &str,
    cards: CardSelection,
) -> IssuePrepare {
    IssuePrepare {
        batch_id,
        staff_id: HEXI_KEEPER.into(),
        warehouse: HEXI_TARGET.into(),
        agent_ess_code: agent.into(),
        card_type: card_type.into(),
        cards,
    }
}

/// The final submission of a batch by Hexi's target-warehouse keeper.
pub fn issue_commit(batch_id: Uuid) -> IssueCommit {
    IssueCommit {
        batch_id,
        staff_id: HEXI_KEEPER.into(),
    }
}

/// Issues `quantity` normal cards of Hexi's target warehouse to `agent` the way the business
/// does (prepare, then commit, each answered within `timeout`), through an issue worker the
/// caller runs; fails if either step is refused.
pub async fn issue_to_agent(
    client: &Client,
    watch: &mut EventWatch,
    agent: &str,
    quantity: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let batch_id = Uuid::new_v4();
    let cards = CardSelection::Quantity {
        quantity: u32::try_from(quantity)?,
    };
    let prepare = issue_prepare(batch_id, agent, NORMAL, cards);
    let prepare_id = Uuid::new_v4().to_string();
    client
        .publish_job(&prepare, &prepare_id, JobRoute::Default)
        .await?;
    answered(watch, &prepare_id, timeout).await?;
    let commit_id = Uuid::new_v4().to_string();
    client
        .publish_job(&issue_commit(batch_id), &commit_id, JobRoute::Default)
        .await?;
    answered(watch, &commit_id, timeout).await
}

async fn answered(watch: &mut EventWatch, job_id: &str, timeout: Duration) -> anyhow::Result<()> {
    let answer = watch.next_for(job_id, timeout).await?;
    anyhow::ensure!(
        !answer.routing_key.ends_with("rejected"),
        "issuing the cards failed: {}",
        answer.body
    );
    Ok(())
}
