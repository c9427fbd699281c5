//! Outlets: the writer nodes beside the outlets' card readers, each belonging to one agent,
//! with the public key its write scripts are sealed to and its own broker user, and their
//! lifecycle: provision → suspend ⇄ resume → revoke (final), every step with an audit row
//! (`writecard.outlet_audit`) written in the step's own transaction.
//!
//! Liveness is the node's heartbeat (`outlet.heartbeat.v1`, recorded by the results handler as
//! `last_seen` on the centre's clock); this module only reads it.

use anyhow::Context;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::Serialize;
use simflow_runtime::amqp::{AnswerTo, Client};
use simflow_runtime::management::Management;
use simflow_runtime::outlet::{self, outlet_user, valid_outlet_code};
use simflow_runtime::outlet_tls::{IssuedCertificate, OutletCa, RevokedSerial};
use simflow_runtime::worker::outgoing_message_id;
use simflow_schemas::topology::TopologyParams;
use simflow_schemas::writecard::CardWriteState;
use simflow_seal::OutletPublicKey;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::reasons;
use crate::states::ScriptState;

/// How long after its last heartbeat a node counts as offline: three beats of the node's
/// default 30 s (`[outlet] heartbeat_seconds`).
pub const OFFLINE_AFTER: std::time::Duration = std::time::Duration::from_secs(90);

/// The columns of [`Outlet`], in its order.
const OUTLET_COLUMNS: &str = "outlet_code, agent_code, public_key, key_fingerprint, broker_user, active, \
     suspended_at IS NOT NULL AND active AS suspended, last_seen, node_version";

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
    /// Suspended: not revoked, but given no new work.
    pub suspended: bool,
    /// When the centre last received the node's heartbeat.
    pub last_seen: Option<DateTime<Utc>>,
    /// The node's software version, from its last heartbeat.
    pub node_version: Option<String>,
}

/// Where an outlet is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutletState {
    /// Gets work.
    Active,
    /// Gets no new work until resumed.
    Suspended,
    /// Gone for good: no broker user, no queue.
    Revoked,
}

impl OutletState {
    /// The state's name (as the CLI and the console show it).
    pub fn name(self) -> &'static str {
        match self {
            OutletState::Active => "active",
            OutletState::Suspended => "suspended",
            OutletState::Revoked => "revoked",
        }
    }
}

impl Outlet {
    /// Its lifecycle state.
    pub fn state(&self) -> OutletState {
        match (self.active, self.suspended) {
            (false, _) => OutletState::Revoked,
            (true, true) => OutletState::Suspended,
            (true, false) => OutletState::Active,
        }
    }

    /// Whether its node was heard from within `offline_after` of `now`.
    pub fn online(&self, now: DateTime<Utc>, offline_after: std::time::Duration) -> bool {
        let window = chrono::Duration::from_std(offline_after).unwrap_or(chrono::Duration::MAX);
        self.active && self.last_seen.is_some_and(|seen| now - seen <= window)
    }
}

/// An outlet by code (active or not).
pub async fn get(db: &mut PgConnection, outlet_code: &str) -> Result<Option<Outlet>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {OUTLET_COLUMNS} FROM writecard.outlets WHERE outlet_code = $1"
    )))
    .bind(outlet_code)
    .fetch_optional(db)
    .await
}

/// An outlet by code, its row locked (`FOR KEY SHARE`) until the transaction ends: work routed
/// to it commits before a suspension or revocation of it does, never after (they lock the row
/// `FOR UPDATE` and wait). Heartbeats (`UPDATE` of other columns) do not wait for it.
pub async fn get_shared(
    db: &mut PgConnection,
    outlet_code: &str,
) -> Result<Option<Outlet>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {OUTLET_COLUMNS} FROM writecard.outlets WHERE outlet_code = $1 FOR KEY SHARE"
    )))
    .bind(outlet_code)
    .fetch_optional(db)
    .await
}

