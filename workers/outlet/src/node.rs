//! [`OutletNode`]: the handler of one outlet's queue. It answers read requests with what the
//! card says and write scripts with what happened to the card, journalling every step.
//!
//! Per write script, in order:
//! 1. the journal already has a result → the same result again (a redelivery or a duplicate);
//! 2. the script is checked: for this outlet, sealed to this node's key, opens, names the card
//!    it says; anything else is rejected and the broker dead-letters it to the central side;
//! 3. a script past `not_after` that never started is answered as expired, the card untouched;
//! 4. the card is written (see [`crate::card`]); if the journal says an earlier run started
//!    writing, the card is read first and that decides (resume, written, or damaged);
//! 5. the result is stored in the journal, then published; a crash between the two publishes
//!    the stored result on redelivery, and the central side settles a script once.

use std::sync::Arc;

use chrono::Utc;
use simflow_card::profile::Script;
use simflow_runtime::outlet::{OutletAnswer, OutletDecision, OutletHandler, OutletWork};
use simflow_runtime::shutdown::CancellationToken;
use simflow_schemas::card::{CardReadRequest, OutletCardRead};
use simflow_schemas::common::ClerkMessage;
use simflow_schemas::outlet::OutletHeartbeat;
use simflow_schemas::registry::OutletWorkJob;
use simflow_schemas::writecard::{CardWriteState, WriteOutcome, WriteResult, WriteScriptEnvelope};
use simflow_schemas::writers::{OutletReaderReport, ReaderIdentity, SerialSource};
use simflow_seal::OutletKeyPair;
use zeroize::Zeroizing;

use crate::card::{self, CardWork, Interrupted};
use crate::journal::{Journal, ScriptState};
use crate::keys::{KeyError, KeyRing};
use crate::metrics::OutletMetrics;
use crate::status::ClerkState;

/// One outlet's writer node.
pub struct OutletNode {
    outlet_code: String,
    keys: KeyRing,
    journal: Journal,
    work: CardWork,
    metrics: OutletMetrics,
    card_lock: CardLock,
    heartbeat_every: Option<std::time::Duration>,
    configured_serial: Option<String>,
}

/// Held by whoever uses the card: the queue's work, or a read the counter page asked for.
pub type CardLock = Arc<tokio::sync::Mutex<()>>;

impl std::fmt::Debug for OutletNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutletNode")
            .field("outlet_code", &self.outlet_code)
            .field("keys", &self.keys)
            .field("reader", &self.work.reader)
            .finish()
    }
}

/// The clerk's message for a script that expired before the writer took it.
fn expired() -> ClerkMessage {
    ClerkMessage::new(
        "SCRIPT_EXPIRED",
        "写卡超时，请重新读卡写卡",
        "The write script expired before the writer took it; read and write the card again",
    )
}

/// The clerk's message for a script sealed to a key the node retired after a rotation.
fn key_retired() -> ClerkMessage {
    ClerkMessage::new(
        "SCRIPT_KEY_RETIRED",
        "写卡脚本已失效（写卡器密钥已更换），请重新写卡",
        "The write script was sealed to the writer's retired key; write the card again",
    )
}

/// Why a script is not opened.
enum Refusal {
    /// No outlet can take it: the broker dead-letters it to the central side.
    Reject(String),
    /// Sealed to this node's key before its last rotation, after the grace: answered as a
    /// failed write so the clerk and the centre hear why.
    Retired(String),
}

impl OutletNode {
    /// A node for `outlet_code` with its key pair, journal and reader.
    pub fn new(
        outlet_code: &str,
        keys: OutletKeyPair,
        journal: Journal,
        work: CardWork,
    ) -> OutletNode {
        OutletNode {
            outlet_code: outlet_code.to_owned(),
            keys: KeyRing::fixed(keys),
            journal,
            work,
            metrics: OutletMetrics::detached(),
            card_lock: CardLock::default(),
            heartbeat_every: None,
            configured_serial: None,
        }
    }

    /// Opens scripts with the key ring kept in the key files (rotations seen while running).
    pub fn with_key_ring(mut self, keys: KeyRing) -> OutletNode {
        self.keys = keys;
        self
    }

    /// Says it is alive to the centre every `every` (`outlet.heartbeat.v1`).
    pub fn with_heartbeat(mut self, every: std::time::Duration) -> OutletNode {
        self.heartbeat_every = Some(every);
        self
    }

