//! Transfers (调拨, type 下拨): create, approve out (调出审核), approve in (调入审核).
//!
//! Create holds the cards (they stay in the source warehouse, marked with the transfer) so no
//! other job can take them; approve out moves them in transit; approve in puts them in the
//! target warehouse. Each movement is one set-based UPDATE joined to one ledger INSERT.
//! Approving an approved transfer again answers success with `already_approved` and changes
//! nothing. Every refusal rolls back everything the job did.

use chrono::{DateTime, Utc};
use simflow_runtime::{Handler, JobContext, JobError, Outcome};
use simflow_schemas::registry::Job;
use simflow_schemas::topology::JobQueue;
use simflow_schemas::transfer::{
    ApprovalStage, TransferApproveIn, TransferApproveOut, TransferApproved, TransferCreate,
    TransferCreated,
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::reasons::{self, Reason};
use crate::selection::{self, MAX_LISTED_PROBLEMS, Selection};
use crate::staff::{self, Permission};

/// The transfer worker's handler.
#[derive(Debug, Clone, Copy, Default)]
pub struct TransferHandler;

impl Handler for TransferHandler {
    fn queue(&self) -> JobQueue {
        JobQueue::Transfer
    }

    async fn handle(
        &self,
        context: &JobContext,
        job: Job,
        db: &mut PgConnection,
    ) -> Result<Outcome, JobError> {
        match job {
            Job::TransferCreate(create) => create_transfer(context, create, db).await,
            Job::TransferApproveOut(approve) => approve_out(context, approve, db).await,
            Job::TransferApproveIn(approve) => approve_in(context, approve, db).await,
            other => Err(JobError::needs_ops(
                "UNEXPECTED_MESSAGE_TYPE",
                "消息类型不属于此队列",
                &format!(
                    "The transfer worker does not handle {}",
                    other.message_type()
                ),
            )),
        }
    }
}

fn reject(reason: Reason) -> JobError {
    JobError::reject(reason.code, reason.zh, reason.en)
}

#[derive(Debug, sqlx::FromRow)]
struct TransferRow {
    source_warehouse: String,
    target_warehouse: String,
    card_type: String,
    selection: sqlx::types::Json<serde_json::Value>,
    state: String,
    card_count: i32,
    first_iccid: String,
    last_iccid: String,
    created_by: String,
    approved_out_by: Option<String>,
    approved_out_at: Option<DateTime<Utc>>,
    approved_in_by: Option<String>,
    approved_in_at: Option<DateTime<Utc>>,
}

async fn lock_transfer(
    db: &mut PgConnection,
    transfer_id: Uuid,
) -> Result<Option<TransferRow>, JobError> {
    Ok(sqlx::query_as::<_, TransferRow>(
        "SELECT source_warehouse, target_warehouse, card_type, selection, state, card_count, first_iccid, \
                last_iccid, created_by, approved_out_by, approved_out_at, approved_in_by, approved_in_at \
         FROM inventory.transfers WHERE transfer_id = $1 FOR UPDATE",
    )
    .bind(transfer_id)
    .fetch_optional(&mut *db)
    .await?)
}

/// The cards a transfer may take: blank, of the type, in the source warehouse, held by nothing.
const AVAILABLE: &str = "c.location_kind = 'warehouse' AND c.warehouse_code = $2 AND c.card_type = $3 \
     AND c.state = 'blank' AND c.transfer_id IS NULL \
     AND (c.batch_id IS NULL OR c.batch_hold_until < now())";

/// Why each selected card is not available; `wanted` is a CTE producing `iccid`. Cards this
/// job's own transfer (`$4`) already holds count as available: the diagnosis runs after the
/// hold statement, in the same transaction, just before it is rolled back.
fn diagnose_sql(wanted: &str) -> String {
    format!(
        "WITH wanted AS ({wanted}), \
         problems AS ( \
            SELECT w.iccid, CASE \
                WHEN c.iccid IS NULL THEN 'CARD_UNKNOWN' \
                WHEN c.location_kind <> 'warehouse' OR c.warehouse_code <> $2 THEN 'CARD_NOT_IN_WAREHOUSE' \
                WHEN c.card_type <> $3 THEN 'CARD_TYPE_MISMATCH' \
                WHEN c.state <> 'blank' THEN 'CARD_NOT_BLANK' \
                WHEN (c.transfer_id IS NOT NULL AND c.transfer_id <> $4) \
                     OR (c.batch_id IS NOT NULL AND c.batch_hold_until >= now()) THEN 'CARD_HELD' \
            END AS code \
            FROM wanted w LEFT JOIN inventory.cards c ON c.iccid = w.iccid) \
         SELECT iccid, code, count(*) OVER () FROM problems WHERE code IS NOT NULL ORDER BY iccid LIMIT {MAX_LISTED_PROBLEMS}"
    )
}

fn reason_by_code(code: &str) -> Reason {
    reasons::ALL
        .iter()
        .copied()
        .find(|reason| reason.code == code)
        .unwrap_or(reasons::CARDS_NOT_AVAILABLE)
}

async fn rejection_for_unavailable(
    db: &mut PgConnection,
    transfer_id: Uuid,
    selection: &Selection,
    source: &str,
    card_type: &str,
) -> Result<JobError, JobError> {
    let rows: Vec<(String, String, i64)> = match selection {
        Selection::List(_) => {
            sqlx::query_as(sqlx::AssertSqlSafe(diagnose_sql("SELECT unnest($1::text[]) AS iccid")))
                .bind(selection.list_strings())
                .bind(source)
                .bind(card_type)
                .bind(transfer_id)
                .fetch_all(&mut *db)
                .await?
        }
        Selection::Range { first, last } => {
            sqlx::query_as(sqlx::AssertSqlSafe(diagnose_sql(
                "SELECT iccid FROM inventory.cards WHERE iccid BETWEEN $1 AND $5 AND length(iccid) = length($1)",
            )))
            .bind(first.as_str())
            .bind(source)
            .bind(card_type)
            .bind(transfer_id)
            .bind(last.as_str())
            .fetch_all(&mut *db)
            .await?
        }
        Selection::Quantity(_) => Vec::new(),
    };
    let total = rows
        .first()
        .map(|row| u64::try_from(row.2).unwrap_or_default())
        .unwrap_or_default();
    let problems = rows
        .iter()
        .map(|(iccid, code, _)| reason_by_code(code).for_card(iccid))
        .collect();
    Ok(JobError::Rejected(selection::cards_rejection(
        reasons::CARDS_NOT_AVAILABLE,
        problems,
        total,
    )))
}

/// Holds the selected cards for the transfer; returns (count, first, last).
async fn hold_cards(
    db: &mut PgConnection,
    transfer_id: Uuid,
    selection: &Selection,
    source: &str,
    card_type: &str,
) -> Result<(i64, String, String), JobError> {
    let held_summary =
        "SELECT count(*), coalesce(min(iccid), ''), coalesce(max(iccid), '') FROM held";
    let (count, first, last): (i64, String, String) = match selection {
        Selection::List(iccids) => {
            let (count, first, last): (i64, String, String) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "WITH held AS (UPDATE inventory.cards c SET transfer_id = $4, updated_at = now() \
                 WHERE c.iccid = ANY($1) AND {AVAILABLE} RETURNING c.iccid) {held_summary}"
            )))
            .bind(selection.list_strings())
            .bind(source)
            .bind(card_type)
            .bind(transfer_id)
            .fetch_one(&mut *db)
            .await?;
            if usize::try_from(count).unwrap_or_default() != iccids.len() {
                return Err(rejection_for_unavailable(
                    db,
                    transfer_id,
                    selection,
                    source,
                    card_type,
                )
                .await?);
            }
            (count, first, last)
        }
        Selection::Range { first, last } => {
            let in_range: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM inventory.cards WHERE iccid BETWEEN $1 AND $2 AND length(iccid) = length($1)",
            )
            .bind(first.as_str())
            .bind(last.as_str())
            .fetch_one(&mut *db)
            .await?;
            if in_range == 0 {
                return Err(reject(reasons::EMPTY_SELECTION));
            }
            let held: (i64, String, String) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "WITH held AS (UPDATE inventory.cards c SET transfer_id = $4, updated_at = now() \
                 WHERE c.iccid BETWEEN $1 AND $5 AND length(c.iccid) = length($1) AND {AVAILABLE} \
                 RETURNING c.iccid) {held_summary}"
            )))
            .bind(first.as_str())
            .bind(source)
            .bind(card_type)
            .bind(transfer_id)
            .bind(last.as_str())
            .fetch_one(&mut *db)
            .await?;
            if held.0 != in_range {
                return Err(rejection_for_unavailable(
                    db,
                    transfer_id,
                    selection,
                    source,
                    card_type,
                )
                .await?);
            }
            held
        }
        Selection::Quantity(quantity) => {
            let held: (i64, String, String) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "WITH chosen AS (SELECT c.iccid FROM inventory.cards c WHERE {AVAILABLE} \
                    ORDER BY c.iccid LIMIT $1 FOR UPDATE SKIP LOCKED), \
                 held AS (UPDATE inventory.cards c SET transfer_id = $4, updated_at = now() \
                    FROM chosen WHERE c.iccid = chosen.iccid RETURNING c.iccid) {held_summary}"
            )))
            .bind(i64::from(*quantity))
            .bind(source)
            .bind(card_type)
            .bind(transfer_id)
            .fetch_one(&mut *db)
            .await?;
            if held.0 < i64::from(*quantity) {
                let reason = reasons::NOT_ENOUGH_CARDS;
                return Err(JobError::reject(
                    reason.code,
                    reason.zh,
                    &format!("{} ({} asked, {} available)", reason.en, quantity, held.0),
                ));
            }
            held
        }
    };
    Ok((count, first, last))
}

