//! Batch issue to an agent (批量领卡): prepare, then commit (批量领卡成功，确认正式提交？).
//!
//! Prepare checks every rule — the ESS staff ID is bound to the on-site target warehouse with
//! the batch permission, its department equals the department the cards carry, the card type
//! matches, the agent exists, is active and belongs to the warehouse's unit, every card is in
//! that warehouse, blank and held by nothing — and holds the cards until `expires_at`. A failing
//! prepare lists which cards fail and why and holds nothing. Commit moves the held cards to the
//! agent (one UPDATE, one ledger INSERT); committing twice is a success with no second effect;
//! a hold that lapsed holds nothing (the availability check ignores lapsed holds) and its batch
//! can no longer be committed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use simflow_runtime::create_once::{self, Creates};
use simflow_runtime::{Handler, JobContext, JobError, Outcome};
use simflow_schemas::issue::{IssueCommit, IssueCommitted, IssuePrepare, IssuePrepared};
use simflow_schemas::registry::IssueJob;
use simflow_schemas::topology::JobQueue;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::cards::{self, Held, Hold, WarehouseStock};
use crate::movement::{self, Cause, HeldBy, Location, Movement, Which};
use crate::reasons;
use crate::selection;
use crate::slip;
use crate::staff::{self, Permission};
use crate::states::{BatchState, CardState, LedgerEvent};
use crate::writers::{self, OutletLookup};

/// The inventory section of the configuration (`[inventory]`).
#[derive(Debug, Clone, Deserialize)]
pub struct InventorySettings {
    /// How long a prepared batch holds its cards before it lapses, in seconds.
    #[serde(default = "default_issue_hold_seconds")]
    pub issue_hold_seconds: u64,
}

fn default_issue_hold_seconds() -> u64 {
    30 * 60
}

impl Default for InventorySettings {
    fn default() -> Self {
        InventorySettings {
            issue_hold_seconds: default_issue_hold_seconds(),
        }
    }
}

/// The batch issue worker's handler; it also takes the branch's writer ledger jobs
/// (`writer.*`, [`crate::writers`]).
#[derive(Debug, Clone)]
pub struct IssueHandler {
    /// How long a prepared batch holds its cards.
    pub hold: Duration,
    /// The outlet register a writer issue checks the outlet against.
    pub outlets: OutletLookup,
}

impl IssueHandler {
    /// A handler configured from the `[inventory]` settings, with the outlet register.
    pub fn new(settings: &InventorySettings, outlets: OutletLookup) -> IssueHandler {
        IssueHandler {
            hold: Duration::from_secs(settings.issue_hold_seconds),
            outlets,
        }
    }
}

impl Handler for IssueHandler {
    type Job = IssueJob;
    const QUEUE: JobQueue = JobQueue::Issue;

    async fn handle(
        &self,
        context: &JobContext,
        job: IssueJob,
        db: &mut PgConnection,
    ) -> Result<Outcome, JobError> {
        match job {
            IssueJob::Prepare(prepare) => prepare_batch(self.hold, context, prepare, db).await,
            IssueJob::Commit(commit) => commit_batch(context, commit, db).await,
            IssueJob::WriterPurchase(purchase) => writers::purchase(context, purchase, db).await,
            IssueJob::WriterIssue(issue) => writers::issue(self.outlets, context, issue, db).await,
            IssueJob::WriterReturn(back) => writers::take_back(context, back, db).await,
            IssueJob::WriterRepair(repair) => writers::repair(context, repair, db).await,
            IssueJob::WriterWriteOff(write_off) => writers::write_off(context, write_off, db).await,
        }
    }
}

#[derive(Debug, sqlx::FromRow)]
struct BatchRow {
    warehouse_code: String,
    agent_code: String,
    card_type: String,
    department_id: String,
    selection: sqlx::types::Json<serde_json::Value>,
    state: BatchState,
    card_count: i32,
    first_iccid: String,
    last_iccid: String,
    acceptance_slip: String,
    expires_at: DateTime<Utc>,
    expired: bool,
    committed_at: Option<DateTime<Utc>>,
}

async fn lock_batch(db: &mut PgConnection, batch_id: Uuid) -> Result<Option<BatchRow>, JobError> {
    Ok(sqlx::query_as::<_, BatchRow>(
        "SELECT warehouse_code, agent_code, card_type, department_id, selection, state, card_count, \
                first_iccid, last_iccid, acceptance_slip, expires_at, expires_at < now() AS expired, committed_at \
         FROM inventory.issue_batches WHERE batch_id = $1 FOR UPDATE",
    )
    .bind(batch_id)
    .fetch_optional(&mut *db)
    .await?)
}

