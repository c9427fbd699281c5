//! `simflow demo`: the main job. It prepares a vhost and database of its own (recreated on every
//! run, left in place afterwards for inspection), loads the org data, receives blank cards,
//! starts the workers in this process, pushes a realistic set of jobs through the real queues
//! and prints each job with its answer, the stock before and after, and the dead letters.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use simflow_inventory::org::{self, Receipt};
use simflow_runtime::Settings;
use simflow_runtime::amqp::{Client, EventWatch, JobRoute, ReceivedEvent};
use simflow_runtime::management::encode_segment;
use simflow_runtime::metrics::{Health, Metrics};
use simflow_runtime::shutdown::CancellationToken;
use simflow_schemas::common::CardSelection;
use simflow_schemas::registry::Message;
use simflow_schemas::topology::JOBS_EXCHANGE;
use simflow_schemas::transfer::{TransferApproveIn, TransferApproveOut, TransferCreate};
use sqlx::PgPool;
use uuid::Uuid;

use crate::pipeline::{self, WorkerKind};

/// Demo arguments.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Name of the demo's vhost and database.
    #[arg(long, default_value = "simflow_demo")]
    pub name: String,
}

/// The demo's world: settings, pool, client, event watch.
struct Demo {
    settings: Settings,
    pool: PgPool,
    client: Client,
    watch: EventWatch,
    step: usize,
}

impl Demo {
    /// Publishes a job, waits for its answer and prints both.
    async fn job<M: Message + serde::Serialize>(
        &mut self,
        what: &str,
        job: &M,
    ) -> anyhow::Result<ReceivedEvent> {
        let message_id = Uuid::new_v4().to_string();
        self.job_with_id(what, job, &message_id).await
    }

    async fn job_with_id<M: Message + serde::Serialize>(
        &mut self,
        what: &str,
        job: &M,
        message_id: &str,
    ) -> anyhow::Result<ReceivedEvent> {
        self.step += 1;
        println!("\n{:>2}. {what}", self.step);
        println!(
            "    → {} {}",
            M::TYPE,
            summarise(&serde_json::to_value(job)?)
        );
        self.client
            .publish_job(job, message_id, JobRoute::Default)
            .await?;
        let answer = self
            .watch
            .next_for(message_id, Duration::from_secs(30))
            .await?;
        print_answer(&answer);
        Ok(answer)
    }

    async fn stock(&self, title: &str) -> anyhow::Result<()> {
        let mut connection = self.pool.acquire().await?;
        let warehouses = simflow_inventory::queries::stock_by_warehouse(&mut connection).await?;
        super::inventory::print_stock(&format!("\n{title} per warehouse"), &warehouses);
        let agents = simflow_inventory::queries::stock_by_agent(&mut connection).await?;
        super::inventory::print_stock(&format!("{title} per agent"), &agents);
        Ok(())
    }
}

fn summarise(body: &serde_json::Value) -> String {
    let text = body.to_string();
    if text.chars().count() > 150 {
        format!("{}…", text.chars().take(150).collect::<String>())
    } else {
        text
    }
}

fn print_answer(answer: &ReceivedEvent) {
    let body = &answer.body;
    if answer.routing_key.ends_with(".rejected") || answer.routing_key.ends_with(".failed") {
        println!(
            "    ← {}: {} {} / {}",
            answer.routing_key,
            body["reason"]["code"].as_str().unwrap_or_default(),
            body["reason"]["message_zh"].as_str().unwrap_or_default(),
            body["reason"]["message_en"].as_str().unwrap_or_default()
        );
        if let Some(problems) = body["problems"].as_array() {
            for problem in problems.iter().take(5) {
                println!(
                    "        card {}: {} {}",
                    problem["iccid"].as_str().unwrap_or_default(),
                    problem["reason"]["code"].as_str().unwrap_or_default(),
                    problem["reason"]["message_zh"].as_str().unwrap_or_default()
                );
            }
        }
    } else {
        println!("    ← {} {}", answer.routing_key, summarise(body));
    }
}

