//! `simflow-reader`: the card writer from the command line, printing JSON.
//!
//! `simflow-reader list` lists readers; `simflow-reader identify --reader NAME` waits for a card
//! and prints its ICCID and whether it is blank. On failure it prints the error report (code,
//! clerk messages, cause) and exits with status 2. Used by ops and by the end-to-end tests
//! that need a process with its own environment (e.g. `PCSCLITE_CSOCK_NAME`).

use clap::{Parser, Subcommand};
use simflow_reader::{Reader, ReaderError};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(version, about = "Talk to a PC/SC card writer")]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// List the readers pcscd knows.
    List,
    /// Wait for a card, connect and read its ICCID and IMSI.
    Identify {
        /// Reader name, as `list` prints it.
        #[arg(long)]
        reader: String,
        /// How long to wait for a card.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
    },
}

fn run(args: Args) -> Result<serde_json::Value, ReaderError> {
    match args.command {
        Cmd::List => Ok(serde_json::json!({ "readers": simflow_reader::list_readers()? })),
        Cmd::Identify { reader, timeout_ms } => {
            let mut reader = Reader::open(&reader)?;
            reader.wait_for_card(Duration::from_millis(timeout_ms))?;
            reader.connect()?;
            let identity = reader.identify()?;
            Ok(serde_json::json!({
                "iccid": identity.iccid,
                "blank": identity.blank,
                "imsi": identity.imsi,
                "atr": hex::encode(reader.atr()),
                "apdus": reader.apdu_count(),
            }))
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()) {
        Ok(value) => {
            println!("{value}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            println!("{}", serde_json::json!({ "error": error.report() }));
            ExitCode::from(2)
        }
    }
}