    /// The writer serial to report for this node's reader when its driver reports none
    /// (`[outlet.reader_serials]`).
    pub fn with_configured_serial(mut self, serial: Option<String>) -> OutletNode {
        self.configured_serial = serial.filter(|serial| !serial.trim().is_empty());
        self
    }

    /// The reader's identity as PC/SC reports it (a direct connection, no card touched), with
    /// the configured serial where the driver reports none; `None` when the reader is not there.
    /// Callers hold the card lock.
    async fn reader_identity(&self) -> Option<ReaderIdentity> {
        let name = self.work.reader.clone();
        let attributes = {
            let name = name.clone();
            tokio::task::spawn_blocking(move || simflow_reader::reader_attributes(&name)).await
        };
        let attributes = match attributes {
            Ok(Ok(attributes)) => attributes,
            Ok(Err(
                simflow_reader::ReaderError::ReaderNotConnected { .. }
                | simflow_reader::ReaderError::DriverMissing { .. },
            )) => return None,
            Ok(Err(error)) => {
                // The reader is there but would not say more (e.g. busy): its name and the
                // configured serial still identify it.
                tracing::warn!(reader = %name, code = error.code(), "the reader's attributes could not be read");
                simflow_reader::ReaderAttributes::default()
            }
            Err(error) => {
                tracing::error!(%error, "reading the reader's attributes panicked");
                simflow_reader::ReaderAttributes::default()
            }
        };
        let (serial, serial_source) = match (attributes.serial, &self.configured_serial) {
            (Some(serial), _) => (Some(serial), Some(SerialSource::Driver)),
            (None, Some(configured)) => (Some(configured.clone()), Some(SerialSource::Configured)),
            (None, None) => (None, None),
        };
        Some(ReaderIdentity {
            name,
            vendor: attributes.vendor,
            ifd_type: attributes.ifd_type,
            serial,
            serial_source,
        })
    }

    /// Records this node's writes in `metrics` (served on the node's `/metrics`).
    pub fn with_metrics(mut self, metrics: OutletMetrics) -> OutletNode {
        self.metrics = metrics;
        self
    }

    /// The lock on the card, for local reads that must not run during a job.
    pub fn card_lock(&self) -> CardLock {
        Arc::clone(&self.card_lock)
    }

    /// The journal (for tools and tests).
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    async fn read(&self, request: CardReadRequest, shutdown: CancellationToken) -> OutletDecision {
        if request.outlet_code != self.outlet_code {
            return OutletDecision::Reject {
                reason: format!("read request for outlet {}", request.outlet_code),
            };
        }
        let _card = self.card_lock.lock().await;
        let work = self.work.clone();
        let outcome = tokio::task::spawn_blocking(move || card::read_card(&work, &shutdown)).await;
        match outcome {
            Ok(Ok(outcome)) => {
                self.work.status.set(card::read_state(&outcome));
                OutletDecision::Answer(vec![OutletAnswer::of(&OutletCardRead {
                    request_id: request.request_id,
                    outlet_code: self.outlet_code.clone(),
                    outcome,
                })])
            }
            Ok(Err(_)) => OutletDecision::LeaveForRedelivery,
            Err(error) => {
                tracing::error!(%error, "the card read panicked");
                OutletDecision::LeaveForRedelivery
            }
        }
    }

    fn open(&self, envelope: &WriteScriptEnvelope) -> Result<Script, Refusal> {
        if envelope.outlet_code != self.outlet_code {
            return Err(Refusal::Reject(format!(
                "script for outlet {} reached outlet {}",
                envelope.outlet_code, self.outlet_code
            )));
        }
        let plaintext = match self
            .keys
            .open(&envelope.sealed_for, &envelope.sealed_script)
        {
            Ok(plaintext) => plaintext,
            Err(error @ KeyError::Retired(_)) => return Err(Refusal::Retired(error.to_string())),
            Err(error) => return Err(Refusal::Reject(error.to_string())),
        };
        let script: Script = serde_json::from_slice(&plaintext).map_err(|error| {
            Refusal::Reject(format!("the opened script is not a script: {error}"))
        })?;
        // The plaintext (with ADM and keys) is wiped when it drops; the parsed script's key
        // bytes live only as long as this write.
        drop(Zeroizing::new(plaintext));
        if script.iccid != envelope.iccid {
            return Err(Refusal::Reject(format!(
                "the script inside is for card {}, the envelope says {}",
                script.iccid, envelope.iccid
            )));
        }
        Ok(script)
    }

