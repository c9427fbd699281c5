//! `simflow dlq`: list dead letters with their reasons, show one, replay one or all.

use clap::Subcommand;
use simflow_runtime::Settings;
use simflow_runtime::amqp;
use simflow_runtime::deadletter::{self, Selection};
use simflow_schemas::topology::JobQueue;

/// Dead-letter operations.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters per queue with their reasons.
    List {
        /// Only this queue key (transfer, issue, return, cardfile, writecard, …).
        queue: Option<String>,
        /// At most this many per queue.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter in full.
    Show {
        /// Its message id.
        message_id: String,
        /// Only look in this queue key.
        #[arg(long)]
        queue: Option<String>,
    },
    /// Replay dead letters to the queue they came from, keeping their message ids.
    Replay {
        /// The queue key.
        queue: String,
        /// Replay only this message id.
        #[arg(long, conflicts_with = "all")]
        message_id: Option<String>,
        /// Replay every dead letter of the queue.
        #[arg(long)]
        all: bool,
    },
}

fn queues(filter: Option<&str>) -> anyhow::Result<Vec<JobQueue>> {
    match filter {
        None => Ok(JobQueue::ALL.to_vec()),
        Some(key) => JobQueue::from_key(key)
            .map(|queue| vec![queue])
            .ok_or_else(|| anyhow::anyhow!("unknown queue {key:?}")),
    }
}

/// Runs a dead-letter command.
pub async fn run(settings: &Settings, command: DlqCommand) -> anyhow::Result<()> {
    let client = amqp::Client::connect_any(&settings.amqp.addresses(), "simflow-dlq").await?;
    client
        .declare(&simflow_schemas::topology::central_topology(
            &settings.topology_params(),
        ))
        .await?;
    let connection = client.connection();
    match command {
        DlqCommand::List { queue, limit, json } => {
            let mut all = Vec::new();
            for queue in queues(queue.as_deref())? {
                all.extend(deadletter::list(connection, &queue.dead_letter_queue(), limit).await?);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if all.is_empty() {
                println!("no dead letters");
            } else {
                println!(
                    "{:<26} {:<38} {:<28} {:<24} {:>3}  reason",
                    "queue", "message id", "type", "code", "try"
                );
                for letter in &all {
                    println!(
                        "{:<26} {:<38} {:<28} {:<24} {:>3}  {} / {}",
                        letter.queue,
                        letter.message_id.as_deref().unwrap_or("-"),
                        letter.message_type.as_deref().unwrap_or("-"),
                        letter.reason_code,
                        letter
                            .attempts
                            .map(|n| n.to_string())
                            .unwrap_or_else(|| "-".into()),
                        letter.reason_zh.as_deref().unwrap_or("-"),
                        letter.reason_en.as_deref().unwrap_or("-"),
                    );
                }
            }
        }
        DlqCommand::Show { message_id, queue } => {
            let mut found = None;
            for queue in queues(queue.as_deref())? {
                let letters =
                    deadletter::list(connection, &queue.dead_letter_queue(), usize::MAX).await?;
                if let Some(letter) = letters
                    .into_iter()
                    .find(|l| l.message_id.as_deref() == Some(message_id.as_str()))
                {
                    found = Some(letter);
                    break;
                }
            }
            match found {
                Some(letter) => println!("{}", serde_json::to_string_pretty(&letter)?),
                None => anyhow::bail!("no dead letter with message id {message_id}"),
            }
        }
        DlqCommand::Replay {
            queue,
            message_id,
            all,
        } => {
            let selection = match (message_id, all) {
                (Some(id), _) => Selection::MessageId(id),
                (None, true) => Selection::All,
                (None, false) => anyhow::bail!("give --message-id ID or --all"),
            };
            let queue = queues(Some(&queue))?.remove(0);
            let db = simflow_runtime::db::lazy_pool(&settings.database)?;
            let report = deadletter::replay(connection, &db, queue, &selection).await?;
            db.close().await;
            println!(
                "replayed {} dead letter(s) from {}: {}; {} second copies dropped; {} left",
                report.replayed.len(),
                queue.dead_letter_queue(),
                report.replayed.join(", "),
                report.duplicates_dropped,
                report.kept
            );
        }
    }
    client.close().await;
    Ok(())
}