async fn create_transfer(
    context: &JobContext,
    create: TransferCreate,
    db: &mut PgConnection,
) -> Result<Outcome, JobError> {
    // Serialise jobs naming the same transfer id, so a re-sent create sees the first one.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))")
        .bind(create.transfer_id.to_string())
        .execute(&mut *db)
        .await?;
    let selection_json = serde_json::to_value(&create.cards).unwrap_or_default();
    if let Some(existing) = lock_transfer(db, create.transfer_id).await? {
        let same = existing.source_warehouse == create.source_warehouse
            && existing.target_warehouse == create.target_warehouse
            && existing.card_type == create.card_type
            && existing.selection.0 == selection_json;
        if !same {
            return Err(reject(reasons::TRANSFER_ID_CONFLICT));
        }
        return Ok(created_event(create.transfer_id, &existing));
    }

    // Both warehouses and the card type in one round trip.
    let (source_kind, source_unit, target_kind, target_unit, card_type_known): (
        Option<String>,
        Option<i32>,
        Option<String>,
        Option<i32>,
        bool,
    ) = sqlx::query_as(
        "SELECT s.kind, s.unit_id, t.kind, t.unit_id, \
                EXISTS (SELECT 1 FROM inventory.card_types WHERE code = $3) \
         FROM (SELECT 1) AS one \
         LEFT JOIN inventory.warehouses s ON s.code = $1 \
         LEFT JOIN inventory.warehouses t ON t.code = $2",
    )
    .bind(&create.source_warehouse)
    .bind(&create.target_warehouse)
    .bind(&create.card_type)
    .fetch_one(&mut *db)
    .await?;
    let (Some(source_kind), Some(target_kind)) = (source_kind, target_kind) else {
        return Err(reject(reasons::WAREHOUSE_UNKNOWN));
    };
    if source_kind != "secondary" || target_kind != "onsite_target" || source_unit != target_unit {
        return Err(reject(reasons::WRONG_DIRECTION));
    }
    if !card_type_known {
        return Err(reject(reasons::CARD_TYPE_UNKNOWN));
    }

    staff::require(
        db,
        &create.staff_id,
        &create.source_warehouse,
        Permission::TransferCreate,
    )
    .await?;
    let selection = selection::parse(&create.cards).map_err(JobError::Rejected)?;

    let (count, first, last) = hold_cards(
        db,
        create.transfer_id,
        &selection,
        &create.source_warehouse,
        &create.card_type,
    )
    .await?;
    let row: TransferRow = sqlx::query_as(
        "INSERT INTO inventory.transfers (transfer_id, source_warehouse, target_warehouse, card_type, selection, \
             state, card_count, first_iccid, last_iccid, created_by) \
         VALUES ($1, $2, $3, $4, $5, 'created', $6, $7, $8, $9) \
         RETURNING source_warehouse, target_warehouse, card_type, selection, state, card_count, first_iccid, \
                   last_iccid, created_by, approved_out_by, approved_out_at, approved_in_by, approved_in_at",
    )
    .bind(create.transfer_id)
    .bind(&create.source_warehouse)
    .bind(&create.target_warehouse)
    .bind(&create.card_type)
    .bind(sqlx::types::Json(&selection_json))
    .bind(i32::try_from(count).unwrap_or(i32::MAX))
    .bind(&first)
    .bind(&last)
    .bind(&create.staff_id)
    .fetch_one(&mut *db)
    .await?;
    tracing::info!(transfer = %create.transfer_id, cards = count, job = %context.message_id, "transfer created");
    Ok(created_event(create.transfer_id, &row))
}