fn transfer(
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

/// Runs the demo.
pub async fn run(settings: Settings, args: DemoArgs) -> anyhow::Result<()> {
    println!(
        "simflow demo — vhost and database {:?} on the local RabbitMQ and PostgreSQL",
        args.name
    );
    let settings = crate::scratch::Scratch::create(&settings, &args.name)
        .await?
        .settings;
    let pool = pipeline::migrate_all(&settings).await?;
    {
        let mut connection = pool.acquire().await?;
        let (units, staff, agents) =
            super::seed::load_org(&mut connection, std::path::Path::new("config/org")).await?;
        println!(
            "loaded org data: {units} units (two warehouses each), {staff} staff bindings, {agents} agents"
        );
        for (warehouse, department, card_type, first_body, count) in [
            (
                "130041",
                "DU06",
                "USIM128K_NORMAL",
                898_601_100_000_000_000_u64,
                1000,
            ),
            (
                "130041",
                "DU06",
                "USIM128K_MICRO",
                898_601_100_000_100_000,
                200,
            ),
            (
                "130040",
                "DU01",
                "USIM128K_NORMAL",
                898_601_100_000_200_000,
                500,
            ),
        ] {
            let receipt = Receipt {
                warehouse: warehouse.into(),
                card_type: card_type.into(),
                department_id: department.into(),
                first_body,
                count,
            };
            org::receive_blank_cards(&mut connection, &receipt, "demo").await?;
        }
    }
    let client = Client::connect(&settings.amqp.uri, "simflow-demo").await?;
    client
        .declare(&simflow_schemas::topology::central_topology(
            &settings.topology_params(),
        ))
        .await?;
    let watch = client.watch_events(&["#"]).await?;
    let shutdown = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    let workers = pipeline::start(
        &settings,
        &pool,
        WorkerKind::ALL.as_slice(),
        Arc::clone(&metrics),
        Health::default(),
        shutdown,
    )?;
    let mut demo = Demo {
        settings,
        pool: pool.clone(),
        client,
        watch,
        step: 0,
    };
    demo.stock("Stock before,").await?;

    println!("\n── Transfers (调拨, 下拨) with two approvals ──");
    let hexi = Uuid::new_v4();
    demo.job("Hexi's secondary warehouse asks to move 300 normal blank cards down to its on-site target warehouse",
        &transfer(hexi, "S0601", "130041", "13ZDF16", "USIM128K_NORMAL", CardSelection::Quantity { quantity: 300 })).await?;
    demo.job(
        "The target side tries to approve in before the source approved out",
        &TransferApproveIn {
            transfer_id: hexi,
            staff_id: "T0601".into(),
        },
    )
    .await?;
    demo.job(
        "A second-approver staff ID approves the transfer out (调出审核)",
        &TransferApproveOut {
            transfer_id: hexi,
            staff_id: "S0602".into(),
        },
    )
    .await?;
    demo.job(
        "The clerk clicks Approve again (the deck: \"once or twice\"): harmless",
        &TransferApproveOut {
            transfer_id: hexi,
            staff_id: "S0602".into(),
        },
    )
    .await?;
    demo.job(
        "The on-site target warehouse approves the transfer in (调入审核)",
        &TransferApproveIn {
            transfer_id: hexi,
            staff_id: "T0601".into(),
        },
    )
    .await?;

    let micro = Uuid::new_v4();
    demo.job(
        "Hexi moves a range of 50 micro cards",
        &transfer(
            micro,
            "S0601",
            "130041",
            "13ZDF16",
            "USIM128K_MICRO",
            CardSelection::Range {
                first: iccid(898_601_100_000_100_000)?,
                last: iccid(898_601_100_000_100_049)?,
            },
        ),
    )
    .await?;
    let job_id = Uuid::new_v4().to_string();
    let approve = TransferApproveOut {
        transfer_id: micro,
        staff_id: "S0601".into(),
    };
    demo.job_with_id("Approve out of the micro transfer", &approve, &job_id)
        .await?;
    demo.job_with_id("The same approval message delivered a second time: answered from the inbox, no second effect", &approve, &job_id).await?;
    demo.job(
        "Heping's keeper tries to approve Hexi's micro transfer in",
        &TransferApproveIn {
            transfer_id: micro,
            staff_id: "T0101".into(),
        },
    )
    .await?;
    demo.job(
        "Hexi's target keeper approves it in",
        &TransferApproveIn {
            transfer_id: micro,
            staff_id: "T0601".into(),
        },
    )
    .await?;

    demo.job(
        "Heping tries to send cards to Hexi's target warehouse (wrong direction)",
        &transfer(
            Uuid::new_v4(),
            "S0101",
            "130040",
            "13ZDF16",
            "USIM128K_NORMAL",
            CardSelection::Quantity { quantity: 10 },
        ),
    )
    .await?;
    demo.job(
        "Heping asks for more cards than it holds",
        &transfer(
            Uuid::new_v4(),
            "S0101",
            "130040",
            "13ZDF14",
            "USIM128K_NORMAL",
            CardSelection::Quantity { quantity: 501 },
        ),
    )
    .await?;
    demo.job(
        "A list with a micro card in a normal-card transfer and a card of another warehouse",
        &transfer(
            Uuid::new_v4(),
            "S0601",
            "130041",
            "13ZDF16",
            "USIM128K_NORMAL",
            CardSelection::Iccids {
                iccids: vec![
                    iccid(898_601_100_000_000_999)?,
                    iccid(898_601_100_000_100_100)?,
                    iccid(898_601_100_000_200_001)?,
                ],
            },
        ),
    )
    .await?;

    println!("\n── A poison message ──");
    demo.step += 1;
    println!(
        "\n{:>2}. An upstream system publishes a transfer job whose body is not JSON",
        demo.step
    );
    let poison_id = Uuid::new_v4().to_string();
    demo.client
        .publish_raw(
            JOBS_EXCHANGE,
            "transfer",
            Some("transfer.create.v1"),
            &poison_id,
            b"{\"transfer_id\": oops",
        )
        .await?;
    let failed = demo
        .watch
        .next_for(&poison_id, Duration::from_secs(30))
        .await?;
    print_answer(&failed);

    demo.stock("Stock after,").await?;
    let letters =
        simflow_runtime::deadletter::list(demo.client.connection(), "simflow.transfer.dlq", 10)
            .await?;
    println!("\nDead letters in simflow.transfer.dlq: {}", letters.len());
    for letter in &letters {
        println!(
            "    {} {} {} / {} (worker {}, attempts {})",
            letter.message_id.as_deref().unwrap_or("-"),
            letter.reason_code,
            letter.reason_zh.as_deref().unwrap_or_default(),
            letter.reason_en.as_deref().unwrap_or_default(),
            letter.worker.as_deref().unwrap_or("-"),
            letter.attempts.unwrap_or_default()
        );
    }
    let committed = metrics.jobs_settled();
    println!(
        "\nJobs settled by the workers: {committed}; inbox hits: {}",
        metrics.inbox_hits.with_label_values(&["transfer"]).get()
    );
    workers.stop().await?;
    demo.client.close().await;
    pool.close().await;
    println!(
        "\nThe demo's vhost and database {:?} stay for inspection, e.g.:\n    SIMFLOW__AMQP__URI='amqp://guest:guest@127.0.0.1:5672/{}' SIMFLOW__DATABASE__URL='postgres://postgres@127.0.0.1:5432/{}' target/debug/simflow dlq list",
        args.name,
        encode_segment(&args.name),
        args.name
    );
    let _ = demo.settings;
    Ok(())
}

fn iccid(body: u64) -> anyhow::Result<String> {
    Ok(simflow_inventory::iccid::Iccid::from_body(&body.to_string())?.into_string())
}
