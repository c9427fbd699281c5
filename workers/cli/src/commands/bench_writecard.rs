//! `simflow bench writecard`: write requests per second through the central write-card worker
//! (checks, reservations, key look-up and decryption, script building, sealing, routing to the
//! outlet's queue), next to the raw broker round trip of same-size messages at the same
//! prefetch, in the same run. Outlets are not part of it: the clock stops when every request's
//! sealed script sits in the outlet's queue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::StreamExt;
use secrecy::SecretString;
use simflow_carddata::import::{CardFile, ImportRequest, NoProgress};
use simflow_inventory::org::{self, Receipt};
use simflow_runtime::Settings;
use simflow_runtime::amqp::{Client, JobRoute};
use simflow_runtime::metrics::{Health, Metrics};
use simflow_runtime::shutdown::CancellationToken;
use simflow_schemas::common::CardSelection;
use simflow_schemas::issue::{IssueCommit, IssuePrepare};
use simflow_schemas::writecard::WriteRequest;
use simflow_seal::OutletKeyPair;

use crate::pipeline::{self, WorkerKind};

/// Arguments of `bench writecard`.
#[derive(Debug, Args)]
pub struct WritecardBenchArgs {
    /// Write requests per measurement.
    #[arg(long, default_value_t = 1000)]
    pub requests: usize,
    /// Prefetch values to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,50")]
    pub prefetch: Vec<u16>,
}

const FIRST_BODY: u64 = 898_601_100_000_000_000;
const FIRST_MSISDN: u64 = 13_000_000_000;
const FIRST_IMSI: u64 = 1_010_000_000_000;

fn hex_random(bytes: usize) -> String {
    use rand::RngCore;
    let mut buffer = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buffer);
    buffer.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Runs the benchmark.
