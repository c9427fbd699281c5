//! `simflow outlets`: the central side of outlets — provision one (its queue, its broker user
//! that may read only that queue and publish only results, its public key), suspend and resume
//! one, revoke one (for good), list them with their last heartbeat, and list the lifecycle
//! audit — and `simflow numbers` to fill the number pools.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use secrecy::SecretString;
use simflow_runtime::Settings;
use simflow_runtime::amqp::{Client, vhost_of};
use simflow_runtime::management::Management;
use simflow_writecard::outlets::{self, Step};

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
        /// Who provisions (for the audit); default: the login name.
        #[arg(long)]
        by: Option<String>,
    },
    /// Suspend an outlet: write requests and reads for it are refused until it is resumed
    /// (work already queued for it stays and expires by itself).
    Suspend {
        /// The outlet code.
        outlet_code: String,
        /// Why (for the audit).
        #[arg(long)]
        reason: String,
        /// Who (for the audit); default: the login name.
        #[arg(long)]
        by: Option<String>,
    },
    /// Resume a suspended outlet.
    Resume {
        /// The outlet code.
        outlet_code: String,
        /// Why (for the audit).
        #[arg(long)]
        reason: String,
        /// Who (for the audit); default: the login name.
        #[arg(long)]
        by: Option<String>,
    },
    /// Revoke an outlet, for good: its broker user and queue go (the node is disconnected and
    /// cannot come back), and every script pending for it ends with SCRIPT_EXPIRED.
    Revoke {
        /// The outlet code.
        outlet_code: String,
        /// Why (for the audit).
        #[arg(long)]
        reason: String,
        /// Who (for the audit); default: the login name.
        #[arg(long)]
        by: Option<String>,
    },
    /// List outlets with their state and last heartbeat.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the lifecycle audit (provision, rotate, suspend, resume, revoke), newest first.
    Audit {
        /// Only this outlet.
        outlet_code: Option<String>,
        /// At most this many rows.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Who runs a command, for the audit: `--by`, else the login name.
fn actor(by: Option<String>) -> String {
    by.or_else(|| std::env::var("USER").ok())
        .filter(|by| !by.trim().is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
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
            by,
        } => {
            if let (Some(csr), Some(cert_file)) = (csr, cert_file) {
                provision_tls(
                    settings,
                    &mut db,
                    &management,
                    &outlet_code,
                    &agent,
                    &public_key,
                    (&csr, &cert_file),
                    &actor(by),
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
                    by: &actor(by),
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
        OutletsCommand::Suspend {
            outlet_code,
            reason,
            by,
        } => {
            let by = actor(by);
            let step = Step {
                by: &by,
                reason: &reason,
            };
            let outlet = outlets::suspend(&pool, &outlet_code, &step).await?;
            println!("outlet {} {}", outlet.outlet_code, outlet.state().name());
        }
        OutletsCommand::Resume {
            outlet_code,
            reason,
            by,
        } => {
            let by = actor(by);
            let step = Step {
                by: &by,
                reason: &reason,
            };
            let outlet = outlets::resume(&pool, &outlet_code, &step).await?;
            println!("outlet {} {}", outlet.outlet_code, outlet.state().name());
        }
        OutletsCommand::Revoke {
            outlet_code,
            reason,
            by,
        } => {
            let by = actor(by);
            let step = Step {
                by: &by,
                reason: &reason,
            };
            let client = Client::connect_any(&settings.amqp.addresses(), "simflow-outlets").await?;
            let revoked = outlets::revoke(
                &pool,
                &client,
                &management,
                &vhost_of(&settings.amqp.uri)?,
                &outlet_code,
                &step,
            )
            .await;
            client.close().await;
            let revoked = revoked?;
            println!(
                "outlet {} revoked: broker user and queue removed, {} pending scripts ended with SCRIPT_EXPIRED",
                revoked.outlet_code,
                revoked.expired_scripts.len()
            );
            // Its certificates too (an outlet provisioned with one), and the CRL when set.
            let writecard: simflow_writecard::WritecardSettings = settings.section("writecard")?;
            let ca = outlet_ca(&writecard).ok();
            let crl = match (&ca, &writecard.outlet_crl) {
                (Some(ca), Some(path)) => Some(outlets::CrlFile {
                    ca,
                    path,
                    validity: cert_validity(&writecard),
                }),
                _ => None,
            };
            let serials = outlets::revoke_certificate(
                &mut db,
                &management,
                &vhost_of(&settings.amqp.uri)?,
                &outlet_code,
                crl.as_ref(),
            )
            .await?;
            for serial in serials {
                println!("certificate {serial} revoked");
            }
        }
        OutletsCommand::List { json } => {
            let listed = outlets::list(&mut db).await?;
            let now = chrono::Utc::now();
            if json {
                let rows: Vec<serde_json::Value> = listed
                    .iter()
                    .map(|outlet| {
                        serde_json::json!({
                            "outlet_code": outlet.outlet_code,
                            "agent_code": outlet.agent_code,
                            "key_fingerprint": outlet.key_fingerprint,
                            "broker_user": outlet.broker_user,
                            "active": outlet.active,
                            "state": outlet.state().name(),
                            "online": outlet.online(now, outlets::OFFLINE_AFTER),
                            "last_seen": outlet.last_seen,
                            "node_version": outlet.node_version,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for outlet in &listed {
                    println!(
                        "{:<12} agent {:<10} user {:<28} key {} {:<9} {:<7} last seen {}",
                        outlet.outlet_code,
                        outlet.agent_code,
                        outlet.broker_user,
                        outlet.key_fingerprint,
                        outlet.state().name(),
                        if outlet.online(now, outlets::OFFLINE_AFTER) {
                            "online"
                        } else {
                            "offline"
                        },
                        outlet
                            .last_seen
                            .map_or_else(|| "never".to_owned(), |seen| seen.to_rfc3339()),
                    );
                }
            }
        }
        OutletsCommand::Audit {
            outlet_code,
            limit,
            json,
        } => {
            let records = outlets::audit_trail(&mut db, outlet_code.as_deref(), limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&records)?);
            } else {
                for record in &records {
                    println!(
                        "{:>6} {} {:<12} {:<9} by {:<16} {} {}",
                        record.audit_id,
                        record.at.to_rfc3339(),
                        record.outlet_code,
                        record.action.name(),
                        record.actor,
                        record.reason,
                        record.detail.0
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
    (csr, cert_file): (&std::path::Path, &std::path::Path),
    by: &str,
) -> anyhow::Result<()> {
    let writecard: simflow_writecard::WritecardSettings = settings.section("writecard")?;
    let ca = outlet_ca(&writecard)?;
    let csr_pem =
        std::fs::read_to_string(csr).with_context(|| format!("reading {}", csr.display()))?;
    let client = Client::connect_any(&settings.amqp.addresses(), "simflow-outlets").await?;
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
            by,
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
