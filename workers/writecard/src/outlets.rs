//! Outlets: the writer nodes beside the outlets' card readers, each belonging to one agent,
//! with the public key its write scripts are sealed to and its own broker user.

use anyhow::Context;
use secrecy::SecretString;
use simflow_runtime::amqp::Client;
use simflow_runtime::management::Management;
use simflow_runtime::outlet::{self, outlet_user, valid_outlet_code};
use simflow_schemas::topology::TopologyParams;
use simflow_seal::OutletPublicKey;
use sqlx::PgConnection;

/// An outlet as the central side knows it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Outlet {
    /// Outlet code.
    pub outlet_code: String,
    /// The agent it belongs to (ESS department code).
    pub agent_code: String,
    /// Its public key, base64.
    pub public_key: String,
    /// The key's fingerprint.
    pub key_fingerprint: String,
    /// Its broker user.
    pub broker_user: String,
    /// Not revoked.
    pub active: bool,
}

/// An outlet by code (active or not).
pub async fn get(db: &mut PgConnection, outlet_code: &str) -> Result<Option<Outlet>, sqlx::Error> {
    sqlx::query_as(
        "SELECT outlet_code, agent_code, public_key, key_fingerprint, broker_user, active \
         FROM writecard.outlets WHERE outlet_code = $1",
    )
    .bind(outlet_code)
    .fetch_optional(db)
    .await
}

/// Every outlet.
pub async fn list(db: &mut PgConnection) -> Result<Vec<Outlet>, sqlx::Error> {
    sqlx::query_as(
        "SELECT outlet_code, agent_code, public_key, key_fingerprint, broker_user, active \
         FROM writecard.outlets ORDER BY outlet_code",
    )
    .fetch_all(db)
    .await
}

/// What provisioning an outlet needs.
#[derive(Debug)]
pub struct Provisioning<'a> {
    /// Outlet code (letters, digits, `-`, `_`).
    pub outlet_code: &'a str,
    /// The agent it belongs to.
    pub agent_code: &'a str,
    /// The node's public key (base64), from `simflow outlet keygen` on the node.
    pub public_key: &'a str,
    /// The broker password for the outlet's user.
    pub password: &'a SecretString,
    /// The vhost of the deployment.
    pub vhost: &'a str,
}

/// Provisions an outlet: its queue, its broker user (read only its queue, publish only
/// results), and its record with the public key. Idempotent; provisioning again replaces the
/// key and password.
pub async fn provision(
    db: &mut PgConnection,
    client: &Client,
    management: &Management,
    params: &TopologyParams,
    provisioning: &Provisioning<'_>,
) -> anyhow::Result<Outlet> {
    anyhow::ensure!(
        valid_outlet_code(provisioning.outlet_code),
        "outlet code {:?}: use 1–32 letters, digits, - or _",
        provisioning.outlet_code
    );
    let key =
        OutletPublicKey::from_base64(provisioning.public_key).context("the outlet's public key")?;
    let agent = simflow_inventory::writing::agent(db, provisioning.agent_code)
        .await?
        .with_context(|| format!("no agent {}", provisioning.agent_code))?;
    anyhow::ensure!(agent.active, "agent {} is not active", agent.ess_code);
    outlet::provision(
        client,
        management,
        provisioning.vhost,
        provisioning.outlet_code,
        provisioning.password,
        params,
    )
    .await?;
    let outlet = sqlx::query_as(
        "INSERT INTO writecard.outlets (outlet_code, agent_code, public_key, key_fingerprint, broker_user) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (outlet_code) DO UPDATE SET agent_code = EXCLUDED.agent_code, public_key = EXCLUDED.public_key, \
             key_fingerprint = EXCLUDED.key_fingerprint, broker_user = EXCLUDED.broker_user, active = true, revoked_at = NULL \
         RETURNING outlet_code, agent_code, public_key, key_fingerprint, broker_user, active",
    )
    .bind(provisioning.outlet_code)
    .bind(provisioning.agent_code)
    .bind(key.to_base64())
    .bind(key.fingerprint())
    .bind(outlet_user(provisioning.vhost, provisioning.outlet_code))
    .fetch_one(db)
    .await?;
    Ok(outlet)
}

/// Revokes an outlet: its broker user goes (the broker closes its connections), and the
/// central side stops routing scripts to it.
pub async fn revoke(
    db: &mut PgConnection,
    management: &Management,
    vhost: &str,
    outlet_code: &str,
) -> anyhow::Result<()> {
    outlet::revoke(management, vhost, outlet_code).await?;
    sqlx::query(
        "UPDATE writecard.outlets SET active = false, revoked_at = now() WHERE outlet_code = $1",
    )
    .bind(outlet_code)
    .execute(db)
    .await?;
    Ok(())
}

/// The outlet register as the inventory's writer ledger asks it, in the job's transaction
/// (a `simflow_inventory::writers::OutletLookup`).
pub fn lookup_for_writers<'c>(
    db: &'c mut PgConnection,
    outlet_code: &'c str,
) -> std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<Option<simflow_inventory::writers::OutletFacts>, sqlx::Error>,
            > + Send
            + 'c,
    >,
> {
    Box::pin(async move {
        Ok(get(db, outlet_code)
            .await?
            .map(|outlet| simflow_inventory::writers::OutletFacts {
                agent_code: outlet.agent_code,
                active: outlet.active,
            }))
    })
}
