//! Group commit: many jobs of one queue in one PostgreSQL transaction, each in a savepoint of
//! its own, with the inbox claimed and recorded for all of them in two statements.
//!
//! The order inside the caller's transaction:
//! 1. Claim: one `INSERT … ON CONFLICT DO NOTHING` of every message id into `runtime.inbox`
//!    (sorted, so two batches never wait on each other's claims in a cycle). A claimed id is
//!    ours to handle; another delivery of it (a redelivery, a duplicate publish, a replay) now
//!    waits on our row until we commit, then finds it.
//! 2. An id already recorded answers with the stored outcome (or, if the stored body digest
//!    differs, is refused as a reused id); a second copy of an id inside the same batch
//!    follows the first.
//! 3. Each claimed job runs its handler after `SAVEPOINT`; a rejection, a failure that needs
//!    ops or a transient failure rolls back to that savepoint, so it undoes only its own job.
//! 4. One statement records every outcome and removes the claims of jobs that did not finish
//!    (they will be dead-lettered or retried, and must be handled again when they come back).
//!
//! The caller commits; nothing here touches the broker. A database error outside a handler
//! (the connection went away) fails the whole batch, which the caller rolls back and retries.

use std::collections::{HashMap, HashSet};

use simflow_schemas::common::ClerkMessage;
use simflow_schemas::events::JobRejected;
use simflow_schemas::registry::{JobSet, SharedEvent, event_routing_key};
use sqlx::PgConnection;

use crate::handler::{Handler, JobContext, JobError, Rejection};
use crate::outcome::{Outcome, Outgoing};
use crate::reasons;

/// One job of a batch.
#[derive(Debug, Clone)]
pub struct BatchJob<J> {
    /// What the handler is told.
    pub context: JobContext,
    /// The decoded job.
    pub job: J,
    /// SHA-256 of the body, kept with the inbox row: a reused id with another body is refused.
    pub body_digest: [u8; 32],
}

impl<J: JobSet> BatchJob<J> {
    /// A first delivery of `job` under `message_id` (tests and tools).
    pub fn fresh(message_id: &str, job: J) -> BatchJob<J> {
        let body = job.message_type().as_bytes().to_vec();
        let mut context = JobContext::fresh(message_id, job.message_type());
        context.subject_id = Some(job.subject_id());
        BatchJob {
            context,
            job,
            body_digest: digest(&body),
        }
    }
}

/// SHA-256 of a message body.
pub fn digest(body: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(body).into()
}

/// How one job of a batch ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The handler's effects and its outcome are in the transaction.
    Committed(Outcome),
    /// A business answer; the handler's effects were rolled back and the rejection event is
    /// the recorded outcome.
    Rejected(Outcome),
    /// Handled before (an earlier delivery, another worker, or an earlier copy in this batch):
    /// the stored outcome, to publish again with the same message ids.
    Duplicate(Outcome),
    /// The message id was used before for another body: refused, and nothing is recorded
    /// (the first body's outcome stands).
    IdReused(Outcome),
    /// Cannot be done until ops act.
    NeedsOps(ClerkMessage),
    /// May succeed later.
    Transient(String),
}

impl Verdict {
    /// Whether the transaction must keep this job's inbox row.
    fn records(&self) -> Option<&Outcome> {
        match self {
            Verdict::Committed(outcome) | Verdict::Rejected(outcome) => Some(outcome),
            _ => None,
        }
    }
}

/// The rejection event a job's refusal publishes.
pub(crate) fn rejection_outcome<H: Handler>(context: &JobContext, rejection: Rejection) -> Outcome {
    let event = JobRejected {
        job_message_id: context.message_id.clone(),
        job_type: context.message_type.clone(),
        subject_id: context.subject_id.clone(),
        reason: rejection.reason,
        problems: rejection.problems,
        problem_count: rejection.problem_count,
    };
    Outcome::nothing().and(Outgoing::event(
        &event_routing_key(H::QUEUE, SharedEvent::Rejected),
        &event,
    ))
}