/// The facts about a warehouse and an agent that issue and return check.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct Counterparts {
    pub warehouse_kind: Option<String>,
    pub warehouse_unit: Option<i32>,
    pub agent_name: Option<String>,
    pub agent_unit: Option<i32>,
    pub agent_active: Option<bool>,
    pub unit_name_zh: Option<String>,
    pub card_type_zh: Option<String>,
    pub card_type_en: Option<String>,
}

/// Looks up the warehouse, the agent and the card type in one round trip and checks that the
/// warehouse is an on-site target warehouse and the agent exists in its unit.
pub(crate) async fn check_counterparts(
    db: &mut PgConnection,
    warehouse: &str,
    agent: &str,
    card_type: Option<&str>,
    require_active_agent: bool,
) -> Result<Counterparts, JobError> {
    let facts: Counterparts = sqlx::query_as(
        "SELECT w.kind AS warehouse_kind, w.unit_id AS warehouse_unit, a.name AS agent_name, \
                a.unit_id AS agent_unit, a.active AS agent_active, u.name_zh AS unit_name_zh, \
                t.name_zh AS card_type_zh, t.name_en AS card_type_en \
         FROM (SELECT 1) AS one \
         LEFT JOIN inventory.warehouses w ON w.code = $1 \
         LEFT JOIN inventory.units u ON u.unit_id = w.unit_id \
         LEFT JOIN inventory.agents a ON a.ess_code = $2 \
         LEFT JOIN inventory.card_types t ON t.code = $3",
    )
    .bind(warehouse)
    .bind(agent)
    .bind(card_type)
    .fetch_one(&mut *db)
    .await?;
    match facts.warehouse_kind.as_deref() {
        None => return Err(JobError::reject(reasons::WAREHOUSE_UNKNOWN)),
        Some("onsite_target") => {}
        Some(_) => return Err(JobError::reject(reasons::WAREHOUSE_NOT_TARGET)),
    }
    if card_type.is_some() && facts.card_type_zh.is_none() {
        return Err(JobError::reject(reasons::CARD_TYPE_UNKNOWN));
    }
    if facts.agent_name.is_none() {
        return Err(JobError::reject(reasons::AGENT_UNKNOWN));
    }
    if require_active_agent && facts.agent_active != Some(true) {
        return Err(JobError::reject(reasons::AGENT_INACTIVE));
    }
    if facts.agent_unit != facts.warehouse_unit {
        return Err(JobError::reject(reasons::AGENT_OTHER_UNIT));
    }
    Ok(facts)
}

async fn prepare_batch(
    hold: Duration,
    context: &JobContext,
    prepare: IssuePrepare,
    db: &mut PgConnection,
) -> Result<Outcome, JobError> {
    create_once::lock(db, Creates::IssueBatch, prepare.batch_id).await?;
    let selection_json = serde_json::to_value(&prepare.cards).unwrap_or_default();
    let stored = lock_batch(db, prepare.batch_id).await?;
    let same = |stored: &BatchRow| {
        stored.warehouse_code == prepare.warehouse
            && stored.agent_code == prepare.agent_ess_code
            && stored.card_type == prepare.card_type
            && stored.selection.0 == selection_json
    };
    if let Some(existing) = create_once::compare(stored, same, reasons::BATCH_ID_CONFLICT)? {
        if existing.state != BatchState::Committed && existing.expired {
            return Err(JobError::reject(reasons::BATCH_EXPIRED));
        }
        return Ok(prepared_event(
            prepare.batch_id,
            &existing.agent_code,
            existing.card_count,
            existing.expires_at,
            existing.acceptance_slip,
        ));
    }

    let facts = check_counterparts(
        db,
        &prepare.warehouse,
        &prepare.agent_ess_code,
        Some(&prepare.card_type),
        true,
    )
    .await?;
    let staff = staff::require(
        db,
        &prepare.staff_id,
        &prepare.warehouse,
        Permission::EssBatch,
    )
    .await?;
    let selection = selection::parse(&prepare.cards).map_err(JobError::Rejected)?;
    let expires_at: DateTime<Utc> = sqlx::query_scalar("SELECT now() + make_interval(secs => $1)")
        .bind(hold.as_secs_f64())
        .fetch_one(&mut *db)
        .await?;
    let stock = WarehouseStock {
        warehouse: &prepare.warehouse,
        card_type: &prepare.card_type,
        department: Some(&staff.department_id),
    };
    let Held {
        count,
        first,
        last,
        runs: ranges,
    } = cards::hold(
        db,
        &selection,
        &stock,
        &Hold::Batch {
            batch_id: prepare.batch_id,
            until: expires_at,
        },
    )
    .await?;
    let acceptance_slip = slip::issue_slip(&slip::IssueSlip {
        batch_id: prepare.batch_id,
        warehouse: &prepare.warehouse,
        unit_name_zh: facts.unit_name_zh.as_deref().unwrap_or_default(),
        agent_code: &prepare.agent_ess_code,
        agent_name: facts.agent_name.as_deref().unwrap_or_default(),
        card_type_zh: facts.card_type_zh.as_deref().unwrap_or_default(),
        card_type_en: facts.card_type_en.as_deref().unwrap_or_default(),
        card_count: count,
        ranges: &ranges,
        staff_id: &prepare.staff_id,
        expires_at,
    });
    sqlx::query(
        "INSERT INTO inventory.issue_batches (batch_id, warehouse_code, agent_code, card_type, department_id, \
             selection, state, card_count, first_iccid, last_iccid, acceptance_slip, prepared_by, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $13, $7, $8, $9, $10, $11, $12)",
    )
    .bind(prepare.batch_id)
    .bind(&prepare.warehouse)
    .bind(&prepare.agent_ess_code)
    .bind(&prepare.card_type)
    .bind(&staff.department_id)
    .bind(sqlx::types::Json(&selection_json))
    .bind(i32::try_from(count).unwrap_or(i32::MAX))
    .bind(&first)
    .bind(&last)
    .bind(&acceptance_slip)
    .bind(&prepare.staff_id)
    .bind(expires_at)
    .bind(BatchState::Prepared)
    .execute(&mut *db)
    .await?;
    tracing::info!(batch = %prepare.batch_id, cards = count, job = %context.message_id, "batch issue prepared");
    Ok(prepared_event(
        prepare.batch_id,
        &prepare.agent_ess_code,
        i32::try_from(count).unwrap_or(i32::MAX),
        expires_at,
        acceptance_slip,
    ))
}

