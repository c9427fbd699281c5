//! `simflow writers`: the writer ledger (写卡器发放明细). The steps (purchase, issue, return,
//! repair, write-off) publish their job like `simflow publish` does, checked against the
//! contract, and with `--wait` print the answer; `list`, `history` and `flags` read the
//! database. Human output by default, `--json` for tools.

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use simflow_inventory::writers::{self, Holder, Writer};
use simflow_runtime::Settings;
use simflow_schemas::Message;
use simflow_schemas::writers::{
    RepairDirection, WriterIssue, WriterPurchase, WriterRepair, WriterReturn, WriterWriteOff,
};

/// How a step's job is sent.
#[derive(Debug, Args)]
pub struct Sending {
    /// The message id (default: a new UUID). Re-use one to re-send the same job.
    #[arg(long)]
    pub message_id: Option<String>,
    /// Wait this many seconds for the answer and print it.
    #[arg(long)]
    pub wait: Option<u64>,
}

/// Which way a repair goes.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Direction {
    /// To the repairer.
    Out,
    /// Back from the repairer.
    Back,
}

/// The writer ledger.
#[derive(Debug, Subcommand)]
pub enum WritersCommand {
    /// Record a writer the market department bought for a branch (`writer.purchase.v1`).
    Purchase {
        /// The writer's serial, as its reader reports it.
        serial: String,
        /// Its model.
        #[arg(long)]
        model: String,
        /// The purchase reference.
        #[arg(long = "ref")]
        purchase_ref: String,
        /// The branch's secondary warehouse code.
        #[arg(long)]
        branch: String,
        /// The acting staff ID (`writer_purchase`).
        #[arg(long)]
        staff: String,
        #[command(flatten)]
        sending: Sending,
    },
    /// Issue a writer in the branch's stock to an outlet (`writer.issue.v1`).
    Issue {
        /// The writer's serial.
        serial: String,
        /// The branch's secondary warehouse code.
        #[arg(long)]
        branch: String,
        /// The outlet.
        #[arg(long)]
        outlet: String,
        /// The acting staff ID (`writers`).
        #[arg(long)]
        staff: String,
        #[command(flatten)]
        sending: Sending,
    },
    /// Take a writer back from its outlet (`writer.return.v1`).
    Return {
        /// The writer's serial.
        serial: String,
        /// The branch's secondary warehouse code.
        #[arg(long)]
        branch: String,
        /// The acting staff ID (`writers`).
        #[arg(long)]
        staff: String,
        #[command(flatten)]
        sending: Sending,
    },
    /// Send a writer for repair or take it back (`writer.repair.v1`).
    Repair {
        /// The writer's serial.
        serial: String,
        /// Out to the repairer, or back.
        #[arg(long, value_enum)]
        direction: Direction,
        /// The branch's secondary warehouse code.
        #[arg(long)]
        branch: String,
        /// The acting staff ID (`writers`).
        #[arg(long)]
        staff: String,
        #[command(flatten)]
        sending: Sending,
    },
    /// Write a writer off, for good (`writer.write_off.v1`).
    WriteOff {
        /// The writer's serial.
        serial: String,
        /// Why.
        #[arg(long)]
        reason: String,
        /// The branch's secondary warehouse code.
        #[arg(long)]
        branch: String,
        /// The acting staff ID (`writers`).
        #[arg(long)]
        staff: String,
        #[command(flatten)]
        sending: Sending,
    },
    /// Which writers each branch, agent and outlet holds.
    List {
        /// Only the writer of this outlet.
        #[arg(long, conflicts_with_all = ["agent", "branch"])]
        outlet: Option<String>,
        /// Only writers issued to this agent's outlets (ESS department code).
        #[arg(long, conflicts_with = "branch")]
        agent: Option<String>,
        /// Only this branch's writers (secondary warehouse code), wherever they are.
        #[arg(long)]
        branch: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One writer's ledger.
    History {
        /// The writer's serial.
        serial: String,
    },
    /// Outlets seen with a reader not issued to them, newest first.
    Flags {
        /// Only this outlet's.
        #[arg(long)]
        outlet: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

async fn publish<M: Message>(
    settings: &Settings,
    message: &M,
    sending: Sending,
) -> anyhow::Result<()> {
    let body = serde_json::to_vec(message)?;
    super::publish::send(
        settings,
        M::TYPE,
        &body,
        sending.message_id,
        None,
        sending.wait,
    )
    .await
}

#[derive(Serialize)]
struct Line<'a> {
    writer_serial: &'a str,
    model: &'a str,
    branch: &'a str,
    state: simflow_inventory::states::WriterState,
    agent_ess_code: Option<&'a str>,
    outlet_code: Option<&'a str>,
    purchase_ref: &'a str,
    moved_at: chrono::DateTime<chrono::Utc>,
}

/// A state's or event's name as the database and JSON spell it (`in_stock`, `repair_out`).
fn name<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn print_writers(writers: &[Writer]) {
    println!(
        "{:<8} {:<12} {:<10} {:<24} {:<12} {:<12} moved",
        "branch", "agent", "outlet", "serial", "model", "state"
    );
    for writer in writers {
        let state = name(&writer.state);
        println!(
            "{:<8} {:<12} {:<10} {:<24} {:<12} {:<12} {}",
            writer.branch_code,
            writer.agent_code.as_deref().unwrap_or("-"),
            writer.outlet_code.as_deref().unwrap_or("-"),
            writer.writer_serial,
            writer.model,
            state,
            writer.moved_at.format("%Y-%m-%d %H:%M:%S"),
        );
    }
    if writers.is_empty() {
        println!("(none)");
    }
}

/// Runs a writer ledger command.
pub async fn run(settings: &Settings, command: WritersCommand) -> anyhow::Result<()> {
    match command {
        WritersCommand::Purchase {
            serial,
            model,
            purchase_ref,
            branch,
            staff,
            sending,
        } => {
            let purchase = WriterPurchase {
                writer_serial: serial,
                model,
                purchase_ref,
                branch,
                staff_id: staff,
            };
            publish(settings, &purchase, sending).await
        }
        WritersCommand::Issue {
            serial,
            branch,
            outlet,
            staff,
            sending,
        } => {
            let issue = WriterIssue {
                writer_serial: serial,
                branch,
                outlet_code: outlet,
                staff_id: staff,
            };
            publish(settings, &issue, sending).await
        }
        WritersCommand::Return {
            serial,
            branch,
            staff,
            sending,
        } => {
            let back = WriterReturn {
                writer_serial: serial,
                branch,
                staff_id: staff,
            };
            publish(settings, &back, sending).await
        }
        WritersCommand::Repair {
            serial,
            direction,
            branch,
            staff,
            sending,
        } => {
            let repair = WriterRepair {
                writer_serial: serial,
                branch,
                direction: match direction {
                    Direction::Out => RepairDirection::Out,
                    Direction::Back => RepairDirection::Back,
                },
                staff_id: staff,
            };
            publish(settings, &repair, sending).await
        }
        WritersCommand::WriteOff {
            serial,
            reason,
            branch,
            staff,
            sending,
        } => {
            let write_off = WriterWriteOff {
                writer_serial: serial,
                branch,
                reason,
                staff_id: staff,
            };
            publish(settings, &write_off, sending).await
        }
        WritersCommand::List {
            outlet,
            agent,
            branch,
            json,
        } => {
            let pool = crate::pipeline::migrate_all(settings).await?;
            let mut db = pool.acquire().await?;
            let holder = match (&outlet, &agent, &branch) {
                (Some(outlet), _, _) => Holder::Outlet(outlet),
                (_, Some(agent), _) => Holder::Agent(agent),
                (_, _, Some(branch)) => Holder::Branch(branch),
                _ => Holder::All,
            };
            let listed = writers::list(&mut db, &holder).await?;
            if json {
                let lines: Vec<Line<'_>> = listed
                    .iter()
                    .map(|writer| Line {
                        writer_serial: &writer.writer_serial,
                        model: &writer.model,
                        branch: &writer.branch_code,
                        state: writer.state,
                        agent_ess_code: writer.agent_code.as_deref(),
                        outlet_code: writer.outlet_code.as_deref(),
                        purchase_ref: &writer.purchase_ref,
                        moved_at: writer.moved_at,
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&lines)?);
            } else {
                print_writers(&listed);
            }
            Ok(())
        }
        WritersCommand::History { serial } => {
            let pool = crate::pipeline::migrate_all(settings).await?;
            let mut db = pool.acquire().await?;
            let entries = writers::history(&mut db, &serial).await?;
            anyhow::ensure!(!entries.is_empty(), "no writer {serial}");
            for entry in entries {
                let event = name(&entry.event);
                let from = entry.from_state.map(|state| name(&state));
                println!(
                    "{} {event:<12} {} → {} {} {}",
                    entry.at.format("%Y-%m-%d %H:%M:%S"),
                    from.as_deref().unwrap_or("-"),
                    name(&entry.to_state),
                    entry.outlet_code.as_deref().unwrap_or(""),
                    entry.staff_id
                );
            }
            Ok(())
        }
        WritersCommand::Flags { outlet, limit } => {
            let pool = crate::pipeline::migrate_all(settings).await?;
            let mut db = pool.acquire().await?;
            let flags =
                simflow_writecard::foreign_reader::flags(&mut db, outlet.as_deref(), limit).await?;
            for flag in &flags {
                println!(
                    "{} {:<10} serial {:<24} in {:<12} {:<8} ledger has it at {}{}",
                    flag.at.format("%Y-%m-%d %H:%M:%S"),
                    flag.outlet_code,
                    flag.serial.as_deref().unwrap_or("(none)"),
                    flag.seen_in,
                    flag.action,
                    flag.issued_to.as_deref().unwrap_or("(no outlet)"),
                    flag.script_id
                        .map(|script| format!(", script {script}"))
                        .unwrap_or_default()
                );
            }
            if flags.is_empty() {
                println!("(none)");
            }
            Ok(())
        }
    }
}
