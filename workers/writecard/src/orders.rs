//! The account-opening order around a write: created by the first write request, written when
//! the card proves its key, pre-submitted (fees and the acceptance form), submitted (the line
//! opens: an activation event for provisioning, the card sold), or cancelled before submit.
//!
//! Cancel rule: a card that was written for the order cannot go back to stock as blank, so it is
//! marked damaged (withdrawn); its number cools down before it is offered again and its IMSI is
//! retired. An order whose card was never written releases its number and IMSI at once and
//! leaves the card blank with the agent.

use chrono::{DateTime, Utc};
use simflow_inventory::writing::{self, Cause, Mark};
use simflow_runtime::{JobContext, JobError, Outcome};
use simflow_schemas::writecard::{
    FeeLine, OrderActivated, OrderCancel, OrderCancelled, OrderPresubmit, OrderPresubmitted,
    OrderSubmit, WriteRequest,
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::fees::{self, FormFacts, Package};
use crate::numbers;
use crate::reasons;
use crate::settings::WritecardSettings;
use crate::states::{OrderState, ScriptState};

/// An order row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Order {
    /// Order id.
    pub order_id: Uuid,
    /// Outlet.
    pub outlet_code: String,
    /// Agent of the outlet.
    pub agent_code: String,
    /// Clerk.
    pub staff_id: String,
    /// Card.
    pub iccid: String,
    /// Card type.
    pub card_type: String,
    /// Number.
    pub msisdn: String,
    /// IMSI.
    pub imsi: String,
    /// Customer name as entered.
    pub customer_name: String,
    /// Package code.
    pub package_code: String,
    /// Its state.
    pub state: OrderState,
    /// Whether the order's card holds the order's data.
    pub card_written: bool,
    /// Fee lines, once pre-submitted.
    pub fees: Option<sqlx::types::Json<Vec<FeeLine>>>,
    /// Total, once pre-submitted.
    pub total_fen: Option<i64>,
    /// The acceptance form, once pre-submitted.
    pub acceptance_form: Option<String>,
    /// When it was submitted.
    pub submitted_at: Option<DateTime<Utc>>,
}

const ORDER_COLUMNS: &str = "order_id, outlet_code, agent_code, staff_id, iccid, card_type, msisdn, imsi, customer_name, \
     package_code, state, card_written, fees, total_fen, acceptance_form, submitted_at";

/// Locks an order for the rest of the transaction.
pub async fn lock(db: &mut PgConnection, order_id: Uuid) -> Result<Option<Order>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM writecard.orders WHERE order_id = $1 FOR UPDATE"
    )))
    .bind(order_id)
    .fetch_optional(db)
    .await
}

/// Locks an order the job names; an unknown order refuses the job.
async fn lock_named(db: &mut PgConnection, order_id: Uuid) -> Result<Order, JobError> {
    lock(db, order_id)
        .await?
        .ok_or_else(|| JobError::reject(reasons::ORDER_UNKNOWN))
}

/// Marks the order's card (sold, damaged) in the inventory, in the name of the job and its
/// staff ID; whether the card was in the state the mark needs.
async fn mark_card(
    db: &mut PgConnection,
    order: &Order,
    mark: Mark,
    staff_id: &str,
    context: &JobContext,
) -> Result<bool, JobError> {
    let cause = Cause {
        reference: &order.order_id.to_string(),
        staff_id: Some(staff_id),
        job_message_id: &context.message_id,
    };
    Ok(writing::mark(db, &order.iccid, mark, cause).await?)
}

/// A package by code.
pub async fn package(
    db: &mut PgConnection,
    package_code: &str,
) -> Result<Option<Package>, sqlx::Error> {
    sqlx::query_as(
        "SELECT package_code, name_zh, name_en, monthly_fee_fen, prepaid_fen, card_fee_fen \
         FROM writecard.packages WHERE package_code = $1",
    )
    .bind(package_code)
    .fetch_optional(db)
    .await
}

