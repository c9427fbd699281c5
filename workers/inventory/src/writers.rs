//! The writer ledger (写卡器发放明细): card writers as assets of a branch.
//!
//! A writer is named by its serial (what its reader reports over PC/SC, or the serial the
//! outlet's configuration gives a reader whose driver reports none) and is in one state:
//!
//! ```text
//! purchase ──▶ in_stock ──issue──▶ issued ──return──▶ in_stock
//!              in_stock ──repair out──▶ in_repair ──repair back──▶ in_stock
//!              in_stock | in_repair ──write off──▶ written_off (final)
//! ```
//!
//! Every step locks the writer's row, checks the staff ID (`writer_purchase` or `writers` on the
//! branch's secondary warehouse), moves it with one `UPDATE` and appends one entry to
//! `inventory.writer_ledger` (append-only, a trigger). A step whose effect is already there —
//! the same purchase recorded again, an issue to the outlet that holds it, a second return —
//! answers `already: true` and changes nothing, like approving twice; any other step from the
//! wrong state is refused with its reason. A branch is named by its secondary warehouse code.
//!
//! The outlet register belongs to the write-card worker, so the handler asks it through an
//! [`OutletLookup`] the process wires in; the agent an issued writer is recorded with is the
//! outlet's, never one the publisher names.
//!
//! This module does not decide what a write from a foreign reader means: the write-card worker
//! asks [`holder_of`] and applies its own setting.

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use simflow_runtime::{JobContext, JobError, Outcome};
use simflow_schemas::writers::{
    MAX_WRITER_SERIAL_CHARS, RepairDirection, WriterIssue, WriterMoved, WriterMovement,
    WriterPurchase, WriterRepair, WriterReturn, WriterState as WireState, WriterWriteOff,
};
use sqlx::PgConnection;

use crate::reasons::{self, Reason};
use crate::staff::{self, Permission};
use crate::states::{WriterEvent, WriterState};

/// What the outlet register says of one outlet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutletFacts {
    /// The outlet's agent (ESS department code).
    pub agent_code: String,
    /// False once the outlet is revoked.
    pub active: bool,
}

/// Looks an outlet up in the register the write-card worker keeps (in the job's transaction).
pub type OutletLookup = for<'c> fn(
    &'c mut PgConnection,
    &'c str,
) -> Pin<
    Box<dyn Future<Output = Result<Option<OutletFacts>, sqlx::Error>> + Send + 'c>,
>;

/// Checks a writer serial as the contract states it: 1 to 64 characters, taken as written.
pub fn parse_serial(serial: &str) -> Result<&str, Reason> {
    let length = serial.chars().count();
    if length == 0 || length > MAX_WRITER_SERIAL_CHARS as usize {
        return Err(reasons::WRITER_SERIAL_INVALID);
    }
    Ok(serial)
}

/// One writer as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Writer {
    /// Its serial.
    pub writer_serial: String,
    /// Its model.
    pub model: String,
    /// The purchase reference.
    pub purchase_ref: String,
    /// The branch (secondary warehouse code).
    pub branch_code: String,
    /// Where it is.
    pub state: WriterState,
    /// The outlet that has it, while issued.
    pub outlet_code: Option<String>,
    /// That outlet's agent, while issued.
    pub agent_code: Option<String>,
    /// When it last moved.
    pub moved_at: DateTime<Utc>,
}

const WRITER_COLUMNS: &str =
    "writer_serial, model, purchase_ref, branch_code, state, outlet_code, agent_code, moved_at";

async fn lock_writer(db: &mut PgConnection, serial: &str) -> Result<Option<Writer>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {WRITER_COLUMNS} FROM inventory.writers WHERE writer_serial = $1 FOR UPDATE"
    )))
    .bind(serial)
    .fetch_optional(&mut *db)
    .await
}

