//! The consume loop: one place that takes deliveries, decodes them, runs the handler in a
//! transaction with the inbox, and settles every delivery exactly once.
//!
//! Deliveries are gathered into batches (`batch.rs`): up to `worker.batch_size` jobs (and never
//! more than the prefetch or the handler's own limit) share one PostgreSQL transaction, each in
//! a savepoint of its own, and one commit. A batch leaves as soon as a batch slot is free
//! (`worker.batch_concurrency`) and nothing more is ready, or after `worker.batch_max_wait_ms`;
//! so a lone job never waits for company, and under load the batches grow by themselves.
//!
//! Settling (`settle.rs`), in order, so that a crash between any two steps leads to a
//! redelivery that the inbox answers: commit, publish every outcome of the batch with
//! confirms awaited together, then ack each delivery. The ways out for one job:
//! - committed / rejected / duplicate: publish the (stored) outcome, ack;
//! - needs ops, undecodable, unknown type: publish a copy with reason headers to the
//!   dead-letter exchange, publish `<kind>.failed`, ack;
//! - transient: a few quick tries in process (in a later batch of its own), then a copy to a
//!   TTL retry queue with the attempt count raised, ack; when the attempts are used up,
//!   dead-letter as `RETRIES_EXHAUSTED`;
//! - broker trouble while settling: leave the delivery unacked; the broker redelivers it.

mod batch;
mod envelope;
mod settle;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use simflow_schemas::registry::JobSet;
use simflow_schemas::topology::central_topology;
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::amqp::{self, Publisher};
use crate::handler::Handler;
use crate::metrics::{Health, Metrics};
use crate::retry;
use crate::session::{self, Ended, Reporting};
use crate::settings::Settings;

pub(crate) use batch::transact as transact_batch;
pub use batch::{BatchJob, Verdict, digest};
pub use settle::outgoing_message_id;

use envelope::Envelope;
use settle::{Settle, Settlement, Settler};

/// How often a worker that is not blocked publishes a readiness probe ([`Publisher::probe`]).
const BLOCKED_PROBE_EVERY: Duration = Duration::from_secs(5);

/// A consumer of one central queue, running one [`Handler`].
#[derive(Debug)]
pub struct Worker<H> {
    inner: Arc<Inner<H>>,
}

#[derive(Debug)]
struct Inner<H> {
    handler: H,
    settings: Arc<Settings>,
    /// The broker's nodes; a reconnect starts after the node the last connection used.
    addresses: crate::brokers::BrokerAddresses,
    pool: PgPool,
    metrics: Arc<Metrics>,
    health: Health,
}

struct Session {
    connection: Connection,
    channel: Channel,
    consumer: lapin::Consumer,
    publisher: Publisher,
}

/// A delivery and when it arrived.
struct Received {
    delivery: Delivery,
    at: Instant,
}

impl<H: Handler> Worker<H> {
    /// A worker for `handler` using the process's pool, metrics and health.
    pub fn new(
        handler: H,
        settings: Settings,
        pool: PgPool,
        metrics: Arc<Metrics>,
        health: Health,
    ) -> Worker<H> {
        Worker {
            inner: Arc::new(Inner {
                handler,
                addresses: settings.amqp.addresses(),
                settings: Arc::new(settings),
                pool,
                metrics,
                health,
            }),
        }
    }

    /// Consumes until `shutdown`, reconnecting with backoff whenever the broker goes away.
    /// On shutdown it stops consuming, lets in-flight jobs settle (up to the grace period) and
    /// returns.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        crate::fault::check();
        let name = self.inner.handler.name();
        let declared: Vec<&str> = self
            .inner
            .handler
            .dead_letter_reasons()
            .iter()
            .map(|reason| reason.code)
            .collect();
        self.inner
            .metrics
            .register_worker(name, <H::Job as JobSet>::TYPES, &declared);
        let reporting = Reporting {
            component: name,
            health: &self.inner.health,
            metrics: &self.inner.metrics,
            shutdown: &shutdown,
        };
        let never_final = |_: &lapin::Error| false;
        let result = session::run(
            reporting,
            never_final,
            || {
                let inner = Arc::clone(&self.inner);
                async move { inner.open_session().await }
            },
            |session| Arc::clone(&self.inner).consume(session, &shutdown),
        )
        .await;
        tracing::info!(worker = name, "stopped");
        result.map_err(|cause| anyhow::anyhow!("the broker refused worker {name}: {cause}"))
    }
}