fn card_taken(error: sqlx::Error) -> JobError {
    match &error {
        sqlx::Error::Database(database)
            if database.constraint() == Some("orders_one_live_per_card") =>
        {
            JobError::reject(reasons::CARD_IN_OTHER_ORDER)
        }
        _ => error.into(),
    }
}

/// Creates the order of a first write request.
pub async fn create(
    db: &mut PgConnection,
    request: &WriteRequest,
    agent_code: &str,
    card_type: &str,
    imsi: &str,
    package_code: &str,
) -> Result<Order, JobError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO writecard.orders (order_id, outlet_code, agent_code, staff_id, iccid, card_type, msisdn, imsi, \
             customer_name, package_code, state) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {ORDER_COLUMNS}"
    )))
    .bind(request.order_id)
    .bind(&request.outlet_code)
    .bind(agent_code)
    .bind(&request.staff_id)
    .bind(&request.iccid)
    .bind(card_type)
    .bind(&request.msisdn)
    .bind(imsi)
    .bind(&request.customer_name)
    .bind(package_code)
    .bind(OrderState::Requested)
    .fetch_one(db)
    .await
    .map_err(card_taken)
}

/// Points an order that is still waiting for its write at another card (the clerk swapped it).
pub async fn switch_card(db: &mut PgConnection, order: &Order) -> Result<(), JobError> {
    sqlx::query(
        "UPDATE writecard.orders SET iccid = $2, card_type = $3, imsi = $4 WHERE order_id = $1",
    )
    .bind(order.order_id)
    .bind(&order.iccid)
    .bind(&order.card_type)
    .bind(&order.imsi)
    .execute(db)
    .await
    .map_err(card_taken)?;
    Ok(())
}

/// Handles `order.presubmit.v1`: fees and the acceptance form.
pub async fn presubmit(
    context: &JobContext,
    job: OrderPresubmit,
    db: &mut PgConnection,
) -> Result<Outcome, JobError> {
    let order = lock_named(db, job.order_id).await?;
    match order.state {
        OrderState::Requested => return Err(JobError::reject(reasons::ORDER_NOT_WRITTEN)),
        OrderState::Cancelled => return Err(JobError::reject(reasons::ORDER_CANCELLED)),
        OrderState::Presubmitted | OrderState::Submitted => {
            return Ok(presubmitted_event(&order));
        }
        OrderState::Written => {}
    }
    let package = package(db, &order.package_code)
        .await?
        .ok_or_else(|| JobError::reject(reasons::PACKAGE_UNKNOWN))?;
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *db)
        .await?;
    let lines = fees::fee_lines(&package, now);
    let total: i64 = lines.iter().map(|line| line.amount_fen).sum();
    let form = fees::acceptance_form(&FormFacts {
        order_id: order.order_id,
        outlet_code: &order.outlet_code,
        agent_code: &order.agent_code,
        staff_id: &job.staff_id,
        customer_name: &order.customer_name,
        msisdn: &order.msisdn,
        iccid: &order.iccid,
        package: &package,
        fees: &lines,
        now,
    });
    let updated: Order = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE writecard.orders SET state = $5, fees = $2, total_fen = $3, acceptance_form = $4, \
             presubmitted_at = now() WHERE order_id = $1 RETURNING {ORDER_COLUMNS}"
    )))
    .bind(order.order_id)
    .bind(sqlx::types::Json(&lines))
    .bind(total)
    .bind(&form)
    .bind(OrderState::Presubmitted)
    .fetch_one(&mut *db)
    .await?;
    tracing::info!(order = %order.order_id, total_fen = total, job = %context.message_id, "order pre-submitted");
    Ok(presubmitted_event(&updated))
}

fn presubmitted_event(order: &Order) -> Outcome {
    let event = OrderPresubmitted {
        order_id: order.order_id,
        fees: order
            .fees
            .as_ref()
            .map(|fees| fees.0.clone())
            .unwrap_or_default(),
        total_fen: order.total_fen.unwrap_or_default(),
        acceptance_form: order.acceptance_form.clone().unwrap_or_default(),
    };
    Outcome::event(&event)
}