/// The last event of a writer's ledger: tells a repeated step from a wrong one.
async fn last_event(db: &mut PgConnection, serial: &str) -> Result<WriterEvent, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT event FROM inventory.writer_ledger WHERE writer_serial = $1 ORDER BY entry_id DESC LIMIT 1",
    )
    .bind(serial)
    .fetch_one(&mut *db)
    .await
}

/// Checks that `branch` is a branch's secondary warehouse.
async fn require_branch(db: &mut PgConnection, branch: &str) -> Result<(), JobError> {
    let kind: Option<String> =
        sqlx::query_scalar("SELECT kind FROM inventory.warehouses WHERE code = $1")
            .bind(branch)
            .fetch_optional(&mut *db)
            .await?;
    match kind.as_deref() {
        Some("secondary") => Ok(()),
        _ => Err(JobError::reject(reasons::BRANCH_UNKNOWN)),
    }
}

fn wire_state(state: WriterState) -> WireState {
    match state {
        WriterState::InStock => WireState::InStock,
        WriterState::Issued => WireState::Issued,
        WriterState::InRepair => WireState::InRepair,
        WriterState::WrittenOff => WireState::WrittenOff,
    }
}

fn wire_movement(event: WriterEvent) -> WriterMovement {
    match event {
        WriterEvent::Purchased => WriterMovement::Purchased,
        WriterEvent::Issued => WriterMovement::Issued,
        WriterEvent::Returned => WriterMovement::Returned,
        WriterEvent::RepairOut => WriterMovement::RepairOut,
        WriterEvent::RepairBack => WriterMovement::RepairBack,
        WriterEvent::WrittenOff => WriterMovement::WrittenOff,
    }
}

fn moved(writer: &Writer, event: WriterEvent, already: bool) -> Outcome {
    Outcome::event(&WriterMoved {
        writer_serial: writer.writer_serial.clone(),
        model: writer.model.clone(),
        movement: wire_movement(event),
        state: wire_state(writer.state),
        branch: writer.branch_code.clone(),
        outlet_code: writer.outlet_code.clone(),
        agent_ess_code: writer.agent_code.clone(),
        moved_at: writer.moved_at,
        already,
    })
}

/// Who and why a step happens.
struct Cause<'a> {
    staff_id: &'a str,
    note: Option<&'a str>,
    job_message_id: &'a str,
}

/// Moves a locked writer to `to` (with its outlet and agent) and appends the ledger entry.
async fn move_writer(
    db: &mut PgConnection,
    writer: &Writer,
    event: WriterEvent,
    to: WriterState,
    holder: Option<(&str, &str)>,
    cause: &Cause<'_>,
) -> Result<Writer, JobError> {
    let (outlet, agent) = holder.unzip();
    let moved: Writer = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH moved AS ( \
             UPDATE inventory.writers SET state = $2, outlet_code = $3, agent_code = $4, moved_at = now() \
             WHERE writer_serial = $1 RETURNING {WRITER_COLUMNS} \
         ), entry AS ( \
             INSERT INTO inventory.writer_ledger \
                 (writer_serial, event, from_state, to_state, outlet_code, agent_code, staff_id, note, job_message_id) \
             SELECT writer_serial, $5, $6, state, outlet_code, agent_code, $7, $8, $9 FROM moved \
         ) SELECT {WRITER_COLUMNS} FROM moved"
    )))
    .bind(&writer.writer_serial)
    .bind(to)
    .bind(outlet)
    .bind(agent)
    .bind(event)
    .bind(writer.state)
    .bind(cause.staff_id)
    .bind(cause.note)
    .bind(cause.job_message_id)
    .fetch_one(&mut *db)
    .await?;
    tracing::info!(writer = %writer.writer_serial, ?event, job = %cause.job_message_id, "writer moved");
    Ok(moved)
}

