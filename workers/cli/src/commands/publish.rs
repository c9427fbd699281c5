//! `simflow publish`: publish one job read from a JSON file (or stdin) after checking it against
//! the contract, and optionally wait for its answer.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use simflow_runtime::Settings;
use simflow_runtime::amqp::Client;
use simflow_schemas::registry::{self, MessageRole};
use simflow_schemas::topology::{
    JOBS_EXCHANGE, OUTLET_RESULTS_KEY, OUTLETS_EXCHANGE, RESULTS_EXCHANGE,
};

/// Arguments of `publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The message type, e.g. `transfer.create.v1`.
    pub message_type: String,
    /// The JSON body file (`-` for stdin).
    pub file: PathBuf,
    /// The message id (default: a new UUID). Re-use one to re-send the same job.
    #[arg(long)]
    pub message_id: Option<String>,
    /// For outlet work: the outlet code to route to.
    #[arg(long)]
    pub outlet: Option<String>,
    /// Wait this many seconds for the job's outcome event and print it.
    #[arg(long)]
    pub wait: Option<u64>,
}

/// How long a publish may wait for the broker's confirm when no `--wait` is given.
const PUBLISH_LIMIT_SECONDS: u64 = 30;

/// Publishes the job.
pub async fn run(settings: &Settings, args: PublishArgs) -> anyhow::Result<()> {
    let mut body = Vec::new();
    if args.file.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut body)?;
    } else {
        body = std::fs::read(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?;
    }
    send(
        settings,
        &args.message_type,
        &body,
        args.message_id,
        args.outlet.as_deref(),
        args.wait,
    )
    .await
}

/// Checks `body` against the contract of `message_type`, publishes it where the registry says
/// (outlet work to `outlet`), and with `wait` prints its outcome event.
pub async fn send(
    settings: &Settings,
    message_type: &str,
    body: &[u8],
    message_id: Option<String>,
    outlet: Option<&str>,
    wait: Option<u64>,
) -> anyhow::Result<()> {
    let info = registry::find(message_type)
        .with_context(|| format!("unknown message type {message_type:?}"))?;
    (info.check)(body).context("the body does not fit the contract")?;
    let (exchange, routing_key) = match info.role {
        MessageRole::Job(queue) => (JOBS_EXCHANGE.to_owned(), queue.key().to_owned()),
        MessageRole::OutletResult => (RESULTS_EXCHANGE.to_owned(), OUTLET_RESULTS_KEY.to_owned()),
        MessageRole::OutletWork => match outlet {
            Some(outlet) => (OUTLETS_EXCHANGE.to_owned(), outlet.to_owned()),
            None => bail!("{message_type} goes to an outlet: give --outlet"),
        },
        MessageRole::Event(_) => bail!("{message_type} is an event, not a job"),
    };
    let message_id = message_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let client = Client::connect_any(&settings.amqp.addresses(), "simflow-publish").await?;
    let mut watch = match wait {
        Some(_) => Some(client.watch_events(&["#"]).await?),
        None => None,
    };
    let limit = Duration::from_secs(wait.unwrap_or(PUBLISH_LIMIT_SECONDS).max(1));
    client
        .within(
            limit,
            client.publish_raw(
                &exchange,
                &routing_key,
                Some(message_type),
                &message_id,
                body,
            ),
        )
        .await?;
    println!("published {message_type} as {message_id}");
    if let (Some(watch), Some(seconds)) = (watch.as_mut(), wait) {
        let event = watch
            .next_for(&message_id, Duration::from_secs(seconds))
            .await?;
        println!(
            "{} {}",
            event.routing_key,
            serde_json::to_string_pretty(&event.body)?
        );
    }
    client.close().await;
    Ok(())
}
