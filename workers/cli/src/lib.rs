//! The `simflow` command: run workers, publish jobs, load org data and cards, work the
//! dead-letter queues, serve the ops console, declare or export the topology, run the demo, the
//! benchmarks and the chaos run.
//!
//! Logic lives in the worker crates and the runtime; this crate parses arguments, loads
//! settings and wires the pieces together. It never talks AMQP itself: broker access goes
//! through `simflow-runtime`.

pub mod cluster;
pub mod commands;
pub mod pg_cluster;
pub mod pipeline;
pub mod scratch;
pub mod services;
pub mod world;

#[cfg(test)]
mod settings_tests;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use simflow_runtime::Settings;

/// simflow: the job pipeline for on-site blank-SIM writing.
#[derive(Debug, Parser)]
#[command(name = "simflow", version, about)]
pub struct Cli {
    /// An extra configuration file layered over the defaults.
    #[arg(long, global = true, env = "SIMFLOW_CONFIG")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the database if needed and apply every crate's migrations.
    Migrate,
    /// Load organisation data or receive blank cards.
    #[command(subcommand)]
    Seed(commands::seed::SeedCommand),
    /// Run workers until SIGTERM or SIGINT.
    Worker(commands::worker::WorkerArgs),
    /// Publish one job from a JSON file.
    Publish(commands::publish::PublishArgs),
    /// Inventory queries: stock, card history, reconciliation, return detail.
    #[command(subcommand)]
    Inventory(commands::inventory::InventoryCommand),
    /// Outlets, central side: provision, revoke, list.
    #[command(subcommand)]
    Outlets(commands::outlets::OutletsCommand),
    /// The writer ledger: purchase, issue, return, repair, write off; who holds which writer.
    #[command(subcommand)]
    Writers(commands::writers::WritersCommand),
    /// The outlet writer node: key pair, readers, run.
    #[command(subcommand)]
    Outlet(commands::outlet::OutletCommand),
    /// Number pools: subscriber numbers and IMSIs.
    #[command(subcommand)]
    Numbers(commands::outlets::NumbersCommand),
    /// Work the dead-letter queues.
    #[command(subcommand)]
    Dlq(commands::dlq::DlqCommand),
    /// The ops console: serve it, or hash a password for its users.
    #[command(subcommand)]
    Console(commands::console::ConsoleCommand),
    /// Declare the topology on the broker, or print it as RabbitMQ definitions.
    #[command(subcommand)]
    Topology(commands::topology::TopologyCommand),
    /// Run the demo pipeline on the local services and print what happened.
    Demo(commands::demo::DemoArgs),
    /// Card data files (号卡文件): import, KEK rotation.
    #[command(subcommand)]
    Carddata(commands::carddata::CardDataCommand),
    /// Benchmarks (throughput next to the raw broker limit, in one run).
    #[command(subcommand)]
    Bench(commands::bench::BenchCommand),
    /// Jobs through worker processes that are killed while the broker and the database restart
    /// under them (the private services of deploy/chaos/services.sh only); checks that nothing
    /// was lost or done twice.
    Chaos(commands::chaos::ChaosArgs),
}

/// Runs the command line and maps the result to an exit code.
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo and the benchmarks print their own report; only warnings belong beside it.
    match cli.command {
        Command::Demo(_) | Command::Bench(_) | Command::Chaos(_) => {
            simflow_runtime::telemetry::init_with_default("warn,lapin=error")
        }
        _ => simflow_runtime::telemetry::init(),
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("simflow: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load(cli.config.as_deref())?;
    match cli.command {
        Command::Migrate => commands::migrate::run(&settings).await,
        Command::Seed(command) => commands::seed::run(&settings, command).await,
        Command::Worker(args) => commands::worker::run(settings, args).await,
        Command::Publish(args) => commands::publish::run(&settings, args).await,
        Command::Dlq(command) => commands::dlq::run(&settings, command).await,
        Command::Console(command) => commands::console::run(settings, command).await,
        Command::Outlets(command) => commands::outlets::run(&settings, command).await,
        Command::Writers(command) => commands::writers::run(&settings, command).await,
        Command::Outlet(command) => commands::outlet::run(&settings, command).await,
        Command::Numbers(command) => commands::outlets::run_numbers(&settings, command).await,
        Command::Inventory(command) => commands::inventory::run(&settings, command).await,
        Command::Topology(command) => commands::topology::run(&settings, command).await,
        Command::Demo(args) => commands::demo::run(settings, args).await,
        Command::Carddata(command) => commands::carddata::run(&settings, command).await,
        Command::Bench(command) => commands::bench::run(settings, command).await,
        Command::Chaos(args) => commands::chaos::run(settings, args).await,
    }
}