fn prepared_event(
    batch_id: Uuid,
    agent: &str,
    card_count: i32,
    expires_at: DateTime<Utc>,
    acceptance_slip: String,
) -> Outcome {
    let event = IssuePrepared {
        batch_id,
        agent_ess_code: agent.to_owned(),
        card_count: u64::try_from(card_count).unwrap_or_default(),
        expires_at,
        acceptance_slip,
    };
    Outcome::event(&event)
}

async fn commit_batch(
    context: &JobContext,
    commit: IssueCommit,
    db: &mut PgConnection,
) -> Result<Outcome, JobError> {
    let Some(batch) = lock_batch(db, commit.batch_id).await? else {
        return Err(JobError::reject(reasons::BATCH_UNKNOWN));
    };
    let staff = staff::require(
        db,
        &commit.staff_id,
        &batch.warehouse_code,
        Permission::EssBatch,
    )
    .await?;
    if staff.department_id != batch.department_id {
        return Err(JobError::reject(reasons::DEPARTMENT_MISMATCH));
    }
    let committed = |committed_at, already_committed| {
        let event = IssueCommitted {
            batch_id: commit.batch_id,
            agent_ess_code: batch.agent_code.clone(),
            card_count: u64::try_from(batch.card_count).unwrap_or_default(),
            committed_at,
            already_committed,
        };
        Outcome::event(&event)
    };
    match batch.state {
        BatchState::Committed => {
            return Ok(committed(batch.committed_at.unwrap_or_else(Utc::now), true));
        }
        BatchState::Expired => return Err(JobError::reject(reasons::BATCH_EXPIRED)),
        BatchState::Prepared if batch.expired => {
            return Err(JobError::reject(reasons::BATCH_EXPIRED));
        }
        BatchState::Prepared => {}
    }
    let moved = movement::move_cards(
        db,
        &Movement {
            event: LedgerEvent::Issued,
            which: Which::Held {
                by: HeldBy::Batch(commit.batch_id),
                first: &batch.first_iccid,
                last: &batch.last_iccid,
            },
            from: Some(Location::Warehouse(&batch.warehouse_code)),
            to: Some(Location::Agent(&batch.agent_code)),
            in_states: &[CardState::Blank],
            new_state: None,
            release_holds: true,
            cause: Cause {
                reference: &commit.batch_id.to_string(),
                staff_id: Some(&commit.staff_id),
                job_message_id: &context.message_id,
            },
        },
    )
    .await?;
    if i64::try_from(moved) != Ok(i64::from(batch.card_count)) {
        // Some cards were taken by a later batch after this hold lapsed: commit nothing.
        return Err(JobError::reject(reasons::BATCH_EXPIRED));
    }
    let committed_at: DateTime<Utc> = sqlx::query_scalar(
        "UPDATE inventory.issue_batches SET state = $3, committed_by = $2, committed_at = now() \
         WHERE batch_id = $1 RETURNING committed_at",
    )
    .bind(commit.batch_id)
    .bind(&commit.staff_id)
    .bind(BatchState::Committed)
    .fetch_one(&mut *db)
    .await?;
    tracing::info!(batch = %commit.batch_id, cards = moved, "batch issue committed");
    Ok(committed(committed_at, false))
}