async fn get_locked(db: &mut PgConnection, outlet_code: &str) -> anyhow::Result<Outlet> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {OUTLET_COLUMNS} FROM writecard.outlets WHERE outlet_code = $1 FOR UPDATE"
    )))
    .bind(outlet_code)
    .fetch_optional(db)
    .await?
    .with_context(|| format!("no outlet {outlet_code}"))
}

/// Every outlet.
pub async fn list(db: &mut PgConnection) -> Result<Vec<Outlet>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {OUTLET_COLUMNS} FROM writecard.outlets ORDER BY outlet_code"
    )))
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
    /// Who provisions, for the audit.
    pub by: &'a str,
}

/// What both ways of provisioning check before touching the broker: a code safe in names, a
/// readable public key, an active agent, and no revocation of that code (revocation is final).
async fn check_provisionable(
    db: &mut PgConnection,
    outlet_code: &str,
    agent_code: &str,
    public_key: &str,
) -> anyhow::Result<OutletPublicKey> {
    anyhow::ensure!(
        valid_outlet_code(outlet_code),
        "outlet code {outlet_code:?}: use 1–32 letters, digits, - or _"
    );
    let key = OutletPublicKey::from_base64(public_key).context("the outlet's public key")?;
    let agent = simflow_inventory::writing::agent(db, agent_code)
        .await?
        .with_context(|| format!("no agent {agent_code}"))?;
    anyhow::ensure!(agent.active, "agent {} is not active", agent.ess_code);
    if let Some(existing) = get(db, outlet_code).await? {
        anyhow::ensure!(
            existing.active,
            "outlet {outlet_code} was revoked, and revocation is final: provision the outlet under a new code"
        );
    }
    Ok(key)
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
    let key = check_provisionable(
        db,
        provisioning.outlet_code,
        provisioning.agent_code,
        provisioning.public_key,
    )
    .await?;
    outlet::provision(
        client,
        management,
        provisioning.vhost,
        provisioning.outlet_code,
        provisioning.password,
        params,
    )
    .await?;
    // The record and its audit row commit together.
    let mut tx = sqlx::Connection::begin(&mut *db).await?;
    let outlet: Outlet = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO writecard.outlets (outlet_code, agent_code, public_key, key_fingerprint, broker_user) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (outlet_code) DO UPDATE SET agent_code = EXCLUDED.agent_code, public_key = EXCLUDED.public_key, \
             key_fingerprint = EXCLUDED.key_fingerprint, broker_user = EXCLUDED.broker_user, active = true, revoked_at = NULL \
         RETURNING {OUTLET_COLUMNS}"
    )))
    .bind(provisioning.outlet_code)
    .bind(provisioning.agent_code)
    .bind(key.to_base64())
    .bind(key.fingerprint())
    .bind(outlet_user(provisioning.vhost, provisioning.outlet_code))
    .fetch_one(&mut *tx)
    .await?;
    let step = Step {
        by: provisioning.by,
        reason: "provisioned",
    };
    let detail = serde_json::json!({
        "agent_code": outlet.agent_code,
        "key_fingerprint": outlet.key_fingerprint,
        "broker_user": outlet.broker_user,
    });
    audit(
        &mut tx,
        &outlet.outlet_code,
        AuditAction::Provision,
        &step,
        &detail,
    )
    .await?;
    tx.commit().await?;
    Ok(outlet)
}

/// Who takes a lifecycle step, and why (both go into the audit row).
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    /// An ops login, or the outlet's broker user for what a node did.
    pub by: &'a str,
    /// Why, in the words of whoever took the step.
    pub reason: &'a str,
}

/// A lifecycle step, as the audit names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// Provisioned (or provisioned again: new key, new password).
    Provision,
    /// Its key was replaced.
    Rotate,
    /// Suspended.
    Suspend,
    /// Resumed.
    Resume,
    /// Revoked, for good.
    Revoke,
}

