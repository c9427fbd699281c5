//! Prometheus metrics recorded by the runtime (never by handlers), and the health state that
//! `/healthz` reports.
//!
//! Labels are few and bounded: the worker name, the message type (unknown types count as
//! `unknown`), an outcome from a fixed set ([`OUTCOMES`]), dead-letter reason codes, and
//! health component names.
//! Every series a worker can produce is registered at zero when it starts
//! ([`Metrics::register_worker`]), so alerts can be written on series that have not moved yet
//! (`increase()` over a series that appears at its first increment misses that increment).
//!
//! Latency is measured three ways, per job type:
//! - queue wait (`simflow_job_queue_wait_seconds`): the AMQP `timestamp` property (set by the
//!   publisher, one-second resolution) to the delivery, for first deliveries only;
//! - handling (`simflow_job_handling_seconds`): delivery to settle, on the worker's clock;
//! - publish to outcome (`simflow_job_publish_to_outcome_seconds`): the AMQP `timestamp` to the
//!   outcome confirmed by the broker, retries included: what the publisher waits for.
//!
//! The AMQP timestamp counts whole seconds and the publisher's clock is not ours: a measurement
//! from it is the true time rounded up by less than one second (plus any clock skew). Its
//! buckets start at one second, so no bucket pretends to a resolution the timestamp lacks.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};
use serde::Serialize;

/// Every `outcome` label of `simflow_jobs_total`.
pub const OUTCOMES: [&str; 5] = [
    "committed",
    "rejected",
    "duplicate",
    "dead_lettered",
    "retried",
];

/// Buckets of the latencies measured from the AMQP timestamp (whole seconds).
const FROM_TIMESTAMP_BUCKETS: [f64; 12] = [
    1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 21600.0,
];

/// The runtime's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// `simflow_jobs_total{worker,type,outcome}`; outcome is one of [`OUTCOMES`].
    pub jobs: IntCounterVec,
    /// `simflow_job_handling_seconds{worker,type}` from delivery to settle.
    pub handling_seconds: HistogramVec,
    /// `simflow_job_queue_wait_seconds{worker,type}`: AMQP timestamp to delivery (first
    /// deliveries).
    pub queue_wait_seconds: HistogramVec,
    /// `simflow_job_publish_to_outcome_seconds{worker,type}`: AMQP timestamp to the outcome
    /// confirmed (committed, rejected, duplicate or dead-lettered; retries included).
    pub publish_to_outcome_seconds: HistogramVec,
    /// `simflow_batch_jobs{worker}`: jobs per committed transaction (group commit).
    pub batch_jobs: HistogramVec,
    /// `simflow_job_retries_total{worker}`: jobs sent to a retry queue.
    pub retries: IntCounterVec,
    /// `simflow_dead_letters_total{worker,reason}`.
    pub dead_letters: IntCounterVec,
    /// `simflow_inbox_hits_total{worker}`: duplicates answered from the inbox.
    pub inbox_hits: IntCounterVec,
    /// `simflow_last_job_timestamp_seconds{worker}`: when a job was last settled, or the
    /// worker's start, so a silently stalled consumer shows.
    pub last_job: GaugeVec,
    /// `simflow_broker_connected{worker}`: 1 while consuming.
    pub connected: IntGaugeVec,
    /// `simflow_broker_reconnects_total{worker}`.
    pub reconnects: IntCounterVec,
    /// `simflow_broker_blocked{worker}`: 1 while the broker blocks publishers (memory or disk
    /// alarm).
    pub broker_blocked: IntGaugeVec,
    /// `simflow_component_ready{component}`: 1 when the health component is ready (`database`,
    /// each worker, an outlet node's `reader`), set from the health state at every scrape.
    pub component_ready: IntGaugeVec,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn histogram(name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("valid metric")
}

