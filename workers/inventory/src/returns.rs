//! Batch return from an agent (批量退卡), by text import or ICCID list, or by a start/end range
//! with a query step first.
//!
//! A return takes back every listed card that is issued to the named agent and still blank,
//! and reports every other card with its reason: 卡库位不一致 (CARD_LOCATION_MISMATCH) when the
//! card sits with another agent or in a warehouse, CARD_UNKNOWN, CARD_NOT_BLANK, ICCID_INVALID,
//! DUPLICATE_ICCID. A partly valid return commits the valid cards and answers the success count
//! and each failed card (the deck's per-card success counts); a return where no card qualifies
//! is refused as a whole. The cards come back with one UPDATE joined to one ledger INSERT and one
//! INSERT of the failures, all in one statement whatever the number of cards.

use chrono::{DateTime, Utc};
use simflow_runtime::create_once::{self, Creates};
use simflow_runtime::{Handler, JobContext, JobError, Outcome};
use simflow_schemas::common::{CardProblem, CardSelection, ClerkMessage};
use simflow_schemas::registry::ReturnJob;
use simflow_schemas::returns::{
    ReturnByList, ReturnByRange, ReturnCommitted, ReturnFee, ReturnFeeOutcome, ReturnQueried,
    ReturnQuery,
};
use simflow_schemas::topology::JobQueue;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::cards::reason_by_code;
use crate::fee;
use crate::iccid::Iccid;
use crate::issue::check_counterparts;
use crate::movement::{self, Cause, Location, Movement, Which};
use crate::reasons;
use crate::selection::{self, MAX_LISTED_PROBLEMS};
use crate::staff::{self, Permission};
use crate::states::{CardState, LedgerEvent};

/// The batch return worker's handler.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReturnHandler;

impl Handler for ReturnHandler {
    type Job = ReturnJob;
    const QUEUE: JobQueue = JobQueue::Return;

    async fn handle(
        &self,
        context: &JobContext,
        job: ReturnJob,
        db: &mut PgConnection,
    ) -> Result<Outcome, JobError> {
        match job {
            ReturnJob::ByList(job) => return_by_list(context, job, db).await,
            ReturnJob::ByRange(job) => return_by_range(context, job, db).await,
            ReturnJob::Query(job) => query_range(job, db).await,
        }
    }
}

/// The cards a return names.
enum Wanted {
    /// Distinct well-formed ICCIDs.
    List(Vec<String>),
    /// Every existing card from `first` to `last`.
    Range(Iccid, Iccid),
}

fn push_wanted(builder: &mut sqlx::QueryBuilder<sqlx::Postgres>, wanted: &Wanted) {
    match wanted {
        Wanted::List(iccids) => {
            builder.push("SELECT unnest(");
            builder.push_bind(iccids.clone());
            builder.push("::text[]) AS iccid");
        }
        Wanted::Range(first, last) => {
            builder.push("SELECT iccid FROM inventory.cards WHERE iccid BETWEEN ");
            builder.push_bind(first.as_str().to_owned());
            builder.push(" AND ");
            builder.push_bind(last.as_str().to_owned());
            builder.push(" AND length(iccid) = ");
            builder.push_bind(i32::try_from(first.as_str().len()).unwrap_or_default());
        }
    }
}

/// Why a wanted card cannot come back from `agent`, as SQL over `w` (wanted) and `c` (cards).
fn push_problem(builder: &mut sqlx::QueryBuilder<sqlx::Postgres>, agent: &str) {
    builder.push(
        "CASE WHEN c.iccid IS NULL THEN 'CARD_UNKNOWN' \
              WHEN c.location_kind <> 'agent' OR c.agent_code <> ",
    );
    builder.push_bind(agent.to_owned());
    builder
        .push(" THEN 'CARD_LOCATION_MISMATCH' WHEN c.state <> 'blank' THEN 'CARD_NOT_BLANK' END");
}

fn range_of(first: &str, last: &str) -> Result<(Iccid, Iccid), JobError> {
    match selection::parse(&CardSelection::Range {
        first: first.to_owned(),
        last: last.to_owned(),
    }) {
        Ok(selection::Selection::Range { first, last }) => Ok((first, last)),
        Ok(_) => Err(JobError::reject(reasons::BAD_RANGE)),
        Err(rejection) => Err(JobError::Rejected(rejection)),
    }
}