    async fn write(
        &self,
        message_id: &str,
        envelope: WriteScriptEnvelope,
        shutdown: CancellationToken,
    ) -> OutletDecision {
        let _card = self.card_lock.lock().await;
        let script_id = envelope.script_id;
        let started = std::time::Instant::now();
        let entry = match self.journal.get(script_id).await {
            Ok(entry) => entry,
            Err(error) => return self.journal_failed(error.to_string()).await,
        };
        if let Some(result) = entry.as_ref().and_then(|entry| entry.result.clone()) {
            tracing::info!(%script_id, "script already done; answering with the stored result");
            let _ = self
                .journal
                .advance(
                    script_id,
                    ScriptState::Reported,
                    "answered again (redelivery)",
                )
                .await;
            return OutletDecision::Answer(vec![OutletAnswer::of(&result)]);
        }
        let recovering = entry
            .as_ref()
            .is_some_and(|entry| entry.state == ScriptState::Writing);
        let script = match self.open(&envelope) {
            Ok(script) => Some(script),
            Err(Refusal::Retired(reason)) => {
                tracing::warn!(%script_id, reason, "write script sealed to a retired key");
                None
            }
            Err(Refusal::Reject(reason)) => {
                tracing::error!(%script_id, reason, "write script refused");
                return OutletDecision::Reject { reason };
            }
        };
        let msisdn = script.as_ref().and_then(Script::msisdn);
        if let Err(error) = self
            .journal
            .received(&envelope, message_id, msisdn.as_deref())
            .await
        {
            return self.journal_failed(error.to_string()).await;
        }
        let outcome = match script {
            // Sealed to a retired key: the card is untouched, unless an earlier run of this
            // very script started writing it and it cannot be finished now (then it is
            // withdrawn, as after any interrupted write that cannot be completed).
            None => WriteOutcome::Failed {
                card_state: if recovering {
                    CardWriteState::Damaged
                } else {
                    CardWriteState::Untouched
                },
                reason: key_retired(),
            },
            Some(_) if !recovering && Utc::now() > envelope.not_after => {
                tracing::warn!(%script_id, not_after = %envelope.not_after, "write script expired before it started");
                WriteOutcome::Failed {
                    card_state: CardWriteState::Untouched,
                    reason: expired(),
                }
            }
            Some(script) => {
                if recovering {
                    tracing::warn!(%script_id, iccid = %envelope.iccid, "an earlier run of this script was interrupted; reading the card first");
                    let _ = self
                        .journal
                        .step(script_id, "recovering", "reading the card to decide")
                        .await;
                }
                match self
                    .run_write(script_id, script, recovering, shutdown)
                    .await
                {
                    Ok(outcome) => outcome,
                    Err(Interrupted::Shutdown) => {
                        self.work.status.set(ClerkState::Idle);
                        return OutletDecision::LeaveForRedelivery;
                    }
                    Err(Interrupted::Journal(error)) => return self.journal_failed(error).await,
                }
            }
        };
        let result = WriteResult {
            script_id,
            order_id: envelope.order_id,
            outlet_code: self.outlet_code.clone(),
            iccid: envelope.iccid.clone(),
            outcome,
            reader: self.reader_identity().await,
        };
        self.metrics
            .write_finished(&self.outlet_code, &result.outcome, started.elapsed());
        let result = match self.journal.finish(&result).await {
            Ok(stored) => stored,
            Err(error) => {
                // The card is done but the journal cannot say so: answer anyway (the central
                // side settles a script once), and make ops look at the node.
                tracing::error!(%error, %script_id, "the result could not be journalled");
                result
            }
        };
        self.work.status.set(match &result.outcome {
            WriteOutcome::Written { .. } => ClerkState::Done {
                summary_zh: format!("写卡成功 {}，请取出卡片", result.iccid),
                summary_en: format!("card {} written, remove it", result.iccid),
            },
            WriteOutcome::Failed { reason, .. } => ClerkState::error(reason),
        });
        let _ = self
            .journal
            .advance(
                script_id,
                ScriptState::Reported,
                "answer handed to the broker",
            )
            .await;
        OutletDecision::Answer(vec![OutletAnswer::of(&result)])
    }

