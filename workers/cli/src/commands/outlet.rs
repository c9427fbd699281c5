//! `simflow outlet`: the outlet writer node's side (one per outlet and reader): make its key
//! pair, rotate it, list the PC/SC readers it can see, and run it.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use simflow_outlet::OutletSettings;
use simflow_runtime::{Settings, Shutdown};

/// The outlet node's subcommands.
#[derive(Debug, Subcommand)]
pub enum OutletCommand {
    /// Make the node's key pair: writes the secret key file (mode 0600) and prints the public
    /// key to give to `simflow outlets provision --public-key`.
    Keygen(KeygenArgs),
    /// Make the node's TLS key (mode 0600, it stays here) and a certificate signing request
    /// for the outlet's broker user, to give to `simflow outlets provision --csr`.
    TlsRequest(TlsRequestArgs),
    /// Rotate the node's key (settings in the `[outlet]` section): a new key pair on this
    /// machine, its public key announced to the centre as the outlet's own broker user; the old
    /// key still opens scripts for `key_grace_seconds`, then the node deletes it.
    RotateKey,
    /// List the PC/SC readers and whether a card is in each.
    Readers,
    /// Run the node until SIGTERM or SIGINT (settings in the `[outlet]` section).
    Run,
}

/// Arguments of `outlet keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the secret key (must not exist).
    #[arg(long)]
    pub key_file: PathBuf,
}

/// Arguments of `outlet tls-request`.
#[derive(Debug, Args)]
pub struct TlsRequestArgs {
    /// The outlet code, as provisioned.
    #[arg(long)]
    pub outlet: String,
    /// The broker vhost the outlet uses (its broker user's name carries it).
    #[arg(long, default_value = "/")]
    pub vhost: String,
    /// Where to write the private key (must not exist); `[outlet] tls_key`.
    #[arg(long)]
    pub key_file: PathBuf,
    /// Where to write the request (PEM).
    #[arg(long)]
    pub csr_file: PathBuf,
}

/// Runs an outlet subcommand.
pub async fn run(settings: &Settings, command: OutletCommand) -> anyhow::Result<()> {
    match command {
        OutletCommand::Keygen(args) => {
            let keys = simflow_outlet::generate_key_file(&args.key_file)?;
            let public = keys.public_key();
            println!("secret key written to {}", args.key_file.display());
            println!("public key:  {}", public.to_base64());
            println!("fingerprint: {}", public.fingerprint());
            Ok(())
        }
        OutletCommand::TlsRequest(args) => {
            anyhow::ensure!(
                simflow_runtime::outlet::valid_outlet_code(&args.outlet),
                "outlet code {:?}: use 1–32 letters, digits, - or _",
                args.outlet
            );
            let user = simflow_runtime::outlet::outlet_user(&args.vhost, &args.outlet);
            simflow_runtime::outlet_tls::write_request(&args.key_file, &args.csr_file, &user)?;
            println!("private key written to {}", args.key_file.display());
            println!(
                "request for {user} written to {}: give it to `simflow outlets provision --csr`",
                args.csr_file.display()
            );
            Ok(())
        }
        OutletCommand::RotateKey => {
            let outlet: OutletSettings = settings.section("outlet")?;
            let rotation = simflow_outlet::rotate_key(&outlet).await?;
            println!(
                "outlet {}: new key {} announced to the centre and current; key {} still opens scripts until {}",
                outlet.code,
                rotation.next.public_key().fingerprint(),
                rotation.previous.public_key().fingerprint(),
                rotation.previous_key_retires_at.to_rfc3339()
            );
            Ok(())
        }
        OutletCommand::Readers => {
            let readers = tokio::task::spawn_blocking(simflow_reader::list_readers).await?;
            match readers {
                Ok(names) if names.is_empty() => println!("pcscd runs but has no reader"),
                Ok(names) => {
                    for name in names {
                        println!("{name}");
                    }
                }
                Err(error) => {
                    let message = error.clerk_message();
                    anyhow::bail!("{} / {} ({error})", message.zh(), message.en());
                }
            }
            Ok(())
        }
        OutletCommand::Run => {
            let outlet: OutletSettings = settings.section("outlet")?;
            outlet.validate()?;
            let shutdown = Shutdown::new();
            shutdown.on_signals()?;
            let observed = crate::pipeline::observe(settings, shutdown.token()).await?;
            eprintln!(
                "simflow outlet {}: reader {:?}; /metrics and /healthz on http://{}; counter page on {}",
                outlet.code,
                outlet.reader,
                observed.address,
                if outlet.counter_listen.is_empty() {
                    "(off)".to_owned()
                } else {
                    format!("http://{}/", outlet.counter_listen)
                }
            );
            let result = simflow_outlet::run(
                &outlet,
                observed.metrics,
                observed.health,
                true,
                shutdown.token(),
            )
            .await;
            shutdown.token().cancel();
            let _ = observed.http.await;
            result
        }
    }
}
