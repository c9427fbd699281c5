//! Holding sets of cards in a warehouse for a job, set-based, and saying why cards could not
//! be held.
//!
//! A transfer holds cards in its source warehouse until it is approved out; a prepared batch
//! issue holds cards in the target warehouse until it is committed or the hold lapses. Both
//! take their cards with one `UPDATE … RETURNING` whatever the number of cards, and both are
//! all-or-nothing: when any selected card does not qualify, one diagnostic query lists every
//! card that failed and why, and the caller rolls back.

use chrono::{DateTime, Utc};
use simflow_runtime::JobError;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::reasons::{self, Reason};
use crate::selection::{self, MAX_LISTED_PROBLEMS, Selection};
use crate::slip::{IccidRange, MAX_SLIP_RANGES};

/// Which cards in a warehouse a job may take.
#[derive(Debug, Clone, Copy)]
pub struct WarehouseStock<'a> {
    /// The warehouse the cards must be in.
    pub warehouse: &'a str,
    /// The card type they must have.
    pub card_type: &'a str,
    /// The department ID they must carry, when the job's rules say so.
    pub department: Option<&'a str>,
}

/// What marks the held cards.
#[derive(Debug, Clone, Copy)]
pub enum Hold {
    /// Held by a transfer until it is approved out.
    Transfer(Uuid),
    /// Held by a prepared batch issue until it is committed or `until` passes.
    Batch {
        /// The batch.
        batch_id: Uuid,
        /// When the hold lapses.
        until: DateTime<Utc>,
    },
}

/// The cards held: how many, the lowest and highest ICCID, and (for a batch, whose slip lists
/// them) the runs of consecutive ICCIDs, at most [`MAX_SLIP_RANGES`] + 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// How many cards.
    pub count: i64,
    /// Lowest ICCID.
    pub first: String,
    /// Highest ICCID.
    pub last: String,
    /// Runs of consecutive ICCIDs (batches only; empty for transfers).
    pub runs: Vec<IccidRange>,
}

type Builder = sqlx::QueryBuilder<sqlx::Postgres>;

/// `AND`-able condition: the card is in the stock and held by nothing.
fn push_available(builder: &mut Builder, stock: &WarehouseStock<'_>) {
    builder.push(" c.location_kind = 'warehouse' AND c.warehouse_code = ");
    builder.push_bind(stock.warehouse.to_owned());
    builder.push(" AND c.card_type = ");
    builder.push_bind(stock.card_type.to_owned());
    builder.push(" AND c.state = 'blank'");
    if let Some(department) = stock.department {
        builder.push(" AND c.department_id = ");
        builder.push_bind(department.to_owned());
    }
    builder
        .push(" AND c.transfer_id IS NULL AND (c.batch_id IS NULL OR c.batch_hold_until < now())");
}

/// `AND`-able condition: the card is one of a list, or in a range.
fn push_selected(builder: &mut Builder, selection: &Selection) {
    match selection {
        Selection::List(_) => {
            builder.push(" c.iccid = ANY(");
            builder.push_bind(selection.list_strings());
            builder.push(")");
        }
        Selection::Range { first, last } => {
            builder.push(" c.iccid BETWEEN ");
            builder.push_bind(first.as_str().to_owned());
            builder.push(" AND ");
            builder.push_bind(last.as_str().to_owned());
            builder.push(" AND length(c.iccid) = ");
            builder.push_bind(i32::try_from(first.as_str().len()).unwrap_or_default());
        }
        Selection::Quantity(_) => {
            builder.push(" true");
        }
    }
}

fn push_set(builder: &mut Builder, hold: &Hold) {
    match hold {
        Hold::Transfer(transfer_id) => {
            builder.push(" transfer_id = ");
            builder.push_bind(*transfer_id);
        }
        Hold::Batch { batch_id, until } => {
            builder.push(" batch_id = ");
            builder.push_bind(*batch_id);
            builder.push(", batch_hold_until = ");
            builder.push_bind(*until);
        }
    }
}

/// What the hold statement answers, besides holding: the held cards' count, lowest and highest
/// ICCID, how many cards a range names (checked against the held count), and for a batch the
/// runs of consecutive ICCIDs (consecutive = bodies without the check digit differ by one) for
/// its slip. One statement, one pass over the held cards.
fn push_summary(builder: &mut Builder, selection: &Selection, hold: &Hold) {
    builder.push(" SELECT count(*), coalesce(min(iccid), ''), coalesce(max(iccid), ''), ");
    if matches!(selection, Selection::Range { .. }) {
        builder.push("(SELECT count(*) FROM inventory.cards c WHERE");
        push_selected(builder, selection);
        builder.push(")");
    } else {
        builder.push("NULL::bigint");
    }
    builder.push(", ");
    if matches!(hold, Hold::Batch { .. }) {
        builder.push(
            "(SELECT coalesce(json_agg(json_build_array(first, last, cards) ORDER BY first), '[]'::json) \
             FROM (SELECT min(iccid) AS first, max(iccid) AS last, count(*) AS cards FROM ( \
                SELECT iccid, length(iccid) AS width, \
                       left(iccid, length(iccid) - 1)::numeric \
                       - row_number() OVER (PARTITION BY length(iccid) ORDER BY iccid) AS run \
                FROM held) AS numbered GROUP BY width, run ORDER BY 1 LIMIT ",
        );
        builder.push_bind(i64::try_from(MAX_SLIP_RANGES + 1).unwrap_or(i64::MAX));
        builder.push(") AS runs)");
    } else {
        builder.push("'[]'::json");
    }
    builder.push(" FROM held");
}

