//! The node's local journal: one SQLite file per outlet node, written before and after every
//! step that touches a card, so that a node killed at any point knows on restart what it was
//! doing and what it already answered.
//!
//! A script's life: `received` (checked and opened) → `writing` (written durably *before* the
//! first APDU that changes the card) → `finished` (the result is decided and stored) →
//! `reported` (handed to the broker). The stored result is what every later delivery of the
//! same script gets, so a result is decided once. The journal keeps the envelope as it arrived
//! (sealed to this outlet's key, so no secret is at rest in clear) to look at after a crash; it
//! never holds a key, an ADM or a script in clear.

use std::path::Path;
use std::str::FromStr;

use chrono::Utc;
use simflow_schemas::writecard::{WriteResult, WriteScriptEnvelope};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};
use uuid::Uuid;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS scripts (
    script_id   TEXT PRIMARY KEY,
    order_id    TEXT NOT NULL,
    iccid       TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    envelope    TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('received', 'writing', 'finished', 'reported')),
    result      TEXT,
    received_at TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS steps (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    script_id TEXT NOT NULL,
    at        TEXT NOT NULL,
    step      TEXT NOT NULL,
    detail    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS steps_by_script ON steps (script_id, id);
";

/// Where a script stands in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptState {
    /// Checked and opened; nothing sent to the card that changes it.
    Received,
    /// Writing started (or may have): after a crash the card must be read to know more.
    Writing,
    /// The result is decided and stored.
    Finished,
    /// The result was handed to the broker.
    Reported,
}

impl ScriptState {
    fn as_str(self) -> &'static str {
        match self {
            ScriptState::Received => "received",
            ScriptState::Writing => "writing",
            ScriptState::Finished => "finished",
            ScriptState::Reported => "reported",
        }
    }

    fn parse(text: &str) -> Result<ScriptState, JournalError> {
        Ok(match text {
            "received" => ScriptState::Received,
            "writing" => ScriptState::Writing,
            "finished" => ScriptState::Finished,
            "reported" => ScriptState::Reported,
            other => return Err(JournalError::Corrupt(format!("unknown state {other:?}"))),
        })
    }
}

/// One script as the journal knows it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The script.
    pub script_id: Uuid,
    /// The card it is for.
    pub iccid: String,
    /// Where it stands.
    pub state: ScriptState,
    /// The decided result, once there is one.
    pub result: Option<WriteResult>,
}

/// A write whose result is decided, for the counter page.
#[derive(Debug, Clone)]
pub struct FinishedWrite {
    /// The card.
    pub iccid: String,
    /// The number written, when the journal knows it.
    pub msisdn: Option<String>,
    /// The decided result.
    pub result: WriteResult,
    /// When it was decided.
    pub finished_at: chrono::DateTime<Utc>,
}

/// A journal failure: the node stops taking work rather than write a card it cannot journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// SQLite said no.
    #[error("journal: {0}")]
    Sqlite(#[from] sqlx::Error),
    /// A row the node cannot read back.
    #[error("journal is corrupt: {0}")]
    Corrupt(String),
}

/// The journal file.
#[derive(Debug, Clone)]
pub struct Journal {
    pool: SqlitePool,
}