/// Handles `order.submit.v1` (正式提交): the line opens.
pub async fn submit(
    context: &JobContext,
    job: OrderSubmit,
    db: &mut PgConnection,
) -> Result<Outcome, JobError> {
    let order = lock_named(db, job.order_id).await?;
    match order.state {
        OrderState::Requested => return Err(JobError::reject(reasons::ORDER_NOT_WRITTEN)),
        OrderState::Written => return Err(JobError::reject(reasons::ORDER_NOT_PRESUBMITTED)),
        OrderState::Cancelled => return Err(JobError::reject(reasons::ORDER_CANCELLED)),
        OrderState::Submitted => {
            return Ok(activated_event(
                &order,
                order.submitted_at.unwrap_or_else(Utc::now),
            ));
        }
        OrderState::Presubmitted => {}
    }
    if !mark_card(db, &order, Mark::Sold, &job.staff_id, context).await? {
        tracing::error!(order = %order.order_id, iccid = %order.iccid, "the order's card is not in the written state");
        return Err(JobError::needs_ops(reasons::CARD_STATE_INCONSISTENT));
    }
    numbers::take_into_use(db, order.order_id, &order.msisdn, &order.imsi).await?;
    let submitted_at: DateTime<Utc> = sqlx::query_scalar(
        "UPDATE writecard.orders SET state = $2, submitted_at = now() WHERE order_id = $1 RETURNING submitted_at",
    )
    .bind(order.order_id)
    .bind(OrderState::Submitted)
    .fetch_one(&mut *db)
    .await?;
    tracing::info!(order = %order.order_id, "order submitted; line activated");
    Ok(activated_event(&order, submitted_at))
}

fn activated_event(order: &Order, activated_at: DateTime<Utc>) -> Outcome {
    let event = OrderActivated {
        order_id: order.order_id,
        iccid: order.iccid.clone(),
        imsi: order.imsi.clone(),
        msisdn: order.msisdn.clone(),
        package_code: order.package_code.clone(),
        key_reference: simflow_carddata::keys::key_ref(&order.iccid),
        activated_at,
    };
    Outcome::event(&event)
}

/// Handles `order.cancel.v1`: before final submit only; see the module doc for the card rule.
pub async fn cancel(
    settings: &WritecardSettings,
    context: &JobContext,
    job: OrderCancel,
    db: &mut PgConnection,
) -> Result<Outcome, JobError> {
    let order = lock_named(db, job.order_id).await?;
    let cancelled = |order: &Order| {
        let event = OrderCancelled {
            order_id: order.order_id,
            msisdn_released: (!order.card_written).then(|| order.msisdn.clone()),
            card_disposition: if order.card_written {
                "damaged".to_owned()
            } else {
                "blank".to_owned()
            },
        };
        Outcome::event(&event)
    };
    match order.state {
        OrderState::Submitted => return Err(JobError::reject(reasons::ORDER_SUBMITTED)),
        OrderState::Cancelled => return Ok(cancelled(&order)),
        OrderState::Requested | OrderState::Written | OrderState::Presubmitted => {}
    }
    if order.card_written {
        mark_card(db, &order, Mark::Damaged, &job.staff_id, context).await?;
    }
    // A script still out at the outlet may yet be written: treat its number and IMSI as written.
    let script_out: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM writecard.scripts WHERE order_id = $1 AND state = $2)",
    )
    .bind(order.order_id)
    .bind(ScriptState::Sent)
    .fetch_one(&mut *db)
    .await?;
    let maybe_on_a_card = order.card_written || script_out;
    numbers::release(
        db,
        order.order_id,
        &order.msisdn,
        &order.imsi,
        maybe_on_a_card,
        settings.msisdn_cooling_days,
    )
    .await?;
    sqlx::query("UPDATE writecard.orders SET state = $2, cancelled_at = now() WHERE order_id = $1")
        .bind(order.order_id)
        .bind(OrderState::Cancelled)
        .execute(&mut *db)
        .await?;
    tracing::info!(order = %order.order_id, reason = %job.reason, "order cancelled");
    Ok(cancelled(&order))
}
