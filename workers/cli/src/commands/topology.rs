//! `simflow topology`: declare the central topology, or print it as RabbitMQ definitions.

use clap::Subcommand;
use simflow_runtime::Settings;
use simflow_runtime::amqp::Client;
use simflow_schemas::topology::central_topology;

/// Topology operations.
#[derive(Debug, Subcommand)]
pub enum TopologyCommand {
    /// Declare exchanges, queues and bindings (idempotent).
    Declare,
    /// Print the topology as a RabbitMQ definitions document (with policies).
    Export,
}

/// Runs a topology command.
pub async fn run(settings: &Settings, command: TopologyCommand) -> anyhow::Result<()> {
    let params = settings.topology_params();
    match command {
        TopologyCommand::Declare => {
            let client =
                Client::connect_any(&settings.amqp.addresses(), "simflow-topology").await?;
            client.declare(&central_topology(&params)).await?;
            client.close().await;
            println!("topology declared");
        }
        TopologyCommand::Export => {
            let document = simflow_schemas::definitions::document(&params);
            println!("{}", serde_json::to_string_pretty(&document)?);
        }
    }
    Ok(())
}