/// Holds the selected cards; all of them or none (the rejection lists why).
pub async fn hold(
    db: &mut PgConnection,
    selection: &Selection,
    stock: &WarehouseStock<'_>,
    hold: &Hold,
) -> Result<Held, JobError> {
    let mut update = Builder::new("WITH ");
    match selection {
        Selection::Quantity(quantity) => {
            update.push("chosen AS (SELECT c.iccid FROM inventory.cards c WHERE");
            push_available(&mut update, stock);
            update.push(" ORDER BY c.iccid LIMIT ");
            update.push_bind(i64::from(*quantity));
            update.push(" FOR UPDATE SKIP LOCKED), held AS (UPDATE inventory.cards c SET");
            push_set(&mut update, hold);
            update.push(
                ", updated_at = now() FROM chosen WHERE c.iccid = chosen.iccid RETURNING c.iccid)",
            );
        }
        _ => {
            update.push("held AS (UPDATE inventory.cards c SET");
            push_set(&mut update, hold);
            update.push(", updated_at = now() WHERE");
            push_selected(&mut update, selection);
            update.push(" AND");
            push_available(&mut update, stock);
            update.push(" RETURNING c.iccid)");
        }
    }
    push_summary(&mut update, selection, hold);
    type Summary = (
        i64,
        String,
        String,
        Option<i64>,
        sqlx::types::Json<Vec<(String, String, i64)>>,
    );
    let (count, first, last, in_range, runs): Summary =
        update.build_query_as().fetch_one(&mut *db).await?;
    let wanted: Option<i64> = match selection {
        Selection::List(iccids) => Some(i64::try_from(iccids.len()).unwrap_or(i64::MAX)),
        Selection::Range { .. } if in_range == Some(0) => {
            return Err(JobError::reject(reasons::EMPTY_SELECTION));
        }
        Selection::Range { .. } => in_range,
        Selection::Quantity(_) => None,
    };
    match (selection, wanted) {
        (Selection::Quantity(quantity), _) if count < i64::from(*quantity) => {
            return Err(JobError::reject_with(
                reasons::NOT_ENOUGH_CARDS,
                &format!("{quantity} asked, {count} available"),
            ));
        }
        (_, Some(wanted)) if count != wanted => {
            return Err(unavailable(db, selection, stock, hold).await?);
        }
        _ => {}
    }
    let runs = runs
        .0
        .into_iter()
        .map(|(first, last, count)| IccidRange { first, last, count })
        .collect();
    Ok(Held {
        count,
        first,
        last,
        runs,
    })
}

/// Why the selected cards could not all be held. Runs after the hold statement in the same
/// transaction (which the caller rolls back), so cards this job already holds count as fine.
async fn unavailable(
    db: &mut PgConnection,
    selection: &Selection,
    stock: &WarehouseStock<'_>,
    hold: &Hold,
) -> Result<JobError, JobError> {
    let own = match hold {
        Hold::Transfer(id) | Hold::Batch { batch_id: id, .. } => *id,
    };
    let mut query = Builder::new("WITH wanted AS (");
    match selection {
        Selection::List(_) => {
            query.push("SELECT unnest(");
            query.push_bind(selection.list_strings());
            query.push("::text[]) AS iccid");
        }
        _ => {
            query.push("SELECT c.iccid FROM inventory.cards c WHERE");
            push_selected(&mut query, selection);
        }
    }
    query.push(
        "), problems AS (SELECT w.iccid, CASE WHEN c.iccid IS NULL THEN 'CARD_UNKNOWN' \
         WHEN c.location_kind <> 'warehouse' OR c.warehouse_code <> ",
    );
    query.push_bind(stock.warehouse.to_owned());
    query.push(" THEN 'CARD_NOT_IN_WAREHOUSE' WHEN c.card_type <> ");
    query.push_bind(stock.card_type.to_owned());
    query.push(" THEN 'CARD_TYPE_MISMATCH' WHEN c.state <> 'blank' THEN 'CARD_NOT_BLANK'");
    if let Some(department) = stock.department {
        query.push(" WHEN c.department_id <> ");
        query.push_bind(department.to_owned());
        query.push(" THEN 'DEPARTMENT_MISMATCH'");
    }
    query.push(" WHEN (c.transfer_id IS NOT NULL AND c.transfer_id <> ");
    query.push_bind(own);
    query.push(") OR (c.batch_id IS NOT NULL AND c.batch_hold_until >= now() AND c.batch_id <> ");
    query.push_bind(own);
    query.push(") THEN 'CARD_HELD' END AS code FROM wanted w LEFT JOIN inventory.cards c ON c.iccid = w.iccid) \
         SELECT iccid, code, count(*) OVER () FROM problems WHERE code IS NOT NULL ORDER BY iccid LIMIT ");
    query.push(MAX_LISTED_PROBLEMS);
    let rows: Vec<(String, String, i64)> = query.build_query_as().fetch_all(&mut *db).await?;
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

/// The reason with this code (the generic one if the code is unknown).
pub fn reason_by_code(code: &str) -> Reason {
    Reason::find(reasons::ALL, code).unwrap_or(reasons::CARDS_NOT_AVAILABLE)
}
