//! `simflow console`: serve the ops console, or make a password hash for its configuration.

use std::io::BufRead;

use clap::Subcommand;
use simflow_console::ConsoleSettings;
use simflow_runtime::{Settings, Shutdown};

/// The console's commands.
#[derive(Debug, Subcommand)]
pub enum ConsoleCommand {
    /// Serve the console on `[console] listen` until SIGTERM or SIGINT (migrates first).
    Serve,
    /// Read a password from standard input and print its Argon2id hash for
    /// `[[console.users]] password_hash`.
    HashPassword,
}

/// Runs a console command.
pub async fn run(settings: Settings, command: ConsoleCommand) -> anyhow::Result<()> {
    match command {
        ConsoleCommand::HashPassword => {
            let mut password = String::new();
            std::io::stdin().lock().read_line(&mut password)?;
            let password = password.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(
                password.chars().count() >= 12,
                "use a password of at least 12 characters"
            );
            println!("{}", simflow_console::auth::hash_password(password)?);
            Ok(())
        }
        ConsoleCommand::Serve => {
            let console: ConsoleSettings = settings.section("console")?;
            console.validate()?;
            let shutdown = Shutdown::new();
            shutdown.on_signals()?;
            let pool = crate::pipeline::migrate_all(&settings).await?;
            let (address, task) =
                simflow_console::serve(settings, console, pool.clone(), shutdown.token()).await?;
            eprintln!("simflow console: serving on http://{address}");
            let _ = task.await;
            pool.close().await;
            Ok(())
        }
    }
}
