//! `simflow carddata`: import a vendor card data file (号卡文件) and rotate the key-encryption
//! key of stored card keys.
//!
//! The import draws a progress bar on stderr when stderr is a terminal, then prints a summary:
//! accepted and refused rows, each refusal by line, column and code with its text in English
//! and Chinese (`--json` prints the report as JSON instead). No key value is ever printed.
//! The logic lives in `simflow-carddata`; this module parses arguments and prints.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use simflow_carddata::import::{
    CardFile, ImportError, ImportReport, ImportRequest, Importer, Progress,
};
use simflow_carddata::rotate;
use simflow_runtime::Settings;

/// What to do with card data.
#[derive(Debug, Subcommand)]
pub enum CardDataCommand {
    /// Import a vendor card data file (CSV).
    Import(ImportArgs),
    /// Re-encrypt stored card keys under the current key-encryption key (resumable).
    RotateKek(RotateArgs),
}

/// Arguments of `carddata import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The CSV file.
    pub file: PathBuf,
    /// The card type code of every card in the file.
    #[arg(long)]
    pub card_type: String,
    /// The name of the transport key the key columns are encrypted with (configured in
    /// carddata.transport_keys).
    #[arg(long)]
    pub transport_key: Option<String>,
    /// Who imports (recorded with the import).
    #[arg(long, default_value = "cli")]
    pub staff_id: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `carddata rotate-kek`.
#[derive(Debug, Args)]
pub struct RotateArgs {
    /// Rows re-encrypted per transaction.
    #[arg(long, default_value_t = 5000)]
    pub batch_size: u32,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// A progress bar on stderr, drawn only when stderr is a terminal.
struct Bar(ProgressBar);

impl Bar {
    fn new() -> Bar {
        let bar = ProgressBar::with_draw_target(
            None,
            if std::io::stderr().is_terminal() {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        Bar(bar)
    }
}

impl Progress for Bar {
    fn start(&self, total: u64, done: u64) {
        self.0.set_length(total);
        self.0.set_position(done);
        self.0.set_style(
            ProgressStyle::with_template(
                "{msg:>9} [{bar:40}] {pos}/{len} rows ({per_sec}, {eta} left)",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        self.0.set_message("staging");
    }

    fn advance(&self, rows: u64) {
        self.0.inc(rows);
    }

    fn promoting(&self) {
        self.0.set_message("promoting");
    }
}

/// Runs a carddata command.
pub async fn run(settings: &Settings, command: CardDataCommand) -> anyhow::Result<()> {
    match command {
        CardDataCommand::Import(args) => import(settings, args).await,
        CardDataCommand::RotateKek(args) => rotate_kek(settings, args).await,
    }
}

async fn import(settings: &Settings, args: ImportArgs) -> anyhow::Result<()> {
    let pool = crate::pipeline::migrate_all(settings).await?;
    let importer =
        Importer::from_settings(pool.clone(), &settings.carddata).context("carddata settings")?;
    let request = ImportRequest {
        file_name: args
            .file
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
        card_type: args.card_type.clone(),
        transport_key: args.transport_key.clone(),
        staff_id: args.staff_id.clone(),
    };
    let bar = Bar::new();
    let result = importer
        .import(CardFile::Path(args.file.clone()), &request, &bar)
        .await;
    bar.0.finish_and_clear();
    pool.close().await;
    match result {
        Ok(report) => {
            print_report(&args, &report)?;
            Ok(())
        }
        Err(ImportError::File(rejection)) => {
            let message = rejection.message();
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "refused": message }))?
                );
            }
            anyhow::bail!(
                "{} refused, nothing imported: {} ({}) [{}]",
                args.file.display(),
                message.message_en,
                message.message_zh,
                message.code
            )
        }
        Err(error) => Err(anyhow::Error::new(error).context("card data import")),
    }
}

fn print_report(args: &ImportArgs, report: &ImportReport) -> anyhow::Result<()> {
    if args.json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    let how = if report.already_imported {
        " (this file was imported before; nothing changed)".to_owned()
    } else if report.resumed_from_row > 0 {
        format!(" (resumed after row {})", report.resumed_from_row)
    } else {
        String::new()
    };
    println!(
        "{}: {} rows, {} accepted, {} rejected{how}",
        args.file.display(),
        report.total_rows,
        report.accepted,
        report.rejected
    );
    println!(
        "file sha256 {}, card type {}",
        report.file_sha256, report.card_type
    );
    for problem in &report.problems {
        println!(
            "  line {:>8}  {:<7} {:<24} {} ({})",
            problem.line,
            problem.column.as_deref().unwrap_or("-"),
            problem.code,
            problem.message_en,
            problem.message_zh
        );
    }
    let listed = report.problems.len() as u64;
    if report.rejected > listed {
        println!(
            "  … {} more refused rows (each refusal is kept in carddata.import_problems)",
            report.rejected - listed
        );
    }
    Ok(())
}

async fn rotate_kek(settings: &Settings, args: RotateArgs) -> anyhow::Result<()> {
    let pool = crate::pipeline::migrate_all(settings).await?;
    let ring = simflow_carddata::KekRing::from_settings(&settings.carddata)
        .context("carddata settings")?;
    let on_batch = |rotated: u64| {
        if std::io::stderr().is_terminal() {
            eprint!("\rre-encrypted {rotated} cards");
        }
    };
    let report = rotate::rotate_kek(&pool, &ring, args.batch_size, &on_batch).await;
    pool.close().await;
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "re-encrypted {} cards under KEK {}; {} still under other KEKs; {} imports still staging",
            report.rotated, report.current_kek_id, report.remaining, report.imports_staging
        );
    }
    Ok(())
}