impl Journal {
    /// Opens (creating it if needed) the journal at `path`. Every commit is synced to disk
    /// (`synchronous = FULL`): a journal entry that says "writing" survives a power cut.
    pub async fn open(path: &Path) -> Result<Journal, JournalError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|error| {
                JournalError::Corrupt(format!("cannot create {}: {error}", dir.display()))
            })?;
        }
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        let pool = sqlx::pool::PoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await?;
        // Journals made before the counter page have no MSISDN column.
        let has_msisdn: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pragma_table_info('scripts') WHERE name = 'msisdn'",
        )
        .fetch_one(&pool)
        .await?;
        if has_msisdn == 0 {
            sqlx::query("ALTER TABLE scripts ADD COLUMN msisdn TEXT")
                .execute(&pool)
                .await?;
        }
        Ok(Journal { pool })
    }

    /// The entry of a script, if the node has seen it.
    pub async fn get(&self, script_id: Uuid) -> Result<Option<Entry>, JournalError> {
        let row: Option<(String, String, Option<String>)> =
            sqlx::query_as("SELECT iccid, state, result FROM scripts WHERE script_id = ?")
                .bind(script_id.to_string())
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(iccid, state, result)| {
            Ok(Entry {
                script_id,
                iccid,
                state: ScriptState::parse(&state)?,
                result: result
                    .map(|text| {
                        serde_json::from_str(&text)
                            .map_err(|error| JournalError::Corrupt(error.to_string()))
                    })
                    .transpose()?,
            })
        })
        .transpose()
    }

    /// Records a script as received (no effect if it is already there), with the number it
    /// writes (for the counter page's list of the day's writes).
    pub async fn received(
        &self,
        envelope: &WriteScriptEnvelope,
        message_id: &str,
        msisdn: Option<&str>,
    ) -> Result<(), JournalError> {
        let now = Utc::now().to_rfc3339();
        let sealed = serde_json::to_string(envelope)
            .map_err(|error| JournalError::Corrupt(error.to_string()))?;
        sqlx::query(
            "INSERT INTO scripts (script_id, order_id, iccid, message_id, envelope, msisdn, state, received_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, 'received', ?, ?) ON CONFLICT (script_id) DO NOTHING",
        )
        .bind(envelope.script_id.to_string())
        .bind(envelope.order_id.to_string())
        .bind(&envelope.iccid)
        .bind(message_id)
        .bind(sealed)
        .bind(msisdn)
        .bind(&now)
        .bind(&now)
        .execute(&self.pool)
        .await?;
        self.step(envelope.script_id, "received", message_id).await
    }

    /// Moves a script to `state` and notes the step.
    pub async fn advance(
        &self,
        script_id: Uuid,
        state: ScriptState,
        detail: &str,
    ) -> Result<(), JournalError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE scripts SET state = ?, updated_at = ? WHERE script_id = ?")
            .bind(state.as_str())
            .bind(Utc::now().to_rfc3339())
            .bind(script_id.to_string())
            .execute(&mut *tx)
            .await?;
        insert_step(&mut tx, script_id, state.as_str(), detail).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores the decided result (state `finished`). A result already stored wins: the first
    /// decision is the one every delivery gets.
    pub async fn finish(&self, result: &WriteResult) -> Result<WriteResult, JournalError> {
        let text = serde_json::to_string(result)
            .map_err(|error| JournalError::Corrupt(error.to_string()))?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE scripts SET state = 'finished', result = ?, updated_at = ? WHERE script_id = ? AND result IS NULL",
        )
        .bind(&text)
        .bind(Utc::now().to_rfc3339())
        .bind(result.script_id.to_string())
        .execute(&mut *tx)
        .await?;
        let summary = match &result.outcome {
            simflow_schemas::writecard::WriteOutcome::Written { apdu_count, .. } => {
                format!("written ({apdu_count} APDUs)")
            }
            simflow_schemas::writecard::WriteOutcome::Failed { card_state, reason } => {
                format!("failed: {} (card {card_state:?})", reason.code)
            }
        };
        insert_step(&mut tx, result.script_id, "finished", &summary).await?;
        let stored: Option<String> =
            sqlx::query_scalar("SELECT result FROM scripts WHERE script_id = ?")
                .bind(result.script_id.to_string())
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        match stored {
            Some(text) => serde_json::from_str(&text)
                .map_err(|error| JournalError::Corrupt(error.to_string())),
            None => Err(JournalError::Corrupt(format!(
                "script {} has no row to finish",
                result.script_id
            ))),
        }
    }

    /// Notes one step of a script's handling.
    pub async fn step(
        &self,
        script_id: Uuid,
        step: &str,
        detail: &str,
    ) -> Result<(), JournalError> {
        let mut connection = self.pool.acquire().await?;
        insert_step(&mut connection, script_id, step, detail).await
    }

    /// The steps of a script in order, as `(step, detail)`.
    pub async fn steps(&self, script_id: Uuid) -> Result<Vec<(String, String)>, JournalError> {
        Ok(
            sqlx::query_as("SELECT step, detail FROM steps WHERE script_id = ? ORDER BY id")
                .bind(script_id.to_string())
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Scripts whose write started, or whose result was decided, but never handed to the
    /// broker: `(message_id, envelope as received)`, oldest first.
    pub async fn unreported(&self) -> Result<Vec<(String, WriteScriptEnvelope)>, JournalError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT message_id, envelope FROM scripts WHERE state IN ('writing', 'finished') ORDER BY received_at",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(message_id, envelope)| {
                serde_json::from_str(&envelope)
                    .map(|envelope| (message_id, envelope))
                    .map_err(|error| JournalError::Corrupt(error.to_string()))
            })
            .collect()
    }

    /// Writes whose result was decided at or after `since`, newest first, at most `limit`.
    pub async fn finished_since(
        &self,
        since: chrono::DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<FinishedWrite>, JournalError> {
        let rows: Vec<(String, Option<String>, String, String)> = sqlx::query_as(
            "SELECT s.iccid, s.msisdn, s.result, f.at \
             FROM scripts s \
             JOIN (SELECT script_id, MIN(at) AS at FROM steps WHERE step = 'finished' GROUP BY script_id) f \
               ON f.script_id = s.script_id \
             WHERE s.result IS NOT NULL AND f.at >= ? \
             ORDER BY f.at DESC LIMIT ?",
        )
        .bind(since.to_rfc3339())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(iccid, msisdn, result, at)| {
                Ok(FinishedWrite {
                    iccid,
                    msisdn,
                    result: serde_json::from_str(&result)
                        .map_err(|error| JournalError::Corrupt(error.to_string()))?,
                    finished_at: chrono::DateTime::parse_from_rfc3339(&at)
                        .map_err(|error| JournalError::Corrupt(error.to_string()))?
                        .with_timezone(&Utc),
                })
            })
            .collect()
    }

    /// Closes the file.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

async fn insert_step(
    connection: &mut sqlx::SqliteConnection,
    script_id: Uuid,
    step: &str,
    detail: &str,
) -> Result<(), JournalError> {
    sqlx::query("INSERT INTO steps (script_id, at, step, detail) VALUES (?, ?, ?, ?)")
        .bind(script_id.to_string())
        .bind(Utc::now().to_rfc3339())
        .bind(step)
        .bind(detail)
        .execute(connection)
        .await?;
    Ok(())
}
