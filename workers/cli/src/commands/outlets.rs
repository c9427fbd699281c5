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
        #[arg(long, required_unless_present = "csr", conflicts_with = "csr")]
        password_file: Option<PathBuf>,
        /// Instead of a password: the node's certificate signing request (`simflow outlet
        /// tls-request`); the outlet CA (`[writecard] outlet_ca_cert`, `outlet_ca_key`) signs
        /// it and the outlet logs in over TLS with the certificate (EXTERNAL).
        #[arg(long, requires = "cert_file")]
        csr: Option<PathBuf>,
        /// Where to write the outlet's certificate (PEM) for its node's `tls_cert`.
        #[arg(long, requires = "csr")]
        cert_file: Option<PathBuf>,
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
            csr,
            cert_file,
        } => {
            if let (Some(csr), Some(cert_file)) = (csr, cert_file) {
                provision_tls(
                    settings,
                    &mut db,
                    &management,
                    &outlet_code,
                    &agent,
                    &public_key,
                    &csr,
                    &cert_file,
                )
                .await?;
                drop(db);
                pool.close().await;
                return Ok(());
            }
            let password_file = password_file.context("--password-file or --csr")?;
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
            let writecard: simflow_writecard::WritecardSettings = settings.section("writecard")?;
            let vhost = vhost_of(&settings.amqp.uri)?;
            let ca = outlet_ca(&writecard).ok();
            let crl = match (&ca, &writecard.outlet_crl) {
                (Some(ca), Some(path)) => Some(simflow_writecard::outlets::CrlFile {
                    ca,
                    path,
                    validity: cert_validity(&writecard),
                }),
                _ => None,
            };
            let serials = simflow_writecard::outlets::revoke_certificate(
                &mut db,
                &management,
                &vhost,
                &outlet_code,
                crl.as_ref(),
            )
            .await?;
            for serial in serials {
                println!("certificate {serial} revoked");
            }
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

/// The outlet CA of `[writecard]`.
fn outlet_ca(
    writecard: &simflow_writecard::WritecardSettings,
) -> anyhow::Result<simflow_runtime::outlet_tls::OutletCa> {
    let (Some(cert), Some(key)) = (&writecard.outlet_ca_cert, &writecard.outlet_ca_key) else {
        anyhow::bail!(
            "[writecard] outlet_ca_cert and outlet_ca_key: set both to issue outlet certificates"
        );
    };
    simflow_runtime::outlet_tls::OutletCa::load(cert, key)
}

fn cert_validity(writecard: &simflow_writecard::WritecardSettings) -> std::time::Duration {
    std::time::Duration::from_secs(u64::from(writecard.outlet_cert_days.max(1)) * 86_400)
}

/// `outlets provision --csr`: sign the node's request and provision the outlet for EXTERNAL.
#[allow(clippy::too_many_arguments)]
async fn provision_tls(
    settings: &Settings,
    db: &mut sqlx::PgConnection,
    management: &Management,
    outlet_code: &str,
    agent: &str,
    public_key: &str,
    csr: &std::path::Path,
    cert_file: &std::path::Path,
) -> anyhow::Result<()> {
    let writecard: simflow_writecard::WritecardSettings = settings.section("writecard")?;
    let ca = outlet_ca(&writecard)?;
    let csr_pem =
        std::fs::read_to_string(csr).with_context(|| format!("reading {}", csr.display()))?;
    let client = Client::connect(&settings.amqp.uri, "simflow-outlets").await?;
    client
        .declare(&simflow_schemas::topology::central_topology(
            &settings.topology_params(),
        ))
        .await?;
    let vhost = vhost_of(&settings.amqp.uri)?;
    let provisioned = simflow_writecard::outlets::provision_tls(
        db,
        &client,
        management,
        &settings.topology_params(),
        &ca,
        &simflow_writecard::outlets::TlsProvisioning {
            outlet_code,
            agent_code: agent,
            public_key,
            csr_pem: &csr_pem,
            vhost: &vhost,
            validity: cert_validity(&writecard),
        },
    )
    .await;
    client.close().await;
    let provisioned = provisioned?;
    std::fs::write(cert_file, &provisioned.certificate.pem)
        .with_context(|| format!("writing {}", cert_file.display()))?;
    println!(
        "outlet {} provisioned for agent {}: broker user {} (EXTERNAL, certificate {} valid until {}, in {}), key {}",
        provisioned.outlet.outlet_code,
        provisioned.outlet.agent_code,
        provisioned.outlet.broker_user,
        provisioned.certificate.serial,
        provisioned.certificate.not_after.to_rfc3339(),
        cert_file.display(),
        provisioned.outlet.key_fingerprint
    );
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
