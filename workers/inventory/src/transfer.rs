//! Transfers (调拨, type 下拨): create, approve out (调出审核), approve in (调入审核).
//!
//! Create holds the cards (they stay in the source warehouse, marked with the transfer) so no
//! other job can take them; approve out moves them in transit; approve in puts them in the
//! target warehouse. Each movement is one set-based UPDATE joined to one ledger INSERT.
//! Approving an approved transfer again answers success with `already_approved` and changes
//! nothing. Every refusal rolls back everything the job did.

use chrono::{DateTime, Utc};
use simflow_runtime::create_once::{self, Creates};
use simflow_runtime::{Handler, JobContext, JobError, Outcome};
use simflow_schemas::registry::TransferJob;
use simflow_schemas::topology::JobQueue;
use simflow_schemas::transfer::{ApprovalStage, TransferApproved, TransferCreate, TransferCreated};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::cards::{self, Held, Hold, WarehouseStock};
use crate::movement::{self, Cause, HeldBy, Location, Movement, Which};
use crate::reasons;
use crate::selection;
use crate::staff::{self, Permission};
use crate::states::{CardState, LedgerEvent, TransferState};

/// The transfer worker's handler.
#[derive(Debug, Clone, Copy, Default)]
pub struct TransferHandler;

impl Handler for TransferHandler {
    type Job = TransferJob;
    const QUEUE: JobQueue = JobQueue::Transfer;

    async fn handle(
        &self,
        context: &JobContext,
        job: TransferJob,
        db: &mut PgConnection,
    ) -> Result<Outcome, JobError> {
        match job {
            TransferJob::Create(create) => create_transfer(context, create, db).await,
            TransferJob::ApproveOut(out) => {
                approve(
                    context,
                    ApprovalStage::Out,
                    out.transfer_id,
                    out.staff_id,
                    db,
                )
                .await
            }
            TransferJob::ApproveIn(into) => {
                approve(
                    context,
                    ApprovalStage::In,
                    into.transfer_id,
                    into.staff_id,
                    db,
                )
                .await
            }
        }
    }
}

