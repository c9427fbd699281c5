//! The centre's check of an outlet's reader against the writer ledger (写卡器发放明细).
//!
//! An outlet node reports its reader's identity when it connects (`outlet.reader_report.v1`)
//! and with every write result. A reader counts as the outlet's when the writer ledger has the
//! reader's serial issued to that outlet; a reader with no serial, or one the ledger has
//! elsewhere or not at all, is *foreign*.
//!
//! What happens to a foreign reader is `[writecard] foreign_reader`:
//! - `flag` (the default): record it (`writecard.foreign_readers`) and publish
//!   `writer.foreign_reader`; the work goes on.
//! - `refuse`: also refuse write requests (`WRITER_NOT_ISSUED_HERE`) while the outlet's last
//!   report names a foreign reader (or the outlet never reported), before any number, IMSI or
//!   script is reserved or sent.
//!
//! A write result is never refused: the card in it is already written (or damaged), and
//! refusing the result would lose what the card really is. It is recorded as usual and flagged.
//! Where the check sees the reader, and so where refusing is safe, is therefore the request: the
//! centre knows the reader from the connect report, and a node that swaps readers reconnects
//! (the reader watcher sees the swap) and reports again.

use simflow_inventory::states::WriterState;
use simflow_inventory::writers;
use simflow_runtime::{JobContext, JobError, Outcome};
use simflow_schemas::writers::{
    ForeignReader, ForeignReaderAction, ForeignReaderSeen, OutletReaderReport, ReaderIdentity,
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::reasons;
use crate::settings::ForeignReaderPolicy;

/// Whether a reader is the one the writer ledger issued to an outlet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderCheck {
    /// The ledger has this reader's serial issued to the outlet.
    Issued,
    /// It does not; `issued_to` is the outlet the ledger has the serial with, if any.
    Foreign {
        /// Where the ledger has the writer.
        issued_to: Option<String>,
    },
}

/// Checks `reader` (as an outlet reported it) against the writer ledger.
pub async fn check(
    db: &mut PgConnection,
    outlet_code: &str,
    reader: Option<&ReaderIdentity>,
) -> Result<ReaderCheck, sqlx::Error> {
    let Some(serial) = reader.and_then(|reader| reader.serial.as_deref()) else {
        return Ok(ReaderCheck::Foreign { issued_to: None });
    };
    let writer = writers::holder_of(db, serial).await?;
    let issued_to = writer
        .filter(|writer| writer.state == WriterState::Issued)
        .and_then(|writer| writer.outlet_code);
    if issued_to.as_deref() == Some(outlet_code) {
        Ok(ReaderCheck::Issued)
    } else {
        Ok(ReaderCheck::Foreign { issued_to })
    }
}

/// Where a flag was raised, and for which write.
#[derive(Debug, Clone, Copy)]
pub struct Sighting {
    /// Connect report or write result.
    pub seen_in: ForeignReaderSeen,
    /// The write's script, for a write result.
    pub script_id: Option<Uuid>,
    /// What the centre did.
    pub action: ForeignReaderAction,
}

/// Records a foreign reader and returns its event.
pub async fn flag(
    db: &mut PgConnection,
    outlet_code: &str,
    reader: Option<&ReaderIdentity>,
    issued_to: Option<String>,
    sighting: Sighting,
) -> Result<ForeignReader, sqlx::Error> {
    let event = ForeignReader {
        outlet_code: outlet_code.to_owned(),
        reader: reader.cloned(),
        seen_in: sighting.seen_in,
        script_id: sighting.script_id,
        issued_to,
        action: sighting.action,
    };
    sqlx::query(
        "INSERT INTO writecard.foreign_readers (outlet_code, reader, serial, seen_in, script_id, issued_to, action) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(outlet_code)
    .bind(reader.map(sqlx::types::Json))
    .bind(reader.and_then(|reader| reader.serial.as_deref()))
    .bind(seen_in_name(sighting.seen_in))
    .bind(sighting.script_id)
    .bind(&event.issued_to)
    .bind(action_name(sighting.action))
    .execute(&mut *db)
    .await?;
    tracing::warn!(
        outlet = outlet_code,
        seen_in = seen_in_name(sighting.seen_in),
        "reader not issued to this outlet"
    );
    Ok(event)
}

fn seen_in_name(seen_in: ForeignReaderSeen) -> &'static str {
    match seen_in {
        ForeignReaderSeen::Connect => "connect",
        ForeignReaderSeen::WriteResult => "write_result",
    }
}

