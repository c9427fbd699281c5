//! `simflow demo`: the main job. It prepares a vhost and database of its own (recreated on every
//! run, left in place afterwards for inspection), loads the org data, receives blank cards,
//! starts the workers in this process, pushes a realistic set of jobs through the real queues
//! and prints each job with its answer, the stock before and after, and the dead letters.

use std::time::Duration;

use clap::Args;
use simflow_runtime::Settings;
use simflow_runtime::amqp::{Client, EventWatch, JobRoute, ReceivedEvent};
use simflow_runtime::uri::encode_segment;
use simflow_schemas::common::{CardSelection, ReturnSelection};
use simflow_schemas::registry::Message;
use simflow_schemas::returns::{ReturnByList, ReturnByRange, ReturnFee, ReturnQuery};
use simflow_schemas::topology::JOBS_EXCHANGE;
use simflow_schemas::transfer::{TransferApproveIn, TransferApproveOut};
use sqlx::PgPool;
use uuid::Uuid;

use crate::pipeline::{self, WorkerKind};
use crate::world::{self, VendorCard, iccid};

mod counter;

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
    } else if answer.routing_key == "return.committed" {
        println!(
            "    ← return.committed: {} / {}; paid {} of {} fen ({})",
            body["summary"]["message_zh"].as_str().unwrap_or_default(),
            body["summary"]["message_en"].as_str().unwrap_or_default(),
            body["fee"]["paid_amount_fen"],
            body["fee"]["return_amount_fen"],
            body["fee"]["rule"].as_str().unwrap_or_default()
        );
        for problem in body["failed"].as_array().into_iter().flatten().take(5) {
            println!(
                "        card {}: {} {}",
                problem["iccid"].as_str().unwrap_or_default(),
                problem["reason"]["code"].as_str().unwrap_or_default(),
                problem["reason"]["message_zh"].as_str().unwrap_or_default()
            );
        }
    } else if answer.routing_key == "issue.prepared" {
        println!(
            "    ← issue.prepared: {} cards held until {}",
            body["card_count"],
            body["expires_at"].as_str().unwrap_or_default()
        );
    } else {
        println!("    ← {} {}", answer.routing_key, summarise(body));
    }
}