impl<H: Handler> Inner<H> {
    fn name(&self) -> &'static str {
        self.handler.name()
    }

    /// The most deliveries one batch takes.
    fn batch_limit(&self) -> usize {
        let configured = self.settings.worker.batch_size.max(1);
        let handler = self.handler.batch_limit().unwrap_or(usize::MAX).max(1);
        configured
            .min(handler)
            .min(usize::from(self.settings.amqp.prefetch.max(1)))
    }

    async fn open_session(&self) -> Result<Session, lapin::Error> {
        let connection_name = format!("simflow-{}-{}", self.name(), std::process::id());
        let connection = self.addresses.connect(&connection_name).await?;
        let channel = connection.create_channel().await?;
        amqp::declare(
            &channel,
            &central_topology(&self.settings.topology_params()),
        )
        .await?;
        // Per-consumer prefetch: global QoS would close the connection on quorum queues.
        channel
            .basic_qos(
                self.settings.amqp.prefetch,
                BasicQosOptions { global: false },
            )
            .await?;
        let consumer = channel
            .basic_consume(
                H::QUEUE.queue_name().into(),
                connection_name.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let publisher = Publisher::open(&connection).await?;
        Ok(Session {
            connection,
            channel,
            consumer,
            publisher,
        })
    }

    async fn consume(self: Arc<Self>, session: Session, shutdown: &CancellationToken) -> Ended {
        let Session {
            connection,
            channel,
            mut consumer,
            publisher,
        } = session;
        let name = self.name();
        self.health.set(name, true, "consuming");
        tracing::info!(worker = name, queue = %H::QUEUE.queue_name(), "consuming");
        let settler = Settler {
            publisher,
            pool: self.pool.clone(),
            queue: H::QUEUE,
            worker: name,
            settings: Arc::clone(&self.settings),
            metrics: Arc::clone(&self.metrics),
            health: self.health.clone(),
        };
        let limit = self.batch_limit();
        let slots = self.settings.worker.batch_concurrency.max(1);
        let max_wait = Duration::from_millis(self.settings.worker.batch_max_wait_ms);
        let mut buffer: Vec<Received> = Vec::with_capacity(limit);
        let mut in_flight = JoinSet::new();
        // The broker blocks publishers on a memory or disk alarm: jobs would wait on their
        // outcomes' confirms, so the worker is not ready and says why.
        let mut broker_events = std::pin::pin!(connection.events_listener());
        // The broker says so only to connections that have published: probe now and then
        // while not blocked (at once, too), so an idle worker learns of an alarm.
        let mut probe = tokio::time::interval(BLOCKED_PROBE_EVERY);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut blocked = false;
        let ended = 'consuming: loop {
            // A batch leaves when it is full, or when a slot is free and it has waited long
            // enough (at once, by default).
            if !buffer.is_empty() && in_flight.len() < slots {
                let waited = buffer[0].at.elapsed();
                if buffer.len() >= limit || waited >= max_wait {
                    let batch = std::mem::replace(&mut buffer, Vec::with_capacity(limit));
                    let inner = Arc::clone(&self);
                    let settler = settler.clone();
                    in_flight.spawn(async move { inner.process(batch, &settler).await });
                    continue;
                }
            }
            let linger = match buffer.first() {
                Some(first) if in_flight.len() < slots => {
                    tokio::time::Instant::from_std(first.at + max_wait)
                }
                _ => tokio::time::Instant::now() + Duration::from_secs(3600),
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    // Stop taking work; deliveries buffered but not started go back to the
                    // queue when the channel closes.
                    let tag = consumer.tag();
                    if let Err(error) = channel.basic_cancel(tag, BasicCancelOptions::default()).await {
                        tracing::warn!(%error, "cancelling the consumer failed");
                    }
                    break Ended::Shutdown;
                }
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                _ = probe.tick(), if !blocked => {
                    if let Err(error) = settler.publisher.probe().await {
                        tracing::debug!(%error, "readiness probe not sent");
                    }
                }
                Some(event) = broker_events.next() => match event {
                    lapin::Event::ConnectionBlocked(reason) => {
                        blocked = true;
                        tracing::warn!(worker = name, reason, "the broker blocks publishers");
                        self.health.set(name, false, &format!("not ready: the broker is blocking publishers: {reason}"));
                        self.metrics.broker_blocked.with_label_values(&[name]).set(1);
                    }
                    lapin::Event::ConnectionUnblocked => {
                        blocked = false;
                        tracing::info!(worker = name, "the broker takes publishes again");
                        self.health.set(name, true, "consuming");
                        self.metrics.broker_blocked.with_label_values(&[name]).set(0);
                    }
                    _ => {}
                },
                () = tokio::time::sleep_until(linger) => {}
                next = consumer.next(), if buffer.len() < limit => {
                    let mut next = next;
                    // Take whatever else is ready now, up to a full batch.
                    loop {
                        match next {
                            Some(Ok(delivery)) => buffer.push(Received { delivery, at: Instant::now() }),
                            Some(Err(error)) => {
                                tracing::warn!(%error, "consumer error");
                                break 'consuming Ended::ConnectionLost;
                            }
                            None => break 'consuming Ended::ConnectionLost,
                        }
                        if buffer.len() >= limit {
                            break;
                        }
                        match consumer.next().now_or_never() {
                            Some(ready) => next = ready,
                            None => break,
                        }
                    }
                }
            }
        };
        drop(buffer);
        let grace = Duration::from_millis(self.settings.worker.shutdown_grace_ms);
        let drained = tokio::time::timeout(grace, async {
            while in_flight.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = in_flight.len(),
                "grace period over; unsettled jobs go back to the queue"
            );
            in_flight.abort_all();
        }
        if matches!(ended, Ended::Shutdown) {
            let _ = channel.close(200, "shutting down".into()).await;
            let _ = connection.close(200, "shutting down".into()).await;
        }
        ended
    }

    /// Handles and settles one batch of deliveries.
    async fn process(&self, batch: Vec<Received>, settler: &Settler) {
        let mut settlements = Vec::with_capacity(batch.len());
        let mut jobs = Vec::with_capacity(batch.len());
        let mut waiting = Vec::with_capacity(batch.len());
        for Received { delivery, at } in batch {
            let envelope = Envelope::read(&delivery);
            self.observe_queue_wait(&delivery, &envelope, at);
            match envelope::open::<H::Job>(
                &delivery,
                &envelope,
                self.settings.amqp.max_message_bytes,
            ) {
                Ok((context, job)) => {
                    let subject_id = context.subject_id.clone();
                    jobs.push(BatchJob {
                        context,
                        job,
                        body_digest: batch::digest(&delivery.data),
                    });
                    waiting.push((delivery, at, envelope, subject_id));
                }
                Err(refused) => settlements.push(Settlement {
                    delivery,
                    received_at: at,
                    envelope,
                    subject_id: None,
                    settle: Settle::DeadLetter {
                        reason: refused.reason,
                        detail: refused.detail,
                    },
                }),
            }
        }
        let verdicts = self.transact_with_tries(jobs).await;
        for ((delivery, at, envelope, subject_id), verdict) in waiting.into_iter().zip(verdicts) {
            let id_base = envelope.message_id.clone().unwrap_or_default();
            let settle = match verdict {
                Verdict::Committed(outcome) => Settle::Publish {
                    outcome,
                    id_base,
                    label: "committed",
                },
                Verdict::Rejected(outcome) => Settle::Publish {
                    outcome,
                    id_base,
                    label: "rejected",
                },
                Verdict::Duplicate(outcome) => {
                    self.metrics
                        .inbox_hits
                        .with_label_values(&[self.name()])
                        .inc();
                    Settle::Publish {
                        outcome,
                        id_base,
                        label: "duplicate",
                    }
                }
                Verdict::IdReused(outcome) => Settle::Publish {
                    outcome,
                    // Not the first body's ids: consumers deduplicating by id must see this.
                    id_base: format!(
                        "{id_base}/reused/{}",
                        hex::encode(batch::digest(&delivery.data))
                    ),
                    label: "rejected",
                },
                Verdict::NeedsOps(reason) => Settle::DeadLetter {
                    detail: reason.message_en.clone(),
                    reason,
                },
                Verdict::Transient(error) => Settle::Retry { error },
            };
            settlements.push(Settlement {
                delivery,
                received_at: at,
                envelope,
                subject_id,
                settle,
            });
        }
        settler.settle_all(settlements).await;
    }

    /// Records how long a first delivery waited in the queue: its AMQP timestamp (whole
    /// seconds) to when it arrived here. Retries and redeliveries are left out: their
    /// timestamp is the original publish, so their wait would count earlier tries.
    fn observe_queue_wait(&self, delivery: &Delivery, envelope: &Envelope, arrived: Instant) {
        if delivery.redelivered || envelope.attempt > 1 {
            return;
        }
        let Some(waited) = envelope.seconds_since_timestamp(arrived) else {
            return;
        };
        self.metrics
            .queue_wait_seconds
            .with_label_values(&[self.name(), envelope.type_label()])
            .observe(waited);
    }

    /// Runs the batch; jobs that failed transiently are tried again in process (in a batch of
    /// their own, after a short wait) before they go to a retry queue.
    async fn transact_with_tries(&self, jobs: Vec<BatchJob<H::Job>>) -> Vec<Verdict> {
        let mut verdicts: Vec<Option<Verdict>> = vec![None; jobs.len()];
        let mut waits = retry::in_process_waits(self.settings.worker.in_process_tries).into_iter();
        let mut remaining: Vec<usize> = (0..jobs.len()).collect();
        let mut first_round = true;
        while !remaining.is_empty() {
            // The first round shares one transaction; later rounds give each job its own, so a
            // job that breaks the whole transaction (not only its savepoint) cannot keep its
            // batch mates failing with it.
            let results = if first_round {
                let round = remaining.iter().map(|index| jobs[*index].clone()).collect();
                self.transact_once(round).await
            } else {
                let mut results = Vec::with_capacity(remaining.len());
                for index in &remaining {
                    results.extend(self.transact_once(vec![jobs[*index].clone()]).await);
                }
                results
            };
            first_round = false;
            let wait = if results
                .iter()
                .any(|verdict| matches!(verdict, Verdict::Transient(_)))
            {
                waits.next()
            } else {
                None
            };
            let mut again = Vec::new();
            for (index, verdict) in remaining.into_iter().zip(results) {
                match (&verdict, wait) {
                    (Verdict::Transient(error), Some(_)) => {
                        tracing::info!(
                            worker = self.name(),
                            error,
                            "transient failure; trying again in process"
                        );
                        again.push(index);
                    }
                    _ => verdicts[index] = Some(verdict),
                }
            }
            if let Some(wait) = wait {
                tokio::time::sleep(wait).await;
            }
            remaining = again;
        }
        verdicts
            .into_iter()
            .map(|verdict| verdict.unwrap_or_else(|| Verdict::Transient("not handled".to_owned())))
            .collect()
    }

    /// One transaction for the batch; a failure outside the handlers fails every job of it
    /// transiently. Before the commit nothing was committed; a failed commit (the primary died
    /// or was demoted under it) may or may not have committed, and the retry tells: the inbox
    /// answers a job that did with its stored outcome, and runs one that did not.
    async fn transact_once(&self, jobs: Vec<BatchJob<H::Job>>) -> Vec<Verdict> {
        let count = jobs.len();
        let all_transient = |error: sqlx::Error| {
            tracing::warn!(worker = self.name(), %error, jobs = count, "a batch failed; nothing of it was committed");
            vec![Verdict::Transient(format!("database: {error}")); count]
        };
        let mut transaction = match self.pool.begin().await {
            Ok(transaction) => transaction,
            Err(error) => return all_transient(error),
        };
        let verdicts = match batch::transact(&self.handler, &mut transaction, jobs).await {
            Ok(verdicts) => verdicts,
            Err(error) => {
                let _ = transaction.rollback().await;
                return all_transient(error);
            }
        };
        match transaction.commit().await {
            Ok(()) => {
                self.metrics
                    .batch_jobs
                    .with_label_values(&[self.name()])
                    .observe(count as f64);
                crate::fault::after_commit(count);
                verdicts
            }
            Err(error) => {
                tracing::warn!(worker = self.name(), %error, jobs = count, "a batch's commit failed; whether it committed is unknown until its retry asks the inbox");
                vec![Verdict::Transient(format!("database commit: {error}")); count]
            }
        }
    }
}