    async fn run_write(
        &self,
        script_id: uuid::Uuid,
        script: Script,
        recovering: bool,
        shutdown: CancellationToken,
    ) -> Result<WriteOutcome, Interrupted> {
        let work = self.work.clone();
        let journal = self.journal.clone();
        let runtime = tokio::runtime::Handle::current();
        let task = tokio::task::spawn_blocking(move || {
            let mut mark_writing = || {
                runtime
                    .block_on(journal.advance(
                        script_id,
                        ScriptState::Writing,
                        "card checked; writing starts",
                    ))
                    .map_err(|error| error.to_string())
            };
            let outcome =
                card::write_card(&work, &script, recovering, &shutdown, &mut mark_writing);
            drop(script);
            outcome
        });
        match task.await {
            Ok(outcome) => outcome,
            Err(error) => {
                tracing::error!(%error, "the card write panicked");
                Ok(WriteOutcome::Failed {
                    card_state: CardWriteState::Damaged,
                    reason: ClerkMessage::new(
                        "WRITER_FAILED",
                        "请更换白卡！",
                        "Please use another blank card (the writer failed during the write).",
                    ),
                })
            }
        }
    }

    async fn journal_failed(&self, error: String) -> OutletDecision {
        tracing::error!(
            error,
            "the journal failed; the work waits for the node to be fixed"
        );
        self.work.status.set(ClerkState::error(&ClerkMessage::new(
            "JOURNAL_FAILED",
            "写卡器日志不可用，请联系运维",
            "The writer's journal is not usable; call ops",
        )));
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        OutletDecision::LeaveForRedelivery
    }
}

impl OutletHandler for OutletNode {
    fn heartbeat_every(&self) -> Option<std::time::Duration> {
        self.heartbeat_every
    }

    /// Also the moment a previous key whose grace has ended is deleted.
    fn heartbeat(&self) -> Option<OutletAnswer> {
        self.keys.refresh();
        Some(OutletAnswer::of(&OutletHeartbeat {
            outlet_code: self.outlet_code.clone(),
            node_version: env!("CARGO_PKG_VERSION").to_owned(),
            key_fingerprint: Some(self.keys.fingerprint()),
            sent_at: Utc::now(),
        }))
    }

    async fn handle(&self, work: OutletWork, shutdown: CancellationToken) -> OutletDecision {
        match work.job {
            OutletWorkJob::ReadRequest(request) => self.read(request, shutdown).await,
            OutletWorkJob::WriteScript(envelope) => {
                self.write(&work.message_id, envelope, shutdown).await
            }
        }
    }

    /// The reader's identity, reported at every connect so the centre can check it against the
    /// writer ledger before it sends work (`outlet.reader_report.v1`).
    async fn connected(&self) -> Option<(String, Vec<OutletAnswer>)> {
        let _card = self.card_lock.lock().await;
        let report = OutletReaderReport {
            report_id: uuid::Uuid::new_v4(),
            outlet_code: self.outlet_code.clone(),
            reader: self.reader_identity().await,
        };
        tracing::info!(serial = ?report.reader.as_ref().and_then(|reader| reader.serial.as_deref()), "reporting the reader");
        Some((
            report.report_id.to_string(),
            vec![OutletAnswer::of(&report)],
        ))
    }

    /// Writes the journal says started (or finished) but never reported: the node was stopped
    /// mid-write. Its script may come back from the broker, or may have expired there while the
    /// node was down; either way the card is read now and the outcome reported once (a later
    /// redelivery gets the stored result).
    async fn recover(&self, shutdown: CancellationToken) -> Vec<(String, Vec<OutletAnswer>)> {
        let unreported = match self.journal.unreported().await {
            Ok(unreported) => unreported,
            Err(error) => {
                tracing::error!(%error, "cannot read the journal for unfinished writes");
                return Vec::new();
            }
        };
        let mut answers = Vec::new();
        for (message_id, envelope) in unreported {
            tracing::warn!(script_id = %envelope.script_id, iccid = %envelope.iccid, "finishing a write interrupted before the last stop");
            match self.write(&message_id, envelope, shutdown.clone()).await {
                OutletDecision::Answer(answer) => answers.push((message_id, answer)),
                OutletDecision::Reject { reason } => {
                    tracing::error!(reason, "an interrupted write cannot be finished");
                }
                OutletDecision::LeaveForRedelivery => {}
            }
        }
        answers
    }
}

/// A node behind an `Arc`, as the runtime wants it.
pub type SharedNode = Arc<OutletNode>;