impl Metrics {
    /// Creates the metrics in a fresh registry.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let worker_type = ["worker", "type"];
        let metrics = Metrics {
            jobs: counter(
                "simflow_jobs_total",
                "Jobs settled, by worker, message type and outcome.",
                &["worker", "type", "outcome"],
            ),
            handling_seconds: histogram(
                "simflow_job_handling_seconds",
                "Seconds from delivery to settle, by worker and message type.",
                &[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0,
                ],
                &worker_type,
            ),
            queue_wait_seconds: histogram(
                "simflow_job_queue_wait_seconds",
                "Seconds from the AMQP timestamp (whole seconds, the publisher's clock) to the first delivery.",
                &FROM_TIMESTAMP_BUCKETS,
                &worker_type,
            ),
            publish_to_outcome_seconds: histogram(
                "simflow_job_publish_to_outcome_seconds",
                "Seconds from the AMQP timestamp (whole seconds, the publisher's clock) to the outcome confirmed by the broker, retries included.",
                &FROM_TIMESTAMP_BUCKETS,
                &worker_type,
            ),
            batch_jobs: histogram(
                "simflow_batch_jobs",
                "Jobs per committed transaction (group commit).",
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
                &["worker"],
            ),
            retries: counter(
                "simflow_job_retries_total",
                "Jobs sent to a retry queue after a transient failure.",
                &["worker"],
            ),
            dead_letters: counter(
                "simflow_dead_letters_total",
                "Jobs dead-lettered by the worker, by reason code.",
                &["worker", "reason"],
            ),
            inbox_hits: counter(
                "simflow_inbox_hits_total",
                "Redelivered or duplicate jobs answered from the inbox.",
                &["worker"],
            ),
            last_job: GaugeVec::new(
                Opts::new(
                    "simflow_last_job_timestamp_seconds",
                    "Unix time the worker last settled a job, or the worker's start.",
                ),
                &["worker"],
            )
            .expect("valid metric"),
            connected: gauge(
                "simflow_broker_connected",
                "1 while the worker is connected and consuming.",
                &["worker"],
            ),
            reconnects: counter(
                "simflow_broker_reconnects_total",
                "Broker connections the worker had to re-establish.",
                &["worker"],
            ),
            broker_blocked: gauge(
                "simflow_broker_blocked",
                "1 while the broker blocks the worker's publishes (memory or disk alarm).",
                &["worker"],
            ),
            component_ready: gauge(
                "simflow_component_ready",
                "1 when the health component is ready (database, each worker, an outlet's reader).",
                &["component"],
            ),
            registry,
        };
        for collector in [
            Box::new(metrics.jobs.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.handling_seconds.clone()),
            Box::new(metrics.queue_wait_seconds.clone()),
            Box::new(metrics.publish_to_outcome_seconds.clone()),
            Box::new(metrics.batch_jobs.clone()),
            Box::new(metrics.retries.clone()),
            Box::new(metrics.dead_letters.clone()),
            Box::new(metrics.inbox_hits.clone()),
            Box::new(metrics.last_job.clone()),
            Box::new(metrics.connected.clone()),
            Box::new(metrics.reconnects.clone()),
            Box::new(metrics.broker_blocked.clone()),
            Box::new(metrics.component_ready.clone()),
        ] {
            metrics
                .registry
                .register(collector)
                .expect("metric names are unique");
        }
        metrics
    }

    /// Registers at zero every connection series of a consumer (central worker or outlet node)
    /// and sets its last-job time to now, so that alerts see it before anything happens.
    pub fn register_consumer(&self, component: &str) {
        let labels = [component];
        self.connected.with_label_values(&labels).set(0);
        self.broker_blocked.with_label_values(&labels).set(0);
        self.reconnects.with_label_values(&labels);
        let last = self.last_job.with_label_values(&labels);
        if last.get() == 0.0 {
            last.set(Utc::now().timestamp() as f64);
        }
    }

    /// Registers at zero every series a central worker can produce: jobs per type and outcome,
    /// latencies per type, retries, inbox hits, batches, and dead letters per reason (the
    /// runtime's and the ones its handler declares).
    pub fn register_worker(&self, worker: &str, types: &[&str], reasons: &[&str]) {
        self.register_consumer(worker);
        for message_type in types {
            for outcome in OUTCOMES {
                self.jobs
                    .with_label_values(&[worker, message_type, outcome]);
            }
            for histogram in [
                &self.handling_seconds,
                &self.queue_wait_seconds,
                &self.publish_to_outcome_seconds,
            ] {
                histogram.with_label_values(&[worker, message_type]);
            }
        }
        self.retries.with_label_values(&[worker]);
        self.inbox_hits.with_label_values(&[worker]);
        self.batch_jobs.with_label_values(&[worker]);
        for reason in crate::reasons::ALL
            .iter()
            .map(|reason| reason.code)
            .chain(reasons.iter().copied())
        {
            self.dead_letters.with_label_values(&[worker, reason]);
        }
    }

    /// Sets `simflow_component_ready` from the health state (called at every scrape).
    pub fn record_health(&self, health: &Health) {
        for (component, state) in health.snapshot() {
            self.component_ready
                .with_label_values(&[component.as_str()])
                .set(i64::from(state.healthy));
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
