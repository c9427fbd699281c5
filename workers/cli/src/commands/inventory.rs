//! `simflow inventory`: stock per warehouse, agent or card type; one card's history; the
//! reconciliation of the ledger with the card table; a return's per-card detail. Human output
//! by default, `--json` for tools.

use clap::{Subcommand, ValueEnum};
use simflow_inventory::queries::{self, StockLine};
use simflow_runtime::Settings;

/// Stock groupings.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StockBy {
    /// Per warehouse (and in transit).
    Warehouse,
    /// Per agent.
    Agent,
    /// Per card type, wherever the cards are.
    Type,
}

/// Inventory queries.
#[derive(Debug, Subcommand)]
pub enum InventoryCommand {
    /// Stock per warehouse, agent or card type, and state.
    Stock {
        /// The grouping.
        #[arg(long, value_enum, default_value = "warehouse")]
        by: StockBy,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One card's state and full ledger history.
    Card {
        /// The ICCID.
        iccid: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replay the ledger and compare it with the card table.
    Reconcile {
        /// At most this many disagreements listed.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A batch return's answer and every failed card.
    Return {
        /// The return id.
        return_id: uuid::Uuid,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Prints stock lines as a table.
pub fn print_stock(title: &str, lines: &[StockLine]) {
    println!("{title}");
    println!(
        "    {:<12} {:<18} {:<8} {:>8}",
        "place", "card type", "state", "cards"
    );
    for line in lines {
        println!(
            "    {:<12} {:<18} {:<8} {:>8}",
            line.place, line.card_type, line.state, line.cards
        );
    }
    if lines.is_empty() {
        println!("    (none)");
    }
}

/// Runs an inventory query.
pub async fn run(settings: &Settings, command: InventoryCommand) -> anyhow::Result<()> {
    let pool = crate::pipeline::migrate_all(settings).await?;
    // Reports only: they may read from a replica (`database.read_url`).
    let reads = simflow_runtime::db::read_pool(&settings.database, &pool)?;
    let mut db = reads.acquire().await?;
    match command {
        InventoryCommand::Stock { by, json } => {
            let lines = match by {
                StockBy::Warehouse => queries::stock_by_warehouse(&mut db).await?,
                StockBy::Agent => queries::stock_by_agent(&mut db).await?,
                StockBy::Type => queries::stock_by_card_type(&mut db).await?,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&lines)?);
            } else {
                print_stock(&format!("Stock by {by:?}:").to_lowercase(), &lines);
            }
        }
        InventoryCommand::Card { iccid, json } => {
            let Some(history) = queries::card_history(&mut db, &iccid).await? else {
                anyhow::bail!("no card {iccid}");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&history)?);
            } else {
                println!(
                    "{} {} {} at {}",
                    history.iccid, history.card_type, history.state, history.location
                );
                for entry in &history.entries {
                    println!(
                        "    #{:<8} {} {:<13} {} → {} ({}) {} {}",
                        entry.entry_id,
                        entry.at.format("%Y-%m-%d %H:%M:%S"),
                        entry.event,
                        entry.from_location.as_deref().unwrap_or("-"),
                        entry.to_location,
                        entry.state_after,
                        entry.reference.as_deref().unwrap_or(""),
                        entry.staff_id.as_deref().unwrap_or("")
                    );
                }
            }
        }
        InventoryCommand::Reconcile { limit, json } => {
            let result = queries::reconcile(&mut db, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                println!(
                    "reconciled {} cards against {} ledger entries: {} disagreement(s)",
                    result.cards,
                    result.entries,
                    result.mismatches.len()
                );
                for mismatch in &result.mismatches {
                    println!(
                        "    {} {}: ledger {} / now {}",
                        mismatch.iccid,
                        mismatch.problem,
                        mismatch.ledger.as_deref().unwrap_or("-"),
                        mismatch.current.as_deref().unwrap_or("-")
                    );
                }
            }
            if !result.mismatches.is_empty() {
                anyhow::bail!("the ledger and the card table disagree");
            }
        }
        InventoryCommand::Return { return_id, json } => {
            let detail = simflow_inventory::returns::detail(&mut db, return_id).await?;
            let Some(detail) = detail else {
                anyhow::bail!("no return {return_id}")
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&detail)?);
            } else {
                let answer = &detail.answer;
                println!(
                    "return {}: {} / {}; paid {} fen of {} entered",
                    return_id,
                    answer.summary.message_zh,
                    answer.summary.message_en,
                    answer.fee.paid_amount_fen,
                    answer.fee.return_amount_fen
                );
                for iccid in &detail.returned {
                    println!("    {iccid} returned");
                }
                for (iccid, code) in &detail.failed {
                    let reason = simflow_inventory::cards::reason_by_code(code);
                    println!("    {iccid} {code} {} / {}", reason.zh, reason.en);
                }
            }
        }
    }
    drop(db);
    pool.close().await;
    Ok(())
}