fn created_event(transfer_id: Uuid, row: &TransferRow) -> Outcome {
    let event = TransferCreated {
        transfer_id,
        source_warehouse: row.source_warehouse.clone(),
        target_warehouse: row.target_warehouse.clone(),
        card_type: row.card_type.clone(),
        card_count: u64::try_from(row.card_count).unwrap_or_default(),
        first_iccid: row.first_iccid.clone(),
        last_iccid: row.last_iccid.clone(),
        created_by: row.created_by.clone(),
    };
    Outcome::event("transfer.created", &event)
}

fn approved_event(
    transfer_id: Uuid,
    stage: ApprovalStage,
    card_count: i64,
    approved_by: String,
    approved_at: DateTime<Utc>,
    already_approved: bool,
) -> Outcome {
    let routing_key = match stage {
        ApprovalStage::Out => "transfer.approved_out",
        ApprovalStage::In => "transfer.approved_in",
    };
    let event = TransferApproved {
        transfer_id,
        stage,
        card_count: u64::try_from(card_count).unwrap_or_default(),
        approved_by,
        approved_at,
        already_approved,
    };
    Outcome::event(routing_key, &event)
}

async fn approve_out(
    context: &JobContext,
    approve: TransferApproveOut,
    db: &mut PgConnection,
) -> Result<Outcome, JobError> {
    let Some(transfer) = lock_transfer(db, approve.transfer_id).await? else {
        return Err(reject(reasons::TRANSFER_UNKNOWN));
    };
    staff::require(
        db,
        &approve.staff_id,
        &transfer.source_warehouse,
        Permission::TransferApprove,
    )
    .await?;
    if transfer.state != "created" {
        return Ok(approved_event(
            approve.transfer_id,
            ApprovalStage::Out,
            i64::from(transfer.card_count),
            transfer.approved_out_by.unwrap_or_default(),
            transfer.approved_out_at.unwrap_or_else(Utc::now),
            true,
        ));
    }
    let moved: i64 = sqlx::query_scalar(
        "WITH moved AS ( \
            UPDATE inventory.cards SET location_kind = 'in_transit', warehouse_code = NULL, updated_at = now() \
            WHERE transfer_id = $1 AND location_kind = 'warehouse' RETURNING iccid, state), \
         logged AS ( \
            INSERT INTO inventory.card_ledger (iccid, event, from_location, to_location, state_after, reference, staff_id, job_message_id) \
            SELECT iccid, 'transfer_out', 'warehouse:' || $2, 'transit:' || $1::text, state, $1::text, $3, $4 FROM moved \
            RETURNING 1) \
         SELECT count(*) FROM logged",
    )
    .bind(approve.transfer_id)
    .bind(&transfer.source_warehouse)
    .bind(&approve.staff_id)
    .bind(&context.message_id)
    .fetch_one(&mut *db)
    .await?;
    let approved_at: DateTime<Utc> = sqlx::query_scalar(
        "UPDATE inventory.transfers SET state = 'approved_out', approved_out_by = $2, approved_out_at = now() \
         WHERE transfer_id = $1 RETURNING approved_out_at",
    )
    .bind(approve.transfer_id)
    .bind(&approve.staff_id)
    .fetch_one(&mut *db)
    .await?;
    tracing::info!(transfer = %approve.transfer_id, cards = moved, "transfer approved out");
    Ok(approved_event(
        approve.transfer_id,
        ApprovalStage::Out,
        moved,
        approve.staff_id,
        approved_at,
        false,
    ))
}

