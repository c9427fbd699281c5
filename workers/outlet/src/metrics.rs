//! The outlet node's own Prometheus metrics, beside the runtime's consumer series on the same
//! `/metrics`: writes by outcome, the reader's clerk state, seconds and APDUs per card, and
//! journal entries not yet reported.
//!
//! Every series carries the `outlet` label (one node serves one outlet; the label lets a fleet
//! be summed and compared) and is registered at zero when the node starts. The reader state is
//! read from the shared [`Status`] at every scrape, so the card code needs no hook for it; the
//! journal is counted every few seconds by [`watch_journal`]. The node's handler calls
//! [`OutletMetrics::write_finished`] once per decided write and nothing else.
//! Nothing here ever sees a script, a key or a card's answer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use simflow_runtime::shutdown::CancellationToken;
use simflow_schemas::writecard::{CardWriteState, WriteOutcome};

use crate::journal::Journal;
use crate::status::{ClerkState, Status};

/// The `outcome` labels of `simflow_outlet_writes_total`: written and verified; failed with the
/// card untouched (still blank, e.g. the wrong card or an expired script); failed with the
/// card damaged (withdrawn by the centre).
pub const WRITE_OUTCOMES: [&str; 3] = ["written", "untouched", "damaged"];

/// The `state` labels of `simflow_outlet_reader_state`, one per clerk state.
pub const READER_STATES: [&str; 7] = [
    "idle",
    "waiting_for_card",
    "reading",
    "writing",
    "reinsert_same_card",
    "done",
    "error",
];

/// How often [`watch_journal`] counts unreported entries.
const JOURNAL_EVERY: Duration = Duration::from_secs(5);

/// The label of a clerk state.
pub fn state_label(state: &ClerkState) -> &'static str {
    state.kind()
}

/// The label of a write's outcome.
pub fn outcome_label(outcome: &WriteOutcome) -> &'static str {
    match outcome {
        WriteOutcome::Written { .. } => "written",
        WriteOutcome::Failed {
            card_state: CardWriteState::Untouched,
            ..
        } => "untouched",
        WriteOutcome::Failed {
            card_state: CardWriteState::Damaged,
            ..
        } => "damaged",
    }
}

/// The outlet metrics of one registry (one node, or many outlets in a measurement).
#[derive(Debug, Clone)]
pub struct OutletMetrics {
    writes: IntCounterVec,
    write_seconds: HistogramVec,
    write_apdus: HistogramVec,
    journal_pending: IntGaugeVec,
    readers: ReaderStates,
}

/// `simflow_outlet_reader_state{outlet,state}`, computed from each outlet's status at scrape.
#[derive(Debug, Clone)]
struct ReaderStates {
    gauges: IntGaugeVec,
    followed: Arc<Mutex<Vec<(String, Status)>>>,
}

impl Collector for ReaderStates {
    fn desc(&self) -> Vec<&Desc> {
        self.gauges.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let followed = self
            .followed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (outlet, status) in followed.iter() {
            let current = state_label(&status.get());
            for state in READER_STATES {
                self.gauges
                    .with_label_values(&[outlet.as_str(), state])
                    .set(i64::from(state == current));
            }
        }
        self.gauges.collect()
    }
}

impl OutletMetrics {
    /// Creates the outlet metrics and registers them in `registry` (a process's runtime
    /// registry, so they are served on its `/metrics`).
    pub fn register(registry: &Registry) -> prometheus::Result<OutletMetrics> {
        let outlet = ["outlet"];
        let metrics = OutletMetrics {
            writes: IntCounterVec::new(
                Opts::new(
                    "simflow_outlet_writes_total",
                    "Card writes decided by the outlet node, by outcome (written, untouched, damaged).",
                ),
                &["outlet", "outcome"],
            )?,
            write_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "simflow_outlet_write_seconds",
                    "Seconds from taking a write script to its decided result, waiting for the card included.",
                )
                .buckets(vec![1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0]),
                &outlet,
            )?,
            write_apdus: HistogramVec::new(
                HistogramOpts::new(
                    "simflow_outlet_write_apdus",
                    "APDUs sent for one written card.",
                )
                .buckets(vec![30.0, 40.0, 50.0, 60.0, 80.0, 100.0, 150.0]),
                &outlet,
            )?,
            journal_pending: IntGaugeVec::new(
                Opts::new(
                    "simflow_outlet_journal_pending",
                    "Journal entries whose write started or finished but was not yet reported to the centre.",
                ),
                &outlet,
            )?,
            readers: ReaderStates {
                gauges: IntGaugeVec::new(
                    Opts::new(
                        "simflow_outlet_reader_state",
                        "1 for the reader's current clerk state, 0 for the others.",
                    ),
                    &["outlet", "state"],
                )?,
                followed: Arc::default(),
            },
        };
        registry.register(Box::new(metrics.writes.clone()))?;
        registry.register(Box::new(metrics.write_seconds.clone()))?;
        registry.register(Box::new(metrics.write_apdus.clone()))?;
        registry.register(Box::new(metrics.journal_pending.clone()))?;
        registry.register(Box::new(metrics.readers.clone()))?;
        Ok(metrics)
    }

    /// Outlet metrics in a registry of their own (a node built without a served registry).
    pub fn detached() -> OutletMetrics {
        OutletMetrics::register(&Registry::new()).expect("a fresh registry takes every metric")
    }

    /// Registers every series of `outlet` at zero and follows its reader state.
    pub fn add_outlet(&self, outlet: &str, status: &Status) {
        for outcome in WRITE_OUTCOMES {
            self.writes.with_label_values(&[outlet, outcome]);
        }
        self.write_seconds.with_label_values(&[outlet]);
        self.write_apdus.with_label_values(&[outlet]);
        self.journal_pending.with_label_values(&[outlet]).set(0);
        self.readers
            .followed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((outlet.to_owned(), status.clone()));
    }

    /// Records one decided write: its outcome, how long it took, and (written cards) its APDUs.
    pub fn write_finished(&self, outlet: &str, outcome: &WriteOutcome, took: Duration) {
        self.writes
            .with_label_values(&[outlet, outcome_label(outcome)])
            .inc();
        self.write_seconds
            .with_label_values(&[outlet])
            .observe(took.as_secs_f64());
        if let WriteOutcome::Written { apdu_count, .. } = outcome {
            self.write_apdus
                .with_label_values(&[outlet])
                .observe(f64::from(*apdu_count));
        }
    }

    /// Sets the number of journal entries not yet reported.
    pub fn set_journal_pending(&self, outlet: &str, pending: usize) {
        self.journal_pending
            .with_label_values(&[outlet])
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }
}