/// Runs the demo.
pub async fn run(settings: Settings, args: DemoArgs) -> anyhow::Result<()> {
    println!(
        "simflow demo — vhost and database {:?} on the local RabbitMQ and PostgreSQL",
        args.name
    );
    let mut settings = crate::scratch::Scratch::create(&settings, &args.name)
        .await?
        .settings;
    // The demo's key-encryption key is made up for this run.
    if settings.carddata.kek.is_none() {
        world::generate_kek(&mut settings.carddata, "demo");
    }
    let (pool, (units, staff, agents)) =
        world::migrate_with_org(&settings, std::path::Path::new("config/org")).await?;
    println!(
        "loaded org data: {units} units (two warehouses each), {staff} staff bindings, {agents} agents"
    );
    {
        let mut connection = pool.acquire().await?;
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
            let receipt = world::receipt(warehouse, card_type, department, first_body, count);
            world::receive_cards(&mut connection, &receipt, "demo").await?;
        }
    }
    let client = world::central_client(&settings, "simflow-demo").await?;
    let watch = client.watch_events(&["#"]).await?;
    let workers = pipeline::start_own(&settings, &pool, WorkerKind::ALL.as_slice())?;
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
        &world::transfer_create(hexi, "S0601", "130041", "13ZDF16", "USIM128K_NORMAL", CardSelection::Quantity { quantity: 300 })).await?;
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
        &world::transfer_create(
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
        &world::transfer_create(
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
        &world::transfer_create(
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
        &world::transfer_create(
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

    demo_agents(&mut demo).await?;
    demo_card_data(&mut demo).await?;
    counter::run(&mut demo).await?;

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
    {
        let mut connection = demo.pool.acquire().await?;
        let reconciliation = simflow_inventory::queries::reconcile(&mut connection, 10).await?;
        println!(
            "\nReconciliation: the ledger ({} entries) replays to the current state of all {} cards with {} disagreement(s)",
            reconciliation.entries,
            reconciliation.cards,
            reconciliation.mismatches.len()
        );
    }
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
    let metrics = &workers.metrics;
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

/// Batch issue to agents and batch return from them (workflows 2 and 3 of the deck).
async fn demo_agents(demo: &mut Demo) -> anyhow::Result<()> {
    println!("\n── Batch issue to agents (批量领卡): prepare, then final submission ──");
    let first_batch = Uuid::new_v4();
    let prepared = demo
        .job(
            "Hexi's on-site keeper issues 100 normal cards by range to agent ESS0601",
            &world::issue_prepare(
                first_batch,
                "ESS0601",
                "USIM128K_NORMAL",
                CardSelection::Range {
                    first: iccid(898_601_100_000_000_000)?,
                    last: iccid(898_601_100_000_000_099)?,
                },
            ),
        )
        .await?;
    println!("    批量领卡成功，确认正式提交？ — the acceptance slip (免填单):");
    for line in prepared.body["acceptance_slip"]
        .as_str()
        .unwrap_or_default()
        .lines()
    {
        println!("      | {line}");
    }
    let commit = world::issue_commit(first_batch);
    demo.job(
        "The keeper confirms the final submission (正式提交)",
        &commit,
    )
    .await?;
    demo.job("…and clicks confirm once more: harmless", &commit)
        .await?;

    let second_batch = Uuid::new_v4();
    let file: String = (100..150)
        .map(|offset| iccid(898_601_100_000_000_000 + offset))
        .collect::<anyhow::Result<Vec<_>>>()?
        .join("\n");
    demo.job(
        "50 cards to agent ESS0602 from an uploaded text file",
        &world::issue_prepare(
            second_batch,
            "ESS0602",
            "USIM128K_NORMAL",
            CardSelection::TextFile {
                file_name: "lingka-ESS0602.txt".into(),
                content: file,
            },
        ),
    )
    .await?;
    demo.job("Final submission", &world::issue_commit(second_batch))
        .await?;
    demo.job(
        "A micro card slipped into a normal-card batch: refused, nothing held",
        &world::issue_prepare(
            Uuid::new_v4(),
            "ESS0601",
            "USIM128K_NORMAL",
            CardSelection::Iccids {
                iccids: vec![
                    iccid(898_601_100_000_000_200)?,
                    iccid(898_601_100_000_100_010)?,
                ],
            },
        ),
    )
    .await?;
    demo.job(
        "An agent of another unit cannot be served from Hexi's warehouse",
        &world::issue_prepare(
            Uuid::new_v4(),
            "ESS0101",
            "USIM128K_NORMAL",
            CardSelection::Quantity { quantity: 5 },
        ),
    )
    .await?;

    println!("\n── Batch return from agents (批量退卡) ──");
    let mut lines: Vec<String> = (0..10)
        .map(|offset| iccid(898_601_100_000_000_000 + offset))
        .collect::<anyhow::Result<_>>()?;
    lines.push(iccid(898_601_100_000_000_120)?);
    lines.push(iccid(898_601_100_000_000_121)?);
    demo.job(
        "ESS0601 returns a text file of 12 cards, two of which were issued to ESS0602; 12.00 yuan entered",
        &ReturnByList {
            return_id: Uuid::new_v4(),
            staff_id: "T0601".into(),
            warehouse: "13ZDF16".into(),
            agent_ess_code: "ESS0601".into(),
            cards: ReturnSelection::TextFile { file_name: "tuika-ESS0601.txt".into(), content: lines.join("\n") },
            fee: ReturnFee { return_amount_fen: 1200 },
        },
    )
    .await?;
    let (first, last) = (
        iccid(898_601_100_000_000_130)?,
        iccid(898_601_100_000_000_149)?,
    );
    demo.job(
        "ESS0602 asks what a range of 20 cards would bring back (query step)",
        &ReturnQuery {
            query_id: Uuid::new_v4(),
            staff_id: "T0601".into(),
            warehouse: "13ZDF16".into(),
            agent_ess_code: "ESS0602".into(),
            first: first.clone(),
            last: last.clone(),
        },
    )
    .await?;
    demo.job(
        "…and returns the range; 20.00 yuan entered",
        &ReturnByRange {
            return_id: Uuid::new_v4(),
            staff_id: "T0601".into(),
            warehouse: "13ZDF16".into(),
            agent_ess_code: "ESS0602".into(),
            first,
            last,
            fee: ReturnFee {
                return_amount_fen: 2000,
            },
        },
    )
    .await?;
    demo.job(
        "ESS0601 tries to return two of ESS0602's cards: 卡库位不一致, nothing returned",
        &ReturnByList {
            return_id: Uuid::new_v4(),
            staff_id: "T0601".into(),
            warehouse: "13ZDF16".into(),
            agent_ess_code: "ESS0601".into(),
            cards: ReturnSelection::Iccids {
                iccids: vec![
                    iccid(898_601_100_000_000_110)?,
                    iccid(898_601_100_000_000_111)?,
                ],
            },
            fee: ReturnFee {
                return_amount_fen: 200,
            },
        },
    )
    .await?;
    Ok(())
}

/// The demo's vendor ADM1 of the card with ICCID body `body`: derived from the body, so the
/// demo's soft SIMs can be made with it.
fn adm1(body: u64) -> String {
    format!("{:08}", 10_000_000 + body % 1_000_000)
}

/// The vendor's card data file for cards `first_body ..` (generated keys), with `bad` rows
/// spoiled the ways vendor files go wrong.
pub fn vendor_file(
    first_body: u64,
    count: u64,
    first_imsi: u64,
    bad: bool,
) -> anyhow::Result<String> {
    let mut cards = (first_body..first_body + count)
        .map(|body| Ok(VendorCard::with_adm1(iccid(body)?, adm1(body))))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if bad {
        if let Some(card) = cards.get_mut(12) {
            // A wrong check digit.
            let last = card
                .iccid
                .pop()
                .and_then(|digit| digit.to_digit(10))
                .unwrap_or(0);
            card.iccid
                .push(char::from_digit((last + 1) % 10, 10).unwrap_or('0'));
        }
        if let Some(card) = cards.get_mut(20) {
            card.ki.truncate(30);
        }
    }
    Ok(world::card_data_file(&cards, first_imsi))
}

/// Card data file import (号卡文件): the keys the write path needs, encrypted at rest.
async fn demo_card_data(demo: &mut Demo) -> anyhow::Result<()> {
    println!("\n── Card data file import (号卡文件) ──");
    demo.step += 1;
    println!(
        "\n{:>2}. The vendor's card data file for the 150 cards issued to agents arrives; two rows are spoiled",
        demo.step
    );
    let file = vendor_file(898_601_100_000_000_000, 150, 1_019_000_000_000, true)?;
    let report = world::import_card_data(
        &demo.pool,
        &demo.settings.carddata,
        "vendor-batch-0042.csv",
        "S0601",
        file,
    )
    .await?;
    println!(
        "    ← {} rows imported, {} refused (keys encrypted at rest; no key value is ever printed):",
        report.accepted, report.rejected
    );
    for problem in report.problems.iter().take(5) {
        println!(
            "        line {} {}: {} {} / {}",
            problem.line,
            problem.column.as_deref().unwrap_or("-"),
            problem.code,
            problem.message_zh,
            problem.message_en
        );
    }
    Ok(())
}