async fn count_in_range(
    db: &mut PgConnection,
    first: &Iccid,
    last: &Iccid,
) -> Result<i64, JobError> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM inventory.cards WHERE iccid BETWEEN $1 AND $2 AND length(iccid) = length($1)",
    )
    .bind(first.as_str())
    .bind(last.as_str())
    .fetch_one(&mut *db)
    .await?)
}

async fn check_parties(
    db: &mut PgConnection,
    staff_id: &str,
    warehouse: &str,
    agent: &str,
) -> Result<(), JobError> {
    check_counterparts(db, warehouse, agent, None, false).await?;
    staff::require(db, staff_id, warehouse, Permission::EssBatch).await?;
    Ok(())
}

async fn query_range(query: ReturnQuery, db: &mut PgConnection) -> Result<Outcome, JobError> {
    check_parties(db, &query.staff_id, &query.warehouse, &query.agent_ess_code).await?;
    let (first, last) = range_of(&query.first, &query.last)?;
    if count_in_range(db, &first, &last).await? == 0 {
        return Err(JobError::reject(reasons::EMPTY_SELECTION));
    }
    let mut builder = sqlx::QueryBuilder::new("WITH wanted AS (");
    push_wanted(&mut builder, &Wanted::Range(first, last));
    builder.push("), judged AS (SELECT w.iccid, ");
    push_problem(&mut builder, &query.agent_ess_code);
    builder.push(
        " AS code FROM wanted w LEFT JOIN inventory.cards c ON c.iccid = w.iccid) \
         SELECT iccid, code, count(*) FILTER (WHERE code IS NULL) OVER (), count(*) FILTER (WHERE code IS NOT NULL) OVER () \
         FROM judged ORDER BY (code IS NULL), iccid LIMIT ",
    );
    builder.push(MAX_LISTED_PROBLEMS);
    let rows: Vec<(String, Option<String>, i64, i64)> =
        builder.build_query_as().fetch_all(&mut *db).await?;
    let (returnable, failing) = rows.first().map(|row| (row.2, row.3)).unwrap_or_default();
    let problems = rows
        .iter()
        .filter_map(|(iccid, code, _, _)| {
            code.as_deref()
                .map(|code| reason_by_code(code).for_card(iccid))
        })
        .collect();
    let event = ReturnQueried {
        query_id: query.query_id,
        agent_ess_code: query.agent_ess_code,
        returnable_count: u64::try_from(returnable).unwrap_or_default(),
        problems,
        problem_count: u64::try_from(failing).unwrap_or_default(),
    };
    Ok(Outcome::event(&event))
}

/// The spec of a list or a range return job: both wire types carry the return's header
/// (`return_id`, `staff_id`, `warehouse`, `agent_ess_code`, `fee`) under the same names.
macro_rules! spec_of {
    ($job:expr, $selection_json:expr) => {
        ReturnSpec {
            return_id: $job.return_id,
            staff_id: &$job.staff_id,
            warehouse: &$job.warehouse,
            agent: &$job.agent_ess_code,
            fee: &$job.fee,
            selection_json: $selection_json,
        }
    };
}

async fn return_by_list(
    context: &JobContext,
    job: ReturnByList,
    db: &mut PgConnection,
) -> Result<Outcome, JobError> {
    let list = selection::parse_lenient(&job.cards).map_err(JobError::Rejected)?;
    let spec = spec_of!(job, serde_json::to_value(&job.cards).unwrap_or_default());
    perform_return(
        context,
        &spec,
        db,
        Wanted::List(list.iccids),
        list.problems,
        list.lines,
    )
    .await
}

async fn return_by_range(
    context: &JobContext,
    job: ReturnByRange,
    db: &mut PgConnection,
) -> Result<Outcome, JobError> {
    let selection_json = serde_json::json!({ "by": "range", "first": job.first, "last": job.last });
    let spec = spec_of!(job, selection_json);
    if let Some(answer) = earlier_answer(db, &spec).await? {
        return Ok(answer);
    }
    let (first, last) = range_of(&job.first, &job.last)?;
    let requested = count_in_range(db, &first, &last).await?;
    if requested == 0 {
        return Err(JobError::reject(reasons::EMPTY_SELECTION));
    }
    perform_return(
        context,
        &spec,
        db,
        Wanted::Range(first, last),
        Vec::new(),
        u64::try_from(requested).unwrap_or_default(),
    )
    .await
}