fn action_name(action: ForeignReaderAction) -> &'static str {
    match action {
        ForeignReaderAction::Flagged => "flagged",
        ForeignReaderAction::Refused => "refused",
    }
}

/// Handles `outlet.reader_report.v1` (its sender already checked): keeps the outlet's last
/// report and flags a foreign reader.
pub async fn record_report(
    policy: ForeignReaderPolicy,
    report: &OutletReaderReport,
    db: &mut PgConnection,
) -> Result<Outcome, JobError> {
    let reader = report.reader.as_ref();
    sqlx::query(
        "INSERT INTO writecard.reader_reports (outlet_code, reader, serial, reported_at) VALUES ($1, $2, $3, now()) \
         ON CONFLICT (outlet_code) DO UPDATE SET reader = EXCLUDED.reader, serial = EXCLUDED.serial, reported_at = now()",
    )
    .bind(&report.outlet_code)
    .bind(reader.map(sqlx::types::Json))
    .bind(reader.and_then(|reader| reader.serial.as_deref()))
    .execute(&mut *db)
    .await?;
    match check(db, &report.outlet_code, reader).await? {
        ReaderCheck::Issued => Ok(Outcome::nothing()),
        ReaderCheck::Foreign { issued_to } => {
            let action = match policy {
                ForeignReaderPolicy::Flag => ForeignReaderAction::Flagged,
                ForeignReaderPolicy::Refuse => ForeignReaderAction::Refused,
            };
            let sighting = Sighting {
                seen_in: ForeignReaderSeen::Connect,
                script_id: None,
                action,
            };
            let event = flag(db, &report.outlet_code, reader, issued_to, sighting).await?;
            Ok(Outcome::event(&event))
        }
    }
}

/// Under `refuse`, refuses a write request while the outlet's last reported reader is not the
/// one issued to it (or it never reported one). Under `flag`, lets every request through.
pub async fn admit_request(
    policy: ForeignReaderPolicy,
    outlet_code: &str,
    db: &mut PgConnection,
) -> Result<(), JobError> {
    if policy == ForeignReaderPolicy::Flag {
        return Ok(());
    }
    let reported: Option<Option<sqlx::types::Json<ReaderIdentity>>> =
        sqlx::query_scalar("SELECT reader FROM writecard.reader_reports WHERE outlet_code = $1")
            .bind(outlet_code)
            .fetch_optional(&mut *db)
            .await?;
    let reader = reported.flatten().map(|reader| reader.0);
    match check(db, outlet_code, reader.as_ref()).await? {
        ReaderCheck::Issued => Ok(()),
        ReaderCheck::Foreign { .. } => Err(JobError::reject(reasons::WRITER_NOT_ISSUED_HERE)),
    }
}

/// A flag as the listing shows it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Flag {
    /// The outlet.
    pub outlet_code: String,
    /// The reader's serial, if it reported one.
    pub serial: Option<String>,
    /// `connect` or `write_result`.
    pub seen_in: String,
    /// The write's script.
    pub script_id: Option<Uuid>,
    /// Where the ledger has the writer.
    pub issued_to: Option<String>,
    /// `flagged` or `refused`.
    pub action: String,
    /// When.
    pub at: chrono::DateTime<chrono::Utc>,
}

/// The latest flags, newest first (of one outlet, or of all).
pub async fn flags(
    db: &mut PgConnection,
    outlet_code: Option<&str>,
    limit: i64,
) -> Result<Vec<Flag>, sqlx::Error> {
    sqlx::query_as(
        "SELECT outlet_code, serial, seen_in, script_id, issued_to, action, at FROM writecard.foreign_readers \
         WHERE $1::text IS NULL OR outlet_code = $1 ORDER BY flag_id DESC LIMIT $2",
    )
    .bind(outlet_code)
    .bind(limit)
    .fetch_all(&mut *db)
    .await
}

/// How many flags there are per `(seen_in, action)`, for the console's counter.
pub async fn counts(db: &mut PgConnection) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT seen_in, action, count(*) FROM writecard.foreign_readers GROUP BY seen_in, action ORDER BY 1, 2",
    )
    .fetch_all(&mut *db)
    .await
}

/// Checks the sender of a report like any outlet answer.
pub async fn reader_report(
    policy: ForeignReaderPolicy,
    context: &JobContext,
    report: OutletReaderReport,
    db: &mut PgConnection,
) -> Result<Outcome, JobError> {
    crate::results::check_sender(db, context, &report.outlet_code).await?;
    record_report(policy, &report, db).await
}