impl AuditAction {
    /// The step's name, as stored.
    pub fn name(self) -> &'static str {
        match self {
            AuditAction::Provision => "provision",
            AuditAction::Rotate => "rotate",
            AuditAction::Suspend => "suspend",
            AuditAction::Resume => "resume",
            AuditAction::Revoke => "revoke",
        }
    }
}

/// One audit row of an outlet's lifecycle.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditRecord {
    /// Its number.
    pub audit_id: i64,
    /// The outlet.
    pub outlet_code: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: String,
    /// What.
    pub action: AuditAction,
    /// Why.
    pub reason: String,
    /// What changed (fingerprints, users, scripts expired; never a secret).
    pub detail: sqlx::types::Json<serde_json::Value>,
}

/// Writes an audit row in the caller's transaction; returns its number.
async fn audit(
    db: &mut PgConnection,
    outlet_code: &str,
    action: AuditAction,
    step: &Step<'_>,
    detail: &serde_json::Value,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO writecard.outlet_audit (outlet_code, actor, action, reason, detail) \
         VALUES ($1, $2, $3, $4, $5) RETURNING audit_id",
    )
    .bind(outlet_code)
    .bind(step.by)
    .bind(action)
    .bind(step.reason)
    .bind(sqlx::types::Json(detail))
    .fetch_one(db)
    .await
}

/// The latest audit rows, newest first, of one outlet or of all.
pub async fn audit_trail(
    db: &mut PgConnection,
    outlet_code: Option<&str>,
    limit: i64,
) -> Result<Vec<AuditRecord>, sqlx::Error> {
    sqlx::query_as(
        "SELECT audit_id, outlet_code, at, actor, action, reason, detail FROM writecard.outlet_audit \
         WHERE $1::text IS NULL OR outlet_code = $1 ORDER BY audit_id DESC LIMIT $2",
    )
    .bind(outlet_code)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// How a key rotation the node announced was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// The new key is the one scripts are sealed to from now on.
    Recorded,
    /// It was already (the same announcement again).
    AlreadyCurrent,
    /// The node rotated from a key the centre does not seal to: refused.
    FromUnknownKey,
}

/// Records a key rotation the node announced (its validated broker user is `by`), with its
/// audit row, in the caller's transaction.
pub async fn record_rotation(
    db: &mut PgConnection,
    rotated: &simflow_schemas::outlet::OutletKeyRotated,
    key: &OutletPublicKey,
    by: &str,
) -> Result<Rotation, sqlx::Error> {
    let current: Option<(String, bool)> = sqlx::query_as(
        "SELECT key_fingerprint, active FROM writecard.outlets WHERE outlet_code = $1 FOR UPDATE",
    )
    .bind(&rotated.outlet_code)
    .fetch_optional(&mut *db)
    .await?;
    let Some((fingerprint, active)) = current else {
        return Ok(Rotation::FromUnknownKey);
    };
    if fingerprint == key.fingerprint() {
        return Ok(Rotation::AlreadyCurrent);
    }
    if !active || fingerprint != rotated.previous_fingerprint {
        return Ok(Rotation::FromUnknownKey);
    }
    sqlx::query(
        "UPDATE writecard.outlets SET public_key = $2, key_fingerprint = $3 WHERE outlet_code = $1",
    )
    .bind(&rotated.outlet_code)
    .bind(key.to_base64())
    .bind(key.fingerprint())
    .execute(&mut *db)
    .await?;
    let step = Step {
        by,
        reason: "the node rotated its key",
    };
    let detail = serde_json::json!({
        "previous_fingerprint": fingerprint,
        "key_fingerprint": key.fingerprint(),
        "previous_key_retires_at": rotated.previous_key_retires_at,
    });
    audit(
        db,
        &rotated.outlet_code,
        AuditAction::Rotate,
        &step,
        &detail,
    )
    .await?;
    tracing::info!(outlet = %rotated.outlet_code, key = %key.fingerprint(), previous = %fingerprint, "outlet key rotated");
    Ok(Rotation::Recorded)
}