pub async fn run(settings: Settings, args: WritecardBenchArgs) -> anyhow::Result<()> {
    let name = format!(
        "simflow_bench_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let scratch = crate::scratch::Scratch::create(&settings, &name).await?;
    let mut settings = scratch.settings.clone();
    settings.carddata.kek_id = "bench".into();
    settings.carddata.kek = Some(SecretString::from(hex_random(32)));
    let result = measure(&settings, &args).await;
    scratch.remove().await;
    result
}

async fn measure(settings: &Settings, args: &WritecardBenchArgs) -> anyhow::Result<()> {
    let total = u64::try_from(args.requests * args.prefetch.len())?;
    let pool = pipeline::migrate_all(settings).await?;
    let iccids: Vec<String> = {
        let mut connection = pool.acquire().await?;
        crate::commands::seed::load_org(&mut connection, std::path::Path::new("config/org"))
            .await?;
        let receipt = Receipt {
            warehouse: "13ZDF16".into(),
            card_type: "USIM128K_NORMAL".into(),
            department_id: "DU06".into(),
            first_body: FIRST_BODY,
            count: total,
        };
        org::receive_blank_cards(&mut connection, &receipt, "bench").await?;
        simflow_writecard::numbers::add_msisdns(&mut connection, FIRST_MSISDN, total).await?;
        simflow_writecard::numbers::add_imsis(&mut connection, FIRST_IMSI, total).await?;
        org::receipt_iccids(&receipt)?
            .into_iter()
            .map(|iccid| iccid.into_string())
            .collect()
    };
    // The vendor's card data file for every card.
    let mut file = String::from("ICCID,IMSI,KI,OPC,ADM1\n");
    for (index, iccid) in iccids.iter().enumerate() {
        file.push_str(&format!(
            "{iccid},{:015},{},{},{:08}\n",
            1_019_000_000_000 + index as u64,
            hex_random(16),
            hex_random(16),
            index % 100_000_000
        ));
    }
    let importer = simflow_carddata::Importer::from_settings(pool.clone(), &settings.carddata)?;
    let request = ImportRequest {
        file_name: "bench.csv".into(),
        card_type: "USIM128K_NORMAL".into(),
        transport_key: None,
        staff_id: "bench".into(),
    };
    importer
        .import(
            CardFile::Bytes(Arc::from(file.into_bytes())),
            &request,
            &NoProgress,
        )
        .await?;

    let client = Client::connect(&settings.amqp.uri, "simflow-bench-client").await?;
    client
        .declare(&simflow_schemas::topology::central_topology(
            &settings.topology_params(),
        ))
        .await?;
    let management = simflow_runtime::management::Management::new(&settings.amqp);
    let keys = OutletKeyPair::generate();
    let vhost = simflow_runtime::amqp::vhost_of(&settings.amqp.uri)?;
    {
        let mut connection = pool.acquire().await?;
        simflow_writecard::outlets::provision(
            &mut connection,
            &client,
            &management,
            &settings.topology_params(),
            &simflow_writecard::outlets::Provisioning {
                outlet_code: "BENCH01",
                agent_code: "ESS0601",
                public_key: &keys.public_key().to_base64(),
                password: &SecretString::from(hex_random(16)),
                vhost: &vhost,
            },
        )
        .await?;
    }
    // Issue every card to the outlet's agent.
    let mut watch = client.watch_events(&["issue.*"]).await?;
    let batch_id = uuid::Uuid::new_v4();
    let prepare = IssuePrepare {
        batch_id,
        staff_id: "T0601".into(),
        warehouse: "13ZDF16".into(),
        agent_ess_code: "ESS0601".into(),
        card_type: "USIM128K_NORMAL".into(),
        cards: CardSelection::Quantity {
            quantity: u32::try_from(total)?,
        },
    };
    let issue_workers = pipeline::start(
        settings,
        &pool,
        &[WorkerKind::Issue],
        Arc::new(Metrics::new()),
        Health::default(),
        CancellationToken::new(),
    )?;
    let id = uuid::Uuid::new_v4().to_string();
    client.publish_job(&prepare, &id, JobRoute::Default).await?;
    watch.next_for(&id, Duration::from_secs(120)).await?;
    let id = uuid::Uuid::new_v4().to_string();
    client
        .publish_job(
            &IssueCommit {
                batch_id,
                staff_id: "T0601".into(),
            },
            &id,
            JobRoute::Default,
        )
        .await?;
    watch.next_for(&id, Duration::from_secs(120)).await?;
    issue_workers.stop().await?;

    let sample = WriteRequest {
        order_id: uuid::Uuid::new_v4(),
        outlet_code: "BENCH01".into(),
        staff_id: "C0601".into(),
        iccid: iccids[0].clone(),
        msisdn: FIRST_MSISDN.to_string(),
        customer_name: "张三丰".into(),
        package_code: "3G-96".into(),
    };
    let body_size = serde_json::to_vec(&sample)?.len();
    println!(
        "bench writecard: {} write.request.v1 jobs ({} bytes) per run; the clock stops when every sealed script is routed",
        args.requests, body_size
    );
    println!(
        "{:>9} {:>16} {:>18} {:>8}",
        "prefetch", "raw broker msg/s", "write requests/s", "ratio"
    );
    for (run, prefetch) in args.prefetch.iter().enumerate() {
        let raw = simflow_runtime::bench::raw_round_trip(
            &settings.amqp.uri,
            body_size,
            args.requests,
            *prefetch,
            1000,
        )
        .await?;
        let mut run_settings = settings.clone();
        run_settings.amqp.prefetch = *prefetch;
        let workers = pipeline::start(
            &run_settings,
            &pool,
            &[WorkerKind::WriteCard],
            Arc::new(Metrics::new()),
            Health::default(),
            CancellationToken::new(),
        )?;
        let offset = run * args.requests;
        let requests: Vec<WriteRequest> = (0..args.requests)
            .map(|index| WriteRequest {
                order_id: uuid::Uuid::new_v4(),
                iccid: iccids[offset + index].clone(),
                msisdn: (FIRST_MSISDN + (offset + index) as u64).to_string(),
                ..sample.clone()
            })
            .collect();
        let already: i64 = sqlx::query_scalar("SELECT count(*) FROM writecard.scripts")
            .fetch_one(&pool)
            .await?;
        let started = Instant::now();
        let mut publishing = futures_util::stream::iter(requests.iter())
            .map(|request| {
                let client = &client;
                async move {
                    client
                        .publish_job(
                            request,
                            &uuid::Uuid::new_v4().to_string(),
                            JobRoute::Default,
                        )
                        .await
                }
            })
            .buffer_unordered(500);
        while let Some(result) = publishing.next().await {
            result?;
        }
        let wanted = already + i64::try_from(args.requests)?;
        loop {
            let routed: i64 = sqlx::query_scalar("SELECT count(*) FROM writecard.scripts")
                .fetch_one(&pool)
                .await?;
            if routed >= wanted {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(600),
                "only {} of {} scripts routed",
                routed - already,
                args.requests
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ours = args.requests as f64 / started.elapsed().as_secs_f64();
        workers.stop().await?;
        println!(
            "{:>9} {:>16.0} {:>18.0} {:>7.1}%",
            prefetch,
            raw.per_second(),
            ours,
            100.0 * ours / raw.per_second()
        );
    }
    client.close().await;
    pool.close().await;
    Ok(())
}