#[derive(Debug, sqlx::FromRow)]
struct TransferRow {
    source_warehouse: String,
    target_warehouse: String,
    card_type: String,
    selection: sqlx::types::Json<serde_json::Value>,
    state: TransferState,
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

async fn create_transfer(
    context: &JobContext,
    create: TransferCreate,
    db: &mut PgConnection,
) -> Result<Outcome, JobError> {
    create_once::lock(db, Creates::Transfer, create.transfer_id).await?;
    let selection_json = serde_json::to_value(&create.cards).unwrap_or_default();
    let stored = lock_transfer(db, create.transfer_id).await?;
    let same = |stored: &TransferRow| {
        stored.source_warehouse == create.source_warehouse
            && stored.target_warehouse == create.target_warehouse
            && stored.card_type == create.card_type
            && stored.selection.0 == selection_json
    };
    if let Some(stored) = create_once::compare(stored, same, reasons::TRANSFER_ID_CONFLICT)? {
        return Ok(created_event(create.transfer_id, &stored));
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
        return Err(JobError::reject(reasons::WAREHOUSE_UNKNOWN));
    };
    if source_kind != "secondary" || target_kind != "onsite_target" || source_unit != target_unit {
        return Err(JobError::reject(reasons::WRONG_DIRECTION));
    }
    if !card_type_known {
        return Err(JobError::reject(reasons::CARD_TYPE_UNKNOWN));
    }

    staff::require(
        db,
        &create.staff_id,
        &create.source_warehouse,
        Permission::TransferCreate,
    )
    .await?;
    let selection = selection::parse(&create.cards).map_err(JobError::Rejected)?;

    let stock = WarehouseStock {
        warehouse: &create.source_warehouse,
        card_type: &create.card_type,
        department: None,
    };
    let Held {
        count, first, last, ..
    } = cards::hold(db, &selection, &stock, &Hold::Transfer(create.transfer_id)).await?;
    let row: TransferRow = sqlx::query_as(
        "INSERT INTO inventory.transfers (transfer_id, source_warehouse, target_warehouse, card_type, selection, \
             state, card_count, first_iccid, last_iccid, created_by) \
         VALUES ($1, $2, $3, $4, $5, $10, $6, $7, $8, $9) \
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
    .bind(TransferState::Created)
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
    Outcome::event(&event)
}

/// One approval of a transfer: out of its source warehouse, or into its target warehouse.
async fn approve(
    context: &JobContext,
    stage: ApprovalStage,
    transfer_id: Uuid,
    staff_id: String,
    db: &mut PgConnection,
) -> Result<Outcome, JobError> {
    let Some(transfer) = lock_transfer(db, transfer_id).await? else {
        return Err(JobError::reject(reasons::TRANSFER_UNKNOWN));
    };
    // The side that approves, its earlier approval, and where the cards go.
    let (warehouse, earlier, event, from, to) = match stage {
        ApprovalStage::Out => (
            &transfer.source_warehouse,
            (&transfer.approved_out_by, transfer.approved_out_at),
            LedgerEvent::TransferOut,
            Location::Warehouse(&transfer.source_warehouse),
            Location::InTransit(transfer_id),
        ),
        ApprovalStage::In => (
            &transfer.target_warehouse,
            (&transfer.approved_in_by, transfer.approved_in_at),
            LedgerEvent::TransferIn,
            Location::InTransit(transfer_id),
            Location::Warehouse(&transfer.target_warehouse),
        ),
    };
    staff::require(db, &staff_id, warehouse, Permission::TransferApprove).await?;
    let approved = |card_count: u64, approved_by: String, approved_at, already_approved| {
        Outcome::event(&TransferApproved {
            transfer_id,
            stage,
            card_count,
            approved_by,
            approved_at,
            already_approved,
        })
    };
    match (stage, transfer.state) {
        (ApprovalStage::Out, TransferState::Created)
        | (ApprovalStage::In, TransferState::ApprovedOut) => {}
        (ApprovalStage::In, TransferState::Created) => {
            return Err(JobError::reject(reasons::APPROVE_IN_BEFORE_OUT));
        }
        (ApprovalStage::Out, TransferState::ApprovedOut | TransferState::ApprovedIn)
        | (ApprovalStage::In, TransferState::ApprovedIn) => {
            return Ok(approved(
                u64::try_from(transfer.card_count).unwrap_or_default(),
                earlier.0.clone().unwrap_or_default(),
                earlier.1.unwrap_or_else(Utc::now),
                true,
            ));
        }
    }
    let moved = movement::move_cards(
        db,
        &Movement {
            event,
            which: Which::Held {
                by: HeldBy::Transfer(transfer_id),
                first: &transfer.first_iccid,
                last: &transfer.last_iccid,
            },
            from: Some(from),
            to: Some(to),
            in_states: &[CardState::Blank],
            new_state: None,
            // In transit the transfer still names the cards; in the target warehouse it lets go.
            release_holds: stage == ApprovalStage::In,
            cause: Cause {
                reference: &transfer_id.to_string(),
                staff_id: Some(&staff_id),
                job_message_id: &context.message_id,
            },
        },
    )
    .await?;
    let (record, state) = match stage {
        ApprovalStage::Out => (
            "UPDATE inventory.transfers SET state = $3, approved_out_by = $2, approved_out_at = now() \
             WHERE transfer_id = $1 RETURNING approved_out_at",
            TransferState::ApprovedOut,
        ),
        ApprovalStage::In => (
            "UPDATE inventory.transfers SET state = $3, approved_in_by = $2, approved_in_at = now() \
             WHERE transfer_id = $1 RETURNING approved_in_at",
            TransferState::ApprovedIn,
        ),
    };
    let approved_at: DateTime<Utc> = sqlx::query_scalar(record)
        .bind(transfer_id)
        .bind(&staff_id)
        .bind(state)
        .fetch_one(&mut *db)
        .await?;
    tracing::info!(transfer = %transfer_id, cards = moved, ?stage, "transfer approved");
    Ok(approved(moved, staff_id, approved_at, false))
}