/// `writer.purchase.v1`: records a writer bought for a branch; it is in stock there.
/// The same purchase again answers `already`; the serial with other details is refused.
pub async fn purchase(
    context: &JobContext,
    purchase: WriterPurchase,
    db: &mut PgConnection,
) -> Result<Outcome, JobError> {
    let serial = parse_serial(&purchase.writer_serial).map_err(JobError::reject)?;
    let model = purchase.model.trim();
    let purchase_ref = purchase.purchase_ref.trim();
    if model.is_empty() || purchase_ref.is_empty() {
        return Err(JobError::reject(reasons::WRITER_PURCHASE_INCOMPLETE));
    }
    require_branch(db, &purchase.branch).await?;
    staff::require(
        db,
        &purchase.staff_id,
        &purchase.branch,
        Permission::WriterPurchase,
    )
    .await?;
    // A second purchase of one serial waits here for the first to commit, then finds its row.
    let inserted = sqlx::query(
        "INSERT INTO inventory.writers (writer_serial, model, purchase_ref, branch_code, state, purchased_by) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (writer_serial) DO NOTHING",
    )
    .bind(serial)
    .bind(model)
    .bind(purchase_ref)
    .bind(&purchase.branch)
    .bind(WriterState::InStock)
    .bind(&purchase.staff_id)
    .execute(&mut *db)
    .await?
    .rows_affected();
    let Some(writer) = lock_writer(db, serial).await? else {
        return Err(JobError::reject(reasons::WRITER_UNKNOWN));
    };
    if inserted == 0 {
        let same = writer.model == model
            && writer.purchase_ref == purchase_ref
            && writer.branch_code == purchase.branch;
        if !same {
            return Err(JobError::reject(reasons::WRITER_SERIAL_CONFLICT));
        }
        return Ok(moved(&writer, WriterEvent::Purchased, true));
    }
    sqlx::query(
        "INSERT INTO inventory.writer_ledger \
             (writer_serial, event, from_state, to_state, staff_id, note, job_message_id) \
         VALUES ($1, $2, NULL, $3, $4, $5, $6)",
    )
    .bind(serial)
    .bind(WriterEvent::Purchased)
    .bind(WriterState::InStock)
    .bind(&purchase.staff_id)
    .bind(purchase_ref)
    .bind(&context.message_id)
    .execute(&mut *db)
    .await?;
    tracing::info!(writer = %serial, job = %context.message_id, "writer purchase recorded");
    Ok(moved(&writer, WriterEvent::Purchased, false))
}

/// Locks a writer of `branch` for a branch step, after checking the branch and the staff ID.
async fn branch_writer(
    db: &mut PgConnection,
    serial: &str,
    branch: &str,
    staff_id: &str,
) -> Result<Writer, JobError> {
    let serial = parse_serial(serial).map_err(JobError::reject)?;
    require_branch(db, branch).await?;
    staff::require(db, staff_id, branch, Permission::Writers).await?;
    let Some(writer) = lock_writer(db, serial).await? else {
        return Err(JobError::reject(reasons::WRITER_UNKNOWN));
    };
    if writer.branch_code != branch {
        return Err(JobError::reject(reasons::WRITER_OTHER_BRANCH));
    }
    Ok(writer)
}