struct ReturnSpec<'a> {
    return_id: Uuid,
    staff_id: &'a str,
    warehouse: &'a str,
    agent: &'a str,
    fee: &'a ReturnFee,
    selection_json: serde_json::Value,
}

#[derive(Debug, sqlx::FromRow)]
struct EarlierReturn {
    warehouse_code: String,
    agent_code: String,
    selection: sqlx::types::Json<serde_json::Value>,
    return_amount_fen: i64,
    answer: sqlx::types::Json<ReturnCommitted>,
}

/// Failed cards as the return statement reports them: (ICCID, reason code).
type FailedCards = sqlx::types::Json<Vec<(String, Option<String>)>>;

/// A return id seen before answers what it answered then (or conflicts).
async fn earlier_answer(
    db: &mut PgConnection,
    spec: &ReturnSpec<'_>,
) -> Result<Option<Outcome>, JobError> {
    create_once::lock(db, Creates::Return, spec.return_id).await?;
    let earlier: Option<EarlierReturn> = sqlx::query_as(
        "SELECT warehouse_code, agent_code, selection, return_amount_fen, answer FROM inventory.returns WHERE return_id = $1",
    )
    .bind(spec.return_id)
    .fetch_optional(&mut *db)
    .await?;
    let same = |earlier: &EarlierReturn| {
        earlier.warehouse_code == spec.warehouse
            && earlier.agent_code == spec.agent
            && earlier.selection.0 == spec.selection_json
            && earlier.return_amount_fen == spec.fee.return_amount_fen
    };
    let Some(earlier) = create_once::compare(earlier, same, reasons::RETURN_ID_CONFLICT)? else {
        return Ok(None);
    };
    Ok(Some(Outcome::event(&earlier.answer.0)))
}

