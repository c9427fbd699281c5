//! `simflow outlets`: the central side of outlets — provision one (its queue, its broker user
//! that may read only that queue and publish only results, its public key), revoke one, list
//! them — and `simflow numbers` to fill the number pools.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use secrecy::SecretString;
use simflow_runtime::Settings;
use simflow_runtime::amqp::{Client, vhost_of};
use simflow_runtime::management::Management;

/// Outlet administration (central side).
#[derive(Debug, Subcommand)]
pub enum OutletsCommand {
    /// Provision an outlet: queue, broker user with narrow permissions, public key.
    Provision {
        /// The outlet code.
        outlet_code: String,
        /// The agent (ESS department code) the outlet belongs to.
        #[arg(long)]
        agent: String,
        /// The node's public key, as `simflow outlet keygen` printed it.
        #[arg(long)]
        public_key: String,
        /// A file holding the outlet user's broker password; created with a new random
        /// password (mode 0600) when missing. The password is never printed.
        #[arg(long)]
        password_file: PathBuf,
    },
    /// Revoke an outlet: its broker user goes, scripts stop being routed to it.
    Revoke {
        /// The outlet code.
        outlet_code: String,
    },
    /// List outlets.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Number pools.
#[derive(Debug, Subcommand)]
pub enum NumbersCommand {
    /// Add consecutive subscriber numbers (MSISDN) to the pool.
    AddMsisdn {
        /// The first number.
        #[arg(long)]
        first: u64,
        /// How many.
        #[arg(long)]
        count: u64,
    },
    /// Add consecutive IMSIs (15 digits) to the pool.
    AddImsi {
        /// The first IMSI.
        #[arg(long)]
        first: u64,
        /// How many.
        #[arg(long)]
        count: u64,
    },
}

/// Reads the password file, or creates it with a new random password.
pub fn password_from_file(path: &std::path::Path) -> anyhow::Result<SecretString> {
    if path.exists() {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let password = text.trim().to_owned();
        anyhow::ensure!(
            password.len() >= 16,
            "{}: the password must have at least 16 characters",
            path.display()
        );
        return Ok(SecretString::from(password));
    }
    let password: String = {
        use rand::Rng;
        const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
        let mut rng = rand::rng();
        (0..32)
            .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
            .collect()
    };
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))?
    };
    writeln!(file, "{password}")?;
    Ok(SecretString::from(password))
}

/// Runs an outlet administration command.
pub async fn run(settings: &Settings, command: OutletsCommand) -> anyhow::Result<()> {
    let pool = crate::pipeline::migrate_all(settings).await?;
    let mut db = pool.acquire().await?;
    let management = Management::new(&settings.amqp);
    match command {
        OutletsCommand::Provision {
            outlet_code,
            agent,
            public_key,
            password_file,
        } => {
            let password = password_from_file(&password_file)?;
            let client = Client::connect_any(&settings.amqp.addresses(), "simflow-outlets").await?;
            client
                .declare(&simflow_schemas::topology::central_topology(
                    &settings.topology_params(),
                ))
                .await?;
            let vhost = vhost_of(&settings.amqp.uri)?;
            let outlet = simflow_writecard::outlets::provision(
                &mut db,
                &client,
                &management,
                &settings.topology_params(),
                &simflow_writecard::outlets::Provisioning {
                    outlet_code: &outlet_code,
                    agent_code: &agent,
                    public_key: &public_key,
                    password: &password,
                    vhost: &vhost,
                },
            )
            .await?;
            client.close().await;
            println!(
                "outlet {} provisioned for agent {}: broker user {} (password in {}), key {}",
                outlet.outlet_code,
                outlet.agent_code,
                outlet.broker_user,
                password_file.display(),
                outlet.key_fingerprint
            );
        }
        OutletsCommand::Revoke { outlet_code } => {
            simflow_writecard::outlets::revoke(
                &mut db,
                &management,
                &vhost_of(&settings.amqp.uri)?,
                &outlet_code,
            )
            .await?;
            println!("outlet {outlet_code} revoked");
        }
        OutletsCommand::List { json } => {
            let outlets = simflow_writecard::outlets::list(&mut db).await?;
            if json {
                let rows: Vec<serde_json::Value> = outlets
                    .iter()
                    .map(|outlet| {
                        serde_json::json!({
                            "outlet_code": outlet.outlet_code,
                            "agent_code": outlet.agent_code,
                            "key_fingerprint": outlet.key_fingerprint,
                            "broker_user": outlet.broker_user,
                            "active": outlet.active,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for outlet in &outlets {
                    println!(
                        "{:<12} agent {:<10} user {:<28} key {} {}",
                        outlet.outlet_code,
                        outlet.agent_code,
                        outlet.broker_user,
                        outlet.key_fingerprint,
                        if outlet.active { "active" } else { "revoked" }
                    );
                }
            }
        }
    }
    drop(db);
    pool.close().await;
    Ok(())
}

/// Runs a number pool command.
pub async fn run_numbers(settings: &Settings, command: NumbersCommand) -> anyhow::Result<()> {
    let pool = crate::pipeline::migrate_all(settings).await?;
    let mut db = pool.acquire().await?;
    match command {
        NumbersCommand::AddMsisdn { first, count } => {
            let added = simflow_writecard::numbers::add_msisdns(&mut db, first, count).await?;
            println!("{added} new numbers in the pool");
        }
        NumbersCommand::AddImsi { first, count } => {
            let added = simflow_writecard::numbers::add_imsis(&mut db, first, count).await?;
            println!("{added} new IMSIs in the pool");
        }
    }
    drop(db);
    pool.close().await;
    Ok(())
}
