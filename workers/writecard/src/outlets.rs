//! Outlets: the writer nodes beside the outlets' card readers, each belonging to one agent,
//! with the public key its write scripts are sealed to and its own broker user.

use anyhow::Context;
use secrecy::SecretString;
use simflow_runtime::amqp::Client;
use simflow_runtime::management::Management;
use simflow_runtime::outlet::{self, outlet_user, valid_outlet_code};
use simflow_runtime::outlet_tls::{IssuedCertificate, OutletCa, RevokedSerial};
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

/// What provisioning an outlet with a client certificate (over TLS) needs.
#[derive(Debug)]
pub struct TlsProvisioning<'a> {
    /// Outlet code (letters, digits, `-`, `_`).
    pub outlet_code: &'a str,
    /// The agent it belongs to.
    pub agent_code: &'a str,
    /// The node's public key for sealed scripts (base64), from `simflow outlet keygen`.
    pub public_key: &'a str,
    /// The node's certificate signing request (PEM), from `simflow outlet tls-request`: its
    /// common name must be the outlet's broker user.
    pub csr_pem: &'a str,
    /// The vhost of the deployment.
    pub vhost: &'a str,
    /// How long the certificate is valid (`[writecard] outlet_cert_days`).
    pub validity: std::time::Duration,
}

/// An outlet provisioned with a certificate.
#[derive(Debug)]
pub struct TlsProvisioned {
    /// The outlet's record.
    pub outlet: Outlet,
    /// Its new certificate, for the node's `tls_cert` file.
    pub certificate: IssuedCertificate,
}

/// Provisions an outlet that logs in with a client certificate: the CA signs the node's
/// request first (a bad request changes nothing), then the outlet gets its queue and a broker
/// user without a password (`EXTERNAL` only, same narrow permissions), and its record with
/// the public key and the certificate's serial and expiry. Idempotent like [`provision`];
/// provisioning again issues a new certificate (a renewal) and takes a password away.
pub async fn provision_tls(
    db: &mut PgConnection,
    client: &Client,
    management: &Management,
    params: &TopologyParams,
    ca: &OutletCa,
    provisioning: &TlsProvisioning<'_>,
) -> anyhow::Result<TlsProvisioned> {
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
    let broker_user = outlet_user(provisioning.vhost, provisioning.outlet_code);
    let certificate = ca.issue(provisioning.csr_pem, &broker_user, provisioning.validity)?;
    outlet::provision_external(
        client,
        management,
        provisioning.vhost,
        provisioning.outlet_code,
        params,
    )
    .await?;
    let mut transaction = sqlx::Connection::begin(&mut *db).await?;
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
    .bind(&broker_user)
    .fetch_one(&mut *transaction)
    .await?;
    sqlx::query(
        "INSERT INTO writecard.outlet_certificates (serial, outlet_code, common_name, not_before, not_after) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&certificate.serial)
    .bind(provisioning.outlet_code)
    .bind(&certificate.common_name)
    .bind(certificate.not_before)
    .bind(certificate.not_after)
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(TlsProvisioned {
        outlet,
        certificate,
    })
}

/// A certificate issued to an outlet, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OutletCertificate {
    /// Serial, upper-case hex.
    pub serial: String,
    /// The outlet.
    pub outlet_code: String,
    /// Its common name (the outlet's broker user).
    pub common_name: String,
    /// Valid from.
    pub not_before: chrono::DateTime<chrono::Utc>,
    /// Valid until.
    pub not_after: chrono::DateTime<chrono::Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The certificates issued to an outlet, newest first.
pub async fn certificates(
    db: &mut PgConnection,
    outlet_code: &str,
) -> Result<Vec<OutletCertificate>, sqlx::Error> {
    sqlx::query_as(
        "SELECT serial, outlet_code, common_name, not_before, not_after, revoked_at \
         FROM writecard.outlet_certificates WHERE outlet_code = $1 ORDER BY issued_at DESC, serial",
    )
    .bind(outlet_code)
    .fetch_all(db)
    .await
}

/// Where revocation writes the outlet CA's CRL.
#[derive(Debug)]
pub struct CrlFile<'a> {
    /// The CA that signs it.
    pub ca: &'a OutletCa,
    /// The file (written whole: a temporary file beside it, then renamed).
    pub path: &'a std::path::Path,
    /// How long the CRL is valid (its `nextUpdate`).
    pub validity: std::time::Duration,
}

/// Makes an outlet's certificates useless at once, for the outlet's revocation: its broker
/// user is deleted first (the broker closes its connections, and `EXTERNAL` then finds no user
/// for the certificate's name), then every certificate of the outlet not yet revoked is
/// recorded as revoked, and, when `crl` is given, the CA's CRL is written anew with every
/// revoked certificate that has not expired. Idempotent; returns the serials it revoked now.
///
/// Does not mark the outlet itself inactive: that is the outlet's revocation, which calls this.
pub async fn revoke_certificate(
    db: &mut PgConnection,
    management: &Management,
    vhost: &str,
    outlet_code: &str,
    crl: Option<&CrlFile<'_>>,
) -> anyhow::Result<Vec<String>> {
    outlet::revoke(management, vhost, outlet_code).await?;
    let revoked: Vec<String> = sqlx::query_scalar(
        "UPDATE writecard.outlet_certificates SET revoked_at = now() \
         WHERE outlet_code = $1 AND revoked_at IS NULL RETURNING serial",
    )
    .bind(outlet_code)
    .fetch_all(&mut *db)
    .await?;
    if let Some(crl) = crl {
        write_crl(db, crl).await?;
    }
    Ok(revoked)
}

/// Writes the outlet CA's CRL: every revoked certificate that has not expired (an expired one
/// is refused anyway). Its number is the time of writing in seconds, so it only grows.
pub async fn write_crl(db: &mut PgConnection, crl: &CrlFile<'_>) -> anyhow::Result<()> {
    let rows: Vec<(String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT serial, revoked_at FROM writecard.outlet_certificates \
         WHERE revoked_at IS NOT NULL AND not_after > now() ORDER BY serial",
    )
    .fetch_all(db)
    .await?;
    let revoked: Vec<RevokedSerial> = rows
        .into_iter()
        .map(|(serial, revoked_at)| RevokedSerial { serial, revoked_at })
        .collect();
    let number = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default();
    let pem = crl.ca.crl(&revoked, number, crl.validity)?;
    let temporary = crl.path.with_extension("crl.tmp");
    std::fs::write(&temporary, pem).with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, crl.path)
        .with_context(|| format!("writing {}", crl.path.display()))?;
    Ok(())
}