async fn perform_return(
    context: &JobContext,
    spec: &ReturnSpec<'_>,
    db: &mut PgConnection,
    wanted: Wanted,
    parse_problems: Vec<CardProblem>,
    requested: u64,
) -> Result<Outcome, JobError> {
    if let Some(answer) = earlier_answer(db, spec).await? {
        return Ok(answer);
    }
    fee::check_entered(spec.fee.return_amount_fen).map_err(JobError::reject)?;
    check_parties(db, spec.staff_id, spec.warehouse, spec.agent).await?;

    // Every card in one statement: the qualifying ones come back (with their ledger entries),
    // the others are recorded with their reasons. All parts see the cards as they were before.
    let mut builder = sqlx::QueryBuilder::new("WITH wanted AS (");
    push_wanted(&mut builder, &wanted);
    builder.push("), ");
    let reference = spec.return_id.to_string();
    movement::push_movement(
        &mut builder,
        &Movement {
            event: LedgerEvent::Returned,
            which: Which::Wanted,
            from: Some(Location::Agent(spec.agent)),
            to: Some(Location::Warehouse(spec.warehouse)),
            in_states: &[CardState::Blank],
            new_state: None,
            release_holds: false,
            cause: Cause {
                reference: &reference,
                staff_id: Some(spec.staff_id),
                job_message_id: &context.message_id,
            },
        },
    );
    builder.push(", failed AS (SELECT w.iccid, ");
    push_problem(&mut builder, spec.agent);
    builder.push(" AS code FROM wanted w LEFT JOIN inventory.cards c ON c.iccid = w.iccid WHERE w.iccid NOT IN (SELECT iccid FROM moved)) \
         SELECT (SELECT count(*) FROM logged), \
                coalesce((SELECT json_agg(json_build_array(iccid, code) ORDER BY iccid) FROM failed), '[]'::json)");
    let (returned, failed): (i64, FailedCards) =
        builder.build_query_as().fetch_one(&mut *db).await?;
    let mut failures: Vec<CardProblem> = parse_problems;
    failures.extend(failed.0.iter().map(|(iccid, code)| {
        reason_by_code(code.as_deref().unwrap_or("CARD_LOCATION_MISMATCH")).for_card(iccid)
    }));
    failures.sort_by(|a, b| a.iccid.cmp(&b.iccid));
    let failed_count = u64::try_from(failures.len()).unwrap_or(u64::MAX);
    if returned == 0 {
        let total = failed_count;
        return Err(JobError::Rejected(selection::cards_rejection(
            reasons::NOTHING_RETURNED,
            failures,
            total,
        )));
    }
    let returned = u64::try_from(returned).unwrap_or_default();

    // All failures are kept for the detail view; the answer lists a bounded number.
    let (failed_iccids, failed_codes): (Vec<String>, Vec<String>) = failures
        .iter()
        .map(|problem| (problem.iccid.clone(), problem.reason.code.clone()))
        .unzip();
    let paid = fee::paid_amount_fen(spec.fee.return_amount_fen, returned, requested);
    let committed_at: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *db)
        .await?;
    let summary = if failed_count == 0 {
        ClerkMessage::new(
            "RETURN_DONE",
            &format!("退卡成功{returned}张"),
            &format!("{returned} cards returned"),
        )
    } else {
        ClerkMessage::new(
            "RETURN_PARTIAL",
            &format!("退卡成功{returned}张，失败{failed_count}张"),
            &format!("{returned} cards returned, {failed_count} failed"),
        )
    };
    let mut listed = failures;
    listed.truncate(MAX_LISTED_PROBLEMS);
    let answer = ReturnCommitted {
        return_id: spec.return_id,
        agent_ess_code: spec.agent.to_owned(),
        success_count: returned,
        failed_count,
        failed: listed,
        fee: ReturnFeeOutcome {
            return_amount_fen: spec.fee.return_amount_fen,
            paid_amount_fen: paid,
            rule: fee::RULE.to_owned(),
        },
        committed_at,
        summary,
    };
    sqlx::query(
        "INSERT INTO inventory.returns (return_id, warehouse_code, agent_code, staff_id, selection, requested_count, \
             success_count, failed_count, return_amount_fen, paid_amount_fen, answer, committed_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(spec.return_id)
    .bind(spec.warehouse)
    .bind(spec.agent)
    .bind(spec.staff_id)
    .bind(sqlx::types::Json(&spec.selection_json))
    .bind(i32::try_from(requested).unwrap_or(i32::MAX))
    .bind(i32::try_from(returned).unwrap_or(i32::MAX))
    .bind(i32::try_from(failed_count).unwrap_or(i32::MAX))
    .bind(spec.fee.return_amount_fen)
    .bind(paid)
    .bind(sqlx::types::Json(&answer))
    .bind(committed_at)
    .execute(&mut *db)
    .await?;
    sqlx::query(
        "INSERT INTO inventory.return_failures (return_id, iccid, code) \
         SELECT $1, iccid, code FROM unnest($2::text[], $3::text[]) AS f(iccid, code) ON CONFLICT DO NOTHING",
    )
    .bind(spec.return_id)
    .bind(&failed_iccids)
    .bind(&failed_codes)
    .execute(&mut *db)
    .await?;
    tracing::info!(return_id = %spec.return_id, returned, failed = failed_count, "batch return committed");
    Ok(Outcome::event(&answer))
}

/// A return as the clerk can ask for it afterwards: the answer plus every card's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReturnDetail {
    /// The answer that was sent.
    pub answer: ReturnCommitted,
    /// Every card that came back.
    pub returned: Vec<String>,
    /// Every card that did not, with its reason code.
    pub failed: Vec<(String, String)>,
}

/// The full per-card detail of a return (for the "on request, each card's detail" view).
pub async fn detail(
    db: &mut PgConnection,
    return_id: Uuid,
) -> Result<Option<ReturnDetail>, sqlx::Error> {
    let answer: Option<sqlx::types::Json<ReturnCommitted>> =
        sqlx::query_scalar("SELECT answer FROM inventory.returns WHERE return_id = $1")
            .bind(return_id)
            .fetch_optional(&mut *db)
            .await?;
    let Some(answer) = answer else {
        return Ok(None);
    };
    let returned = sqlx::query_scalar(
        "SELECT iccid FROM inventory.card_ledger WHERE event = 'returned' AND reference = $1 ORDER BY iccid",
    )
    .bind(return_id.to_string())
    .fetch_all(&mut *db)
    .await?;
    let failed = sqlx::query_as(
        "SELECT iccid, code FROM inventory.return_failures WHERE return_id = $1 ORDER BY iccid",
    )
    .bind(return_id)
    .fetch_all(&mut *db)
    .await?;
    Ok(Some(ReturnDetail {
        answer: answer.0,
        returned,
        failed,
    }))
}