/// Suspends an outlet: write requests and reads for it are refused (`OUTLET_SUSPENDED`) from
/// the commit on. Work already in its queue stays there: it was accepted before the
/// suspension, a customer may be at the counter for it, and it expires by itself within the
/// script TTL anyway. Suspending a suspended outlet changes nothing but is audited.
pub async fn suspend(pool: &PgPool, outlet_code: &str, step: &Step<'_>) -> anyhow::Result<Outlet> {
    set_suspended(pool, outlet_code, step, true).await
}

/// Resumes a suspended outlet: it gets work again.
pub async fn resume(pool: &PgPool, outlet_code: &str, step: &Step<'_>) -> anyhow::Result<Outlet> {
    set_suspended(pool, outlet_code, step, false).await
}

async fn set_suspended(
    pool: &PgPool,
    outlet_code: &str,
    step: &Step<'_>,
    suspended: bool,
) -> anyhow::Result<Outlet> {
    let mut tx = pool.begin().await?;
    let before = get_locked(&mut tx, outlet_code).await?;
    anyhow::ensure!(
        before.active,
        "outlet {outlet_code} is revoked; revocation is final"
    );
    sqlx::query(
        "UPDATE writecard.outlets SET suspended_at = CASE WHEN $2 THEN coalesce(suspended_at, now()) END \
         WHERE outlet_code = $1",
    )
    .bind(outlet_code)
    .bind(suspended)
    .execute(&mut *tx)
    .await?;
    let action = if suspended {
        AuditAction::Suspend
    } else {
        AuditAction::Resume
    };
    let detail = serde_json::json!({ "state_before": before.state().name() });
    audit(&mut tx, outlet_code, action, step, &detail).await?;
    let after = get_locked(&mut tx, outlet_code).await?;
    tx.commit().await?;
    tracing::info!(
        outlet = outlet_code,
        state = after.state().name(),
        by = step.by,
        "outlet lifecycle step"
    );
    Ok(after)
}

/// What a revocation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// The outlet.
    pub outlet_code: String,
    /// Scripts that were pending for it and ended with `SCRIPT_EXPIRED`.
    pub expired_scripts: Vec<Uuid>,
}