async fn approve_in(
    context: &JobContext,
    approve: TransferApproveIn,
    db: &mut PgConnection,
) -> Result<Outcome, JobError> {
    let Some(transfer) = lock_transfer(db, approve.transfer_id).await? else {
        return Err(reject(reasons::TRANSFER_UNKNOWN));
    };
    staff::require(
        db,
        &approve.staff_id,
        &transfer.target_warehouse,
        Permission::TransferApprove,
    )
    .await?;
    match transfer.state.as_str() {
        "created" => return Err(reject(reasons::APPROVE_IN_BEFORE_OUT)),
        "approved_in" => {
            return Ok(approved_event(
                approve.transfer_id,
                ApprovalStage::In,
                i64::from(transfer.card_count),
                transfer.approved_in_by.unwrap_or_default(),
                transfer.approved_in_at.unwrap_or_else(Utc::now),
                true,
            ));
        }
        _ => {}
    }
    let moved: i64 = sqlx::query_scalar(
        "WITH moved AS ( \
            UPDATE inventory.cards SET location_kind = 'warehouse', warehouse_code = $2, transfer_id = NULL, updated_at = now() \
            WHERE transfer_id = $1 AND location_kind = 'in_transit' RETURNING iccid, state), \
         logged AS ( \
            INSERT INTO inventory.card_ledger (iccid, event, from_location, to_location, state_after, reference, staff_id, job_message_id) \
            SELECT iccid, 'transfer_in', 'transit:' || $1::text, 'warehouse:' || $2, state, $1::text, $3, $4 FROM moved \
            RETURNING 1) \
         SELECT count(*) FROM logged",
    )
    .bind(approve.transfer_id)
    .bind(&transfer.target_warehouse)
    .bind(&approve.staff_id)
    .bind(&context.message_id)
    .fetch_one(&mut *db)
    .await?;
    let approved_at: DateTime<Utc> = sqlx::query_scalar(
        "UPDATE inventory.transfers SET state = 'approved_in', approved_in_by = $2, approved_in_at = now() \
         WHERE transfer_id = $1 RETURNING approved_in_at",
    )
    .bind(approve.transfer_id)
    .bind(&approve.staff_id)
    .fetch_one(&mut *db)
    .await?;
    tracing::info!(transfer = %approve.transfer_id, cards = moved, "transfer approved in");
    Ok(approved_event(
        approve.transfer_id,
        ApprovalStage::In,
        moved,
        approve.staff_id,
        approved_at,
        false,
    ))
}