/// `writer.issue.v1`: issues a writer in the branch's stock to an outlet of one of the branch's
/// active agents; an outlet holds at most one writer.
pub async fn issue(
    outlets: OutletLookup,
    context: &JobContext,
    issue: WriterIssue,
    db: &mut PgConnection,
) -> Result<Outcome, JobError> {
    let writer = branch_writer(db, &issue.writer_serial, &issue.branch, &issue.staff_id).await?;
    match writer.state {
        WriterState::Issued
            if writer.outlet_code.as_deref() == Some(issue.outlet_code.as_str()) =>
        {
            return Ok(moved(&writer, WriterEvent::Issued, true));
        }
        WriterState::InStock => {}
        WriterState::Issued | WriterState::InRepair => {
            return Err(JobError::reject(reasons::WRITER_NOT_IN_STOCK));
        }
        WriterState::WrittenOff => return Err(JobError::reject(reasons::WRITER_WRITTEN_OFF)),
    }
    let Some(outlet) = outlets(db, &issue.outlet_code).await? else {
        return Err(JobError::reject(reasons::WRITER_OUTLET_UNKNOWN));
    };
    if !outlet.active {
        return Err(JobError::reject(reasons::WRITER_OUTLET_INACTIVE));
    }
    let agent_of_branch: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM inventory.agents a JOIN inventory.warehouses w ON w.unit_id = a.unit_id \
                        WHERE a.ess_code = $1 AND a.active AND w.code = $2)",
    )
    .bind(&outlet.agent_code)
    .bind(&issue.branch)
    .fetch_one(&mut *db)
    .await?;
    if !agent_of_branch {
        return Err(JobError::reject(reasons::WRITER_OUTLET_OTHER_BRANCH));
    }
    // The unique index allows one issued writer per outlet; two issues to one outlet at the same
    // time serialise on it and the second is refused here after the first commits.
    let holds_one: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM inventory.writers WHERE outlet_code = $1 AND state = 'issued')",
    )
    .bind(&issue.outlet_code)
    .fetch_one(&mut *db)
    .await?;
    if holds_one {
        return Err(JobError::reject(reasons::WRITER_OUTLET_HAS_WRITER));
    }
    let cause = Cause {
        staff_id: &issue.staff_id,
        note: None,
        job_message_id: &context.message_id,
    };
    let writer = move_writer(
        db,
        &writer,
        WriterEvent::Issued,
        WriterState::Issued,
        Some((&issue.outlet_code, &outlet.agent_code)),
        &cause,
    )
    .await?;
    Ok(moved(&writer, WriterEvent::Issued, false))
}

/// `writer.return.v1`: takes an issued writer back into its branch's stock.
pub async fn take_back(
    context: &JobContext,
    back: WriterReturn,
    db: &mut PgConnection,
) -> Result<Outcome, JobError> {
    let writer = branch_writer(db, &back.writer_serial, &back.branch, &back.staff_id).await?;
    match writer.state {
        WriterState::Issued => {}
        WriterState::InStock
            if last_event(db, &writer.writer_serial).await? == WriterEvent::Returned =>
        {
            return Ok(moved(&writer, WriterEvent::Returned, true));
        }
        WriterState::InStock | WriterState::InRepair => {
            return Err(JobError::reject(reasons::WRITER_NOT_ISSUED));
        }
        WriterState::WrittenOff => return Err(JobError::reject(reasons::WRITER_WRITTEN_OFF)),
    }
    let cause = Cause {
        staff_id: &back.staff_id,
        note: writer.outlet_code.as_deref(),
        job_message_id: &context.message_id,
    };
    let writer = move_writer(
        db,
        &writer,
        WriterEvent::Returned,
        WriterState::InStock,
        None,
        &cause,
    )
    .await?;
    Ok(moved(&writer, WriterEvent::Returned, false))
}

/// `writer.repair.v1`: sends a writer in stock for repair, or takes it back from repair.
pub async fn repair(
    context: &JobContext,
    repair: WriterRepair,
    db: &mut PgConnection,
) -> Result<Outcome, JobError> {
    let writer = branch_writer(db, &repair.writer_serial, &repair.branch, &repair.staff_id).await?;
    let (event, from, to, wrong) = match repair.direction {
        RepairDirection::Out => (
            WriterEvent::RepairOut,
            WriterState::InStock,
            WriterState::InRepair,
            reasons::WRITER_NOT_IN_STOCK,
        ),
        RepairDirection::Back => (
            WriterEvent::RepairBack,
            WriterState::InRepair,
            WriterState::InStock,
            reasons::WRITER_NOT_IN_REPAIR,
        ),
    };
    if writer.state == WriterState::WrittenOff {
        return Err(JobError::reject(reasons::WRITER_WRITTEN_OFF));
    }
    if writer.state == to && last_event(db, &writer.writer_serial).await? == event {
        return Ok(moved(&writer, event, true));
    }
    if writer.state != from {
        return Err(JobError::reject(wrong));
    }
    let cause = Cause {
        staff_id: &repair.staff_id,
        note: None,
        job_message_id: &context.message_id,
    };
    let writer = move_writer(db, &writer, event, to, None, &cause).await?;
    Ok(moved(&writer, event, false))
}