/// Runs a batch inside the caller's transaction (see the module docs); one verdict per job,
/// in order.
pub(crate) async fn transact<H: Handler>(
    handler: &H,
    db: &mut PgConnection,
    jobs: Vec<BatchJob<H::Job>>,
) -> Result<Vec<Verdict>, sqlx::Error> {
    let consumer = handler.name();
    let ids: Vec<String> = jobs
        .iter()
        .map(|job| job.context.message_id.clone())
        .collect();
    let types: Vec<String> = jobs
        .iter()
        .map(|job| job.context.message_type.clone())
        .collect();
    let digests: Vec<Vec<u8>> = jobs.iter().map(|job| job.body_digest.to_vec()).collect();
    let claimed: HashSet<String> = sqlx::query_scalar(
        "INSERT INTO runtime.inbox (consumer, message_id, message_type, body_sha256) \
         SELECT $1, claim.id, claim.kind, claim.digest \
         FROM unnest($2::text[], $3::text[], $4::bytea[]) AS claim(id, kind, digest) \
         ORDER BY claim.id \
         ON CONFLICT (consumer, message_id) DO NOTHING RETURNING message_id",
    )
    .bind(consumer)
    .bind(&ids)
    .bind(&types)
    .bind(&digests)
    .fetch_all(&mut *db)
    .await?
    .into_iter()
    .collect();

    // Which jobs to handle, which follow an earlier copy in this batch, which were handled
    // before.
    let mut verdicts: Vec<Option<Verdict>> = vec![None; jobs.len()];
    let mut first_copy: HashMap<&str, usize> = HashMap::new();
    let mut follows: Vec<(usize, usize)> = Vec::new();
    let mut to_handle: Vec<usize> = Vec::new();
    let mut handled_before: Vec<usize> = Vec::new();
    for (index, id) in ids.iter().enumerate() {
        if let Some(first) = first_copy.get(id.as_str()) {
            follows.push((index, *first));
        } else {
            first_copy.insert(id, index);
            if claimed.contains(id) {
                to_handle.push(index);
            } else {
                handled_before.push(index);
            }
        }
    }
    if !handled_before.is_empty() {
        answer_from_inbox::<H>(db, consumer, &jobs, &handled_before, &mut verdicts).await?;
    }

    let mut unclaim: Vec<String> = Vec::new();
    let mut savepoint_open = false;
    let mut jobs: Vec<Option<BatchJob<H::Job>>> = jobs.into_iter().map(Some).collect();
    for index in to_handle {
        let Some(BatchJob { context, job, .. }) = jobs[index].take() else {
            continue;
        };
        let statement = if savepoint_open {
            "RELEASE SAVEPOINT simflow_job; SAVEPOINT simflow_job"
        } else {
            "SAVEPOINT simflow_job"
        };
        sqlx::raw_sql(statement).execute(&mut *db).await?;
        savepoint_open = true;
        let verdict = match handler.handle(&context, job, db).await {
            Ok(outcome) => Verdict::Committed(outcome),
            Err(error) => {
                sqlx::raw_sql("ROLLBACK TO SAVEPOINT simflow_job")
                    .execute(&mut *db)
                    .await?;
                match error {
                    JobError::Rejected(rejection) => {
                        Verdict::Rejected(rejection_outcome::<H>(&context, rejection))
                    }
                    JobError::NeedsOps(reason) => {
                        unclaim.push(context.message_id.clone());
                        Verdict::NeedsOps(reason)
                    }
                    JobError::Transient(error) => {
                        unclaim.push(context.message_id.clone());
                        Verdict::Transient(format!("{error:#}"))
                    }
                }
            }
        };
        verdicts[index] = Some(verdict);
    }

    let (recorded_ids, recorded): (Vec<String>, Vec<sqlx::types::Json<&Outcome>>) = ids
        .iter()
        .zip(&verdicts)
        .filter_map(|(id, verdict)| {
            let outcome = verdict.as_ref()?.records()?;
            Some((id.clone(), sqlx::types::Json(outcome)))
        })
        .unzip();
    sqlx::query(
        "WITH recorded AS ( \
            UPDATE runtime.inbox i SET outcome = r.outcome \
            FROM unnest($2::text[], $3::jsonb[]) AS r(id, outcome) \
            WHERE i.consumer = $1 AND i.message_id = r.id RETURNING 1), \
         unclaimed AS ( \
            DELETE FROM runtime.inbox WHERE consumer = $1 AND message_id = ANY($4) RETURNING 1) \
         SELECT (SELECT count(*) FROM recorded), (SELECT count(*) FROM unclaimed)",
    )
    .bind(consumer)
    .bind(&recorded_ids)
    .bind(&recorded)
    .bind(&unclaim)
    .execute(&mut *db)
    .await?;

    // A second copy in the same batch publishes what the first published; when the first did
    // not finish (dead-lettered or retried), the copy has nothing to add: the first carries
    // the job on.
    for (index, first) in follows {
        let outcome = match &verdicts[first] {
            Some(
                Verdict::Committed(outcome)
                | Verdict::Rejected(outcome)
                | Verdict::Duplicate(outcome),
            ) => outcome.clone(),
            _ => Outcome::nothing(),
        };
        verdicts[index] = Some(Verdict::Duplicate(outcome));
    }
    Ok(verdicts
        .into_iter()
        .map(|verdict| {
            verdict.unwrap_or_else(|| Verdict::Transient("the job was not handled".to_owned()))
        })
        .collect())
}

/// Answers jobs whose ids were recorded before: the stored outcome, or a refusal when the
/// stored body differs; an id claimed but not yet recorded (another transaction holds it and
/// has not finished) is tried again later.
async fn answer_from_inbox<H: Handler>(
    db: &mut PgConnection,
    consumer: &str,
    jobs: &[BatchJob<H::Job>],
    indexes: &[usize],
    verdicts: &mut [Option<Verdict>],
) -> Result<(), sqlx::Error> {
    let wanted: Vec<String> = indexes
        .iter()
        .map(|index| jobs[*index].context.message_id.clone())
        .collect();
    type Stored = (String, Option<sqlx::types::Json<Outcome>>, Option<Vec<u8>>);
    let rows: Vec<Stored> = sqlx::query_as(
        "SELECT message_id, outcome, body_sha256 FROM runtime.inbox \
         WHERE consumer = $1 AND message_id = ANY($2)",
    )
    .bind(consumer)
    .bind(&wanted)
    .fetch_all(&mut *db)
    .await?;
    let stored: HashMap<String, (Option<Outcome>, Option<Vec<u8>>)> = rows
        .into_iter()
        .map(|(id, outcome, digest)| (id, (outcome.map(|json| json.0), digest)))
        .collect();
    for index in indexes {
        let job = &jobs[*index];
        verdicts[*index] = Some(match stored.get(&job.context.message_id) {
            Some((Some(_), Some(digest))) if digest.as_slice() != job.body_digest => {
                Verdict::IdReused(rejection_outcome::<H>(
                    &job.context,
                    reasons::MESSAGE_ID_REUSED.into(),
                ))
            }
            Some((Some(outcome), _)) => Verdict::Duplicate(outcome.clone()),
            _ => Verdict::Transient(
                "another delivery of this message is being handled; trying again".to_owned(),
            ),
        });
    }
    Ok(())
}