/// Counts the journal's unreported entries every few seconds until `shutdown`.
pub fn watch_journal(
    metrics: OutletMetrics,
    outlet: String,
    journal: Journal,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match journal.unreported().await {
                Ok(pending) => metrics.set_journal_pending(&outlet, pending.len()),
                Err(error) => {
                    tracing::warn!(%error, "cannot count the journal's unreported entries")
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(JOURNAL_EVERY) => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(registry: &Registry) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .expect("text")
    }

    #[test]
    fn every_outlet_series_exists_at_zero_once_the_outlet_is_added() {
        let registry = Registry::new();
        let metrics = OutletMetrics::register(&registry).expect("registered");
        let status = Status::new(Default::default(), false);
        metrics.add_outlet("HX01", &status);
        let text = render(&registry);
        for outcome in WRITE_OUTCOMES {
            assert!(
                text.contains(&format!(
                    "simflow_outlet_writes_total{{outcome=\"{outcome}\",outlet=\"HX01\"}} 0"
                )),
                "{text}"
            );
        }
        assert!(text.contains("simflow_outlet_journal_pending{outlet=\"HX01\"} 0"));
        assert!(text.contains("simflow_outlet_write_seconds_count{outlet=\"HX01\"} 0"));
        assert!(text.contains("simflow_outlet_reader_state{outlet=\"HX01\",state=\"idle\"} 1"));
        assert!(text.contains("simflow_outlet_reader_state{outlet=\"HX01\",state=\"writing\"} 0"));
    }

    #[test]
    fn the_reader_state_follows_the_clerk_state_at_each_scrape() {
        let registry = Registry::new();
        let metrics = OutletMetrics::register(&registry).expect("registered");
        let status = Status::new(Default::default(), false);
        metrics.add_outlet("HX01", &status);
        status.set(ClerkState::Writing {
            iccid: "8986011000000000001".into(),
        });
        let text = render(&registry);
        assert!(text.contains("simflow_outlet_reader_state{outlet=\"HX01\",state=\"writing\"} 1"));
        assert!(text.contains("simflow_outlet_reader_state{outlet=\"HX01\",state=\"idle\"} 0"));
        assert!(!text.contains("8986011000000000001"), "no ICCID in a label");
    }

    #[test]
    fn a_written_card_counts_its_outcome_time_and_apdus_and_a_damaged_one_no_apdus() {
        let registry = Registry::new();
        let metrics = OutletMetrics::register(&registry).expect("registered");
        metrics.add_outlet("HX01", &Status::new(Default::default(), false));
        let written = WriteOutcome::Written {
            auth_answer: "00".into(),
            apdu_count: 52,
        };
        metrics.write_finished("HX01", &written, Duration::from_secs(3));
        let damaged = WriteOutcome::Failed {
            card_state: CardWriteState::Damaged,
            reason: simflow_schemas::ClerkMessage::new("CARD_DAMAGED", "请更换白卡！", "x"),
        };
        metrics.write_finished("HX01", &damaged, Duration::from_secs(1));
        let text = render(&registry);
        assert!(
            text.contains("simflow_outlet_writes_total{outcome=\"written\",outlet=\"HX01\"} 1")
        );
        assert!(
            text.contains("simflow_outlet_writes_total{outcome=\"damaged\",outlet=\"HX01\"} 1")
        );
        assert!(text.contains("simflow_outlet_write_apdus_count{outlet=\"HX01\"} 1"));
        assert!(text.contains("simflow_outlet_write_apdus_sum{outlet=\"HX01\"} 52"));
        assert!(text.contains("simflow_outlet_write_seconds_count{outlet=\"HX01\"} 2"));
    }
}