/// `writer.write_off.v1`: writes off a writer in stock or at the repairer; final.
pub async fn write_off(
    context: &JobContext,
    write_off: WriterWriteOff,
    db: &mut PgConnection,
) -> Result<Outcome, JobError> {
    let reason = write_off.reason.trim();
    if reason.is_empty() {
        return Err(JobError::reject(reasons::WRITE_OFF_REASON_MISSING));
    }
    let writer = branch_writer(
        db,
        &write_off.writer_serial,
        &write_off.branch,
        &write_off.staff_id,
    )
    .await?;
    match writer.state {
        WriterState::WrittenOff => return Ok(moved(&writer, WriterEvent::WrittenOff, true)),
        WriterState::Issued => return Err(JobError::reject(reasons::WRITER_NOT_IN_STOCK)),
        WriterState::InStock | WriterState::InRepair => {}
    }
    let cause = Cause {
        staff_id: &write_off.staff_id,
        note: Some(reason),
        job_message_id: &context.message_id,
    };
    let writer = move_writer(
        db,
        &writer,
        WriterEvent::WrittenOff,
        WriterState::WrittenOff,
        None,
        &cause,
    )
    .await?;
    Ok(moved(&writer, WriterEvent::WrittenOff, false))
}

/// Whom the ledger has a writer with: `None` when no writer has this serial.
pub async fn holder_of(db: &mut PgConnection, serial: &str) -> Result<Option<Writer>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {WRITER_COLUMNS} FROM inventory.writers WHERE writer_serial = $1"
    )))
    .bind(serial)
    .fetch_optional(&mut *db)
    .await
}

/// Which writers to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder<'a> {
    /// Every writer.
    All,
    /// The writer issued to this outlet.
    Outlet(&'a str),
    /// Writers issued to this agent's outlets.
    Agent(&'a str),
    /// Every writer of this branch (secondary warehouse code), wherever it is.
    Branch(&'a str),
}

/// Lists writers by who holds them, by branch, agent, outlet and serial.
pub async fn list(db: &mut PgConnection, holder: &Holder<'_>) -> Result<Vec<Writer>, sqlx::Error> {
    let (filter, value) = match holder {
        Holder::All => ("$1::text IS NULL", None),
        Holder::Outlet(outlet) => ("state = 'issued' AND outlet_code = $1", Some(*outlet)),
        Holder::Agent(agent) => ("state = 'issued' AND agent_code = $1", Some(*agent)),
        Holder::Branch(branch) => ("branch_code = $1", Some(*branch)),
    };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {WRITER_COLUMNS} FROM inventory.writers WHERE {filter} \
         ORDER BY branch_code, agent_code NULLS LAST, outlet_code NULLS LAST, writer_serial"
    )))
    .bind(value)
    .fetch_all(&mut *db)
    .await
}

/// One entry of a writer's ledger.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct WriterLedgerEntry {
    /// What happened.
    pub event: WriterEvent,
    /// The state before (none for the purchase).
    pub from_state: Option<WriterState>,
    /// The state after.
    pub to_state: WriterState,
    /// The outlet, for an issue.
    pub outlet_code: Option<String>,
    /// Who did it.
    pub staff_id: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// A writer's ledger, oldest first.
pub async fn history(
    db: &mut PgConnection,
    serial: &str,
) -> Result<Vec<WriterLedgerEntry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT event, from_state, to_state, outlet_code, staff_id, at FROM inventory.writer_ledger \
         WHERE writer_serial = $1 ORDER BY entry_id",
    )
    .bind(serial)
    .fetch_all(&mut *db)
    .await
}
