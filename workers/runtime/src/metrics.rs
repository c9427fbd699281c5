//! Prometheus metrics recorded by the runtime (never by handlers), and the health state that
//! `/healthz` reports.
//!
//! Labels are few and bounded: the worker name, the message type (unknown types count as
//! `unknown`), an outcome from a fixed set, and dead-letter reason codes.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};
use serde::Serialize;

/// The runtime's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// `simflow_jobs_total{worker,type,outcome}`; outcome is committed, rejected,
    /// dead_lettered, retried or duplicate.
    pub jobs: IntCounterVec,
    /// `simflow_job_handling_seconds{worker}` from delivery to settle.
    pub handling_seconds: HistogramVec,
    /// `simflow_batch_jobs{worker}`: jobs per committed transaction (group commit).
    pub batch_jobs: HistogramVec,
    /// `simflow_job_retries_total{worker}`: jobs sent to a retry queue.
    pub retries: IntCounterVec,
    /// `simflow_dead_letters_total{worker,reason}`.
    pub dead_letters: IntCounterVec,
    /// `simflow_inbox_hits_total{worker}`: duplicates answered from the inbox.
    pub inbox_hits: IntCounterVec,
    /// `simflow_last_job_timestamp_seconds{worker}`: when a job was last settled, so a
    /// silently stalled consumer shows.
    pub last_job: GaugeVec,
    /// `simflow_broker_connected{worker}`: 1 while consuming.
    pub connected: IntGaugeVec,
    /// `simflow_broker_reconnects_total{worker}`.
    pub reconnects: IntCounterVec,
    /// `simflow_broker_blocked{worker}`: 1 while the broker blocks publishers (memory or disk
    /// alarm).
    pub broker_blocked: IntGaugeVec,
}

impl Metrics {
    /// Creates the metrics in a fresh registry.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let jobs = IntCounterVec::new(
            Opts::new(
                "simflow_jobs_total",
                "Jobs settled, by worker, message type and outcome.",
            ),
            &["worker", "type", "outcome"],
        )
        .expect("valid metric");
        let handling_seconds = HistogramVec::new(
            HistogramOpts::new(
                "simflow_job_handling_seconds",
                "Seconds from delivery to settle.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["worker"],
        )
        .expect("valid metric");
        let batch_jobs = HistogramVec::new(
            HistogramOpts::new(
                "simflow_batch_jobs",
                "Jobs per committed transaction (group commit).",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
            &["worker"],
        )
        .expect("valid metric");
        let retries = IntCounterVec::new(
            Opts::new(
                "simflow_job_retries_total",
                "Jobs sent to a retry queue after a transient failure.",
            ),
            &["worker"],
        )
        .expect("valid metric");
        let dead_letters = IntCounterVec::new(
            Opts::new(
                "simflow_dead_letters_total",
                "Jobs dead-lettered by the worker, by reason code.",
            ),
            &["worker", "reason"],
        )
        .expect("valid metric");
        let inbox_hits = IntCounterVec::new(
            Opts::new(
                "simflow_inbox_hits_total",
                "Redelivered or duplicate jobs answered from the inbox.",
            ),
            &["worker"],
        )
        .expect("valid metric");
        let last_job = GaugeVec::new(
            Opts::new(
                "simflow_last_job_timestamp_seconds",
                "Unix time the worker last settled a job.",
            ),
            &["worker"],
        )
        .expect("valid metric");
        let connected = IntGaugeVec::new(
            Opts::new(
                "simflow_broker_connected",
                "1 while the worker is connected and consuming.",
            ),
            &["worker"],
        )
        .expect("valid metric");
        let reconnects = IntCounterVec::new(
            Opts::new(
                "simflow_broker_reconnects_total",
                "Broker connections the worker had to re-establish.",
            ),
            &["worker"],
        )
        .expect("valid metric");
        let broker_blocked = IntGaugeVec::new(
            Opts::new(
                "simflow_broker_blocked",
                "1 while the broker blocks the worker's publishes (memory or disk alarm).",
            ),
            &["worker"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(jobs.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(handling_seconds.clone()),
            Box::new(batch_jobs.clone()),
            Box::new(retries.clone()),
            Box::new(dead_letters.clone()),
            Box::new(inbox_hits.clone()),
            Box::new(last_job.clone()),
            Box::new(connected.clone()),
            Box::new(reconnects.clone()),
            Box::new(broker_blocked.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Metrics {
            registry,
            jobs,
            handling_seconds,
            batch_jobs,
            retries,
            dead_letters,
            inbox_hits,
            last_job,
            connected,
            reconnects,
            broker_blocked,
        }
    }

    /// The registry, for components that add their own metrics (the outlet node).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Jobs settled so far, all workers, types and outcomes together.
    pub fn jobs_settled(&self) -> u64 {
        self.registry
            .gather()
            .iter()
            .filter(|family| family.name() == "simflow_jobs_total")
            .flat_map(|family| family.get_metric().iter())
            .map(|metric| metric.get_counter().get_value() as u64)
            .sum()
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let encoder = prometheus::TextEncoder::new();
        encoder
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|error| format!("# encoding failed: {error}\n"))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// One component's health.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentHealth {
    /// Connected to what it needs and working.
    pub healthy: bool,
    /// A short state for humans (`consuming`, `connecting`, `waiting for card`, …).
    pub state: String,
    /// When it last settled a job.
    pub last_job_at: Option<DateTime<Utc>>,
}

/// The health of every component of a process, shared with `/healthz`.
#[derive(Debug, Clone, Default)]
pub struct Health {
    components: Arc<RwLock<BTreeMap<String, ComponentHealth>>>,
}

impl Health {
    /// Sets a component's state.
    pub fn set(&self, component: &str, healthy: bool, state: &str) {
        let mut components = self
            .components
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = components
            .entry(component.to_owned())
            .or_insert(ComponentHealth {
                healthy,
                state: state.to_owned(),
                last_job_at: None,
            });
        entry.healthy = healthy;
        state.clone_into(&mut entry.state);
    }

    /// Notes that a component settled a job.
    pub fn job_settled(&self, component: &str) {
        let mut components = self
            .components
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(entry) = components.get_mut(component) {
            entry.last_job_at = Some(Utc::now());
        }
    }

    /// A copy of every component's health.
    pub fn snapshot(&self) -> BTreeMap<String, ComponentHealth> {
        self.components
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// True when every component is healthy (and there is at least one).
    pub fn is_healthy(&self) -> bool {
        let components = self.snapshot();
        !components.is_empty() && components.values().all(|component| component.healthy)
    }
}