/// Revokes an outlet, for good. In this order:
///
/// 1. the record (with its audit row): from the commit on, no work is routed to it (write
///    requests lock its row to share, so one routed before has committed by then);
/// 2. the broker: its user is deleted and its connections closed, so the node can neither take
///    work nor publish, and cannot reconnect. Revocation takes effect here: a result the node
///    published before is on `simflow.outlet-results` and is recorded as usual;
/// 3. its queue is deleted with what it held;
/// 4. every script still `sent` to it (queued, or taken and not answered) is settled as
///    expired, and `card.write_failed` with `SCRIPT_EXPIRED` (card untouched) is published for
///    each before the commit, with message ids derived from the script id, so a revocation run
///    again after a failure publishes the same events again and never different ones.
///
/// A result of a script the node was writing that reaches the centre only after step 4 (the
/// node published it just before step 2) is still recorded as the card really is, as for a
/// script that expired in the queue: the clerk first hears `SCRIPT_EXPIRED`, then the card's
/// real outcome. Running it again on a revoked outlet repeats steps 2–4 (nothing left to do is
/// fine) and is audited again.
///
/// This is the one revocation: whatever else an outlet owns (a client certificate) is revoked
/// by extending this function, so no path forgets a part.
pub async fn revoke(
    pool: &PgPool,
    client: &Client,
    management: &Management,
    vhost: &str,
    outlet_code: &str,
    step: &Step<'_>,
) -> anyhow::Result<Revoked> {
    let mut tx = pool.begin().await?;
    let before = get_locked(&mut tx, outlet_code).await?;
    sqlx::query(
        "UPDATE writecard.outlets SET active = false, suspended_at = NULL, revoked_at = coalesce(revoked_at, now()) \
         WHERE outlet_code = $1",
    )
    .bind(outlet_code)
    .execute(&mut *tx)
    .await?;
    let detail = serde_json::json!({
        "state_before": before.state().name(),
        "broker_user": before.broker_user,
        "key_fingerprint": before.key_fingerprint,
    });
    let audit_id = audit(&mut tx, outlet_code, AuditAction::Revoke, step, &detail).await?;
    tx.commit().await?;

    outlet::revoke(management, vhost, outlet_code)
        .await
        .context("removing the outlet's broker user")?;
    outlet::delete_queue(client, outlet_code)
        .await
        .context("deleting the outlet's queue")?;

    let mut tx = pool.begin().await?;
    let pending: Vec<(Uuid, Uuid, String)> = sqlx::query_as(
        "SELECT script_id, order_id, iccid FROM writecard.scripts \
         WHERE outlet_code = $1 AND state = $2 ORDER BY created_at FOR UPDATE",
    )
    .bind(outlet_code)
    .bind(ScriptState::Sent)
    .fetch_all(&mut *tx)
    .await?;
    let mut expired_scripts = Vec::with_capacity(pending.len());
    let mut sent = Vec::new();
    for (script_id, order_id, iccid) in pending {
        let outcome = crate::results::write_failed(
            order_id,
            outlet_code,
            &iccid,
            CardWriteState::Untouched,
            reasons::SCRIPT_EXPIRED.message(),
        );
        crate::results::settle_script(&mut tx, script_id, ScriptState::Expired, &outcome).await?;
        let job_message_id = format!("revoke:{script_id}");
        for (index, message) in outcome.messages.iter().enumerate() {
            let answer_to = AnswerTo {
                job_message_id: &job_message_id,
                correlation_id: &job_message_id,
                reply_to: None,
            };
            sent.extend(
                client
                    .publisher()
                    .send_outgoing(
                        message,
                        &outgoing_message_id(&job_message_id, index),
                        &answer_to,
                    )
                    .await?,
            );
        }
        expired_scripts.push(script_id);
    }
    simflow_runtime::amqp::all_confirmed(sent)
        .await
        .context("publishing SCRIPT_EXPIRED for the revoked outlet's scripts")?;
    sqlx::query(
        "UPDATE writecard.outlet_audit SET detail = detail || jsonb_build_object('scripts_expired', $2::bigint) \
         WHERE audit_id = $1",
    )
    .bind(audit_id)
    .bind(i64::try_from(expired_scripts.len()).unwrap_or(i64::MAX))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(
        outlet = outlet_code,
        by = step.by,
        expired = expired_scripts.len(),
        "outlet revoked"
    );
    Ok(Revoked {
        outlet_code: outlet_code.to_owned(),
        expired_scripts,
    })
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
    /// Who provisions, for the audit.
    pub by: &'a str,
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
    let key = check_provisionable(
        db,
        provisioning.outlet_code,
        provisioning.agent_code,
        provisioning.public_key,
    )
    .await?;
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
    let outlet: Outlet = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO writecard.outlets (outlet_code, agent_code, public_key, key_fingerprint, broker_user) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (outlet_code) DO UPDATE SET agent_code = EXCLUDED.agent_code, public_key = EXCLUDED.public_key, \
             key_fingerprint = EXCLUDED.key_fingerprint, broker_user = EXCLUDED.broker_user, active = true, revoked_at = NULL \
         RETURNING {OUTLET_COLUMNS}"
    )))
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
    let step = Step {
        by: provisioning.by,
        reason: "provisioned with a client certificate",
    };
    let detail = serde_json::json!({
        "agent_code": outlet.agent_code,
        "key_fingerprint": outlet.key_fingerprint,
        "broker_user": outlet.broker_user,
        "certificate_serial": certificate.serial,
    });
    audit(
        &mut transaction,
        &outlet.outlet_code,
        AuditAction::Provision,
        &step,
        &detail,
    )
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
