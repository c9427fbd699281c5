//! The consume loop: one place that takes a delivery, decodes it, runs the handler in a
//! transaction with the inbox, and settles the delivery exactly once.
//!
//! Settling, in order, so that a crash between any two steps leads to a redelivery that the
//! inbox answers: commit, publish the outcome with confirms, then ack. The four ways out:
//! - committed / rejected / duplicate: publish the (stored) outcome, ack;
//! - needs ops, undecodable, unknown type: publish a copy with reason headers to the
//!   dead-letter exchange, publish `<kind>.failed`, ack;
//! - transient: a few quick tries in process, then a copy to a TTL retry queue with the attempt
//!   count raised, ack; when the attempts are used up, dead-letter as `RETRIES_EXHAUSTED`;
//! - broker trouble while settling: leave the delivery unacked; the broker redelivers it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};
use simflow_schemas::common::ClerkMessage;
use simflow_schemas::events::{JobFailed, JobRejected};
use simflow_schemas::registry::{DecodeError, Job, Message, MessageRole};
use simflow_schemas::topology::{
    DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE, central_topology, retry_name,
};
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::amqp::{self, PublishError, Publisher, text_value};
use crate::handler::{Handler, JobContext, JobError};
use crate::inbox;
use crate::metrics::{Health, Metrics};
use crate::outcome::{Outcome, Outgoing};
use crate::retry;
use crate::settings::Settings;

/// Namespace of the deterministic ids of outgoing messages.
const OUTGOING_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x5f1e_7a2c_9b3d_4e8f_a1b2_c3d4_e5f6_0718);

/// The id of the `index`-th message a job publishes: the same on every republish.
pub fn outgoing_message_id(job_message_id: &str, index: usize) -> String {
    uuid::Uuid::new_v5(
        &OUTGOING_ID_NAMESPACE,
        format!("{job_message_id}/{index}").as_bytes(),
    )
    .to_string()
}

/// A consumer of one central queue, running one [`Handler`].
#[derive(Debug)]
pub struct Worker<H> {
    inner: Arc<Inner<H>>,
}

#[derive(Debug)]
struct Inner<H> {
    handler: H,
    settings: Settings,
    pool: PgPool,
    metrics: Arc<Metrics>,
    health: Health,
}

/// Why the consume loop ended.
enum Ended {
    Shutdown,
    ConnectionLost,
}

struct Session {
    connection: Connection,
    channel: Channel,
    consumer: lapin::Consumer,
    publisher: Publisher,
}

/// How the transaction ended.
enum Handled {
    Committed(Outcome),
    Rejected(Outcome),
    Duplicate(Outcome),
}

/// What to do with the delivery.
enum Settle {
    Publish {
        outcome: Outcome,
        label: &'static str,
    },
    Retry {
        error: String,
    },
    DeadLetter {
        reason: ClerkMessage,
        detail: String,
    },
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
                settings,
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
        let name = self.inner.handler.name();
        let mut connected_before = false;
        loop {
            self.inner
                .health
                .set(name, false, "connecting to the broker");
            let inner = Arc::clone(&self.inner);
            let Some(session) = retry::until_connected("the broker", &shutdown, || {
                let inner = Arc::clone(&inner);
                async move { inner.open_session().await }
            })
            .await
            else {
                break;
            };
            if connected_before {
                self.inner
                    .metrics
                    .reconnects
                    .with_label_values(&[name])
                    .inc();
            }
            connected_before = true;
            self.inner.health.set(name, true, "consuming");
            self.inner
                .metrics
                .connected
                .with_label_values(&[name])
                .set(1);
            tracing::info!(worker = name, queue = %self.inner.handler.queue().queue_name(), "consuming");
            let ended = Arc::clone(&self.inner).consume(session, &shutdown).await;
            self.inner
                .metrics
                .connected
                .with_label_values(&[name])
                .set(0);
            match ended {
                Ended::Shutdown => break,
                Ended::ConnectionLost => {
                    tracing::warn!(worker = name, "lost the broker connection; reconnecting");
                }
            }
        }
        self.inner.health.set(name, false, "stopped");
        tracing::info!(worker = name, "stopped");
        Ok(())
    }
}

impl<H: Handler> Inner<H> {
    fn name(&self) -> &'static str {
        self.handler.name()
    }

    async fn open_session(&self) -> Result<Session, lapin::Error> {
        let connection_name = format!("simflow-{}-{}", self.name(), std::process::id());
        let connection = amqp::connect(&self.settings.amqp.uri, &connection_name).await?;
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
                self.handler.queue().queue_name().into(),
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
        let mut in_flight = JoinSet::new();
        let ended = loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    // Stop taking work; deliveries already buffered but not started go back to
                    // the queue when the channel closes.
                    let tag = consumer.tag();
                    if let Err(error) = channel.basic_cancel(tag, BasicCancelOptions::default()).await {
                        tracing::warn!(%error, "cancelling the consumer failed");
                    }
                    break Ended::Shutdown;
                }
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        let inner = Arc::clone(&self);
                        let publisher = publisher.clone();
                        in_flight.spawn(async move { inner.process(delivery, &publisher).await });
                    }
                    Some(Err(error)) => {
                        tracing::warn!(%error, "consumer error");
                        break Ended::ConnectionLost;
                    }
                    None => break Ended::ConnectionLost,
                },
            }
        };
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

    async fn process(&self, delivery: Delivery, publisher: &Publisher) {
        let started = Instant::now();
        let name = self.name();
        let properties = &delivery.properties;
        let message_id = properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_owned());
        let message_type = properties
            .kind()
            .as_ref()
            .map(|kind| kind.as_str().to_owned());
        let attempt = amqp::header_u32(properties, amqp::ATTEMPT_HEADER)
            .unwrap_or(1)
            .max(1);
        let decoded = decode(
            message_id.as_deref(),
            message_type.as_deref(),
            &delivery.data,
        );

        let (settle, subject_id) = match decoded {
            Err(reason) => (
                Settle::DeadLetter {
                    detail: reason.message_en.clone(),
                    reason,
                },
                None,
            ),
            Ok((message_id, job)) => {
                let subject_id = job.subject_id();
                if !queue_accepts(self.handler.queue(), job.role()) {
                    let reason = ClerkMessage::new(
                        "UNEXPECTED_MESSAGE_TYPE",
                        "消息类型不属于此队列",
                        "This message type does not belong on this queue",
                    );
                    (
                        Settle::DeadLetter {
                            detail: format!(
                                "{} on {}",
                                job.message_type(),
                                self.handler.queue().queue_name()
                            ),
                            reason,
                        },
                        subject_id,
                    )
                } else {
                    let context = JobContext {
                        message_id,
                        message_type: job.message_type().to_owned(),
                        attempt,
                        received_at: Utc::now(),
                        // A retried copy was republished by simflow's own user: the validated
                        // user id of the original travels in a header. Only simflow may publish
                        // to the retry exchanges (deploy/rabbitmq and ARCHITECTURE.md).
                        user_id: properties
                            .user_id()
                            .as_ref()
                            .map(|user| user.as_str().to_owned())
                            .or_else(|| {
                                (attempt > 1)
                                    .then(|| {
                                        amqp::header_str(properties, amqp::ORIGINAL_USER_ID_HEADER)
                                    })
                                    .flatten()
                            }),
                        subject_id: subject_id.clone(),
                        redelivered: delivery.redelivered,
                        death_reason: crate::deadletter::death_reason(properties),
                    };

                    (
                        self.handle_with_tries(&context, job, attempt).await,
                        subject_id,
                    )
                }
            }
        };

        let type_label = message_type
            .as_deref()
            .filter(|kind| simflow_schemas::registry::find(kind).is_some())
            .unwrap_or("unknown")
            .to_owned();
        let result = match settle {
            Settle::Publish { outcome, label } => {
                match self.publish_outcome(&delivery, publisher, &outcome).await {
                    Ok(()) => self.ack(&delivery, label, &type_label).await,
                    Err(PublishError::Unroutable {
                        exchange,
                        routing_key,
                    }) => {
                        // The work is committed but its outcome cannot be delivered; ops fix the
                        // binding and replay, and the inbox republishes the stored outcome.
                        let reason = ClerkMessage::new(
                            "OUTCOME_UNROUTABLE",
                            "处理结果无法投递，请联系运维",
                            "The job's outcome could not be routed; ops must fix the topology and replay",
                        );
                        let detail = format!("no route for {exchange}/{routing_key}");
                        self.dead_letter(
                            &delivery,
                            publisher,
                            &reason,
                            &detail,
                            attempt,
                            subject_id,
                            &type_label,
                        )
                        .await
                    }
                    Err(error) => Err(error),
                }
            }
            Settle::Retry { error } => {
                if attempt >= self.settings.worker.max_attempts {
                    let reason = ClerkMessage::new(
                        "RETRIES_EXHAUSTED",
                        "多次重试仍失败，已转人工处理",
                        "Still failing after every retry; waiting for ops",
                    );
                    self.dead_letter(
                        &delivery,
                        publisher,
                        &reason,
                        &error,
                        attempt,
                        subject_id,
                        &type_label,
                    )
                    .await
                } else {
                    self.retry_later(&delivery, publisher, attempt, &error, &type_label)
                        .await
                }
            }
            Settle::DeadLetter { reason, detail } => {
                self.dead_letter(
                    &delivery,
                    publisher,
                    &reason,
                    &detail,
                    attempt,
                    subject_id,
                    &type_label,
                )
                .await
            }
        };
        tracing::debug!(worker = name, message_id = ?message_id, ok = result.is_ok(), "settled");
        match result {
            Ok(()) => {
                self.metrics
                    .handling_seconds
                    .with_label_values(&[name])
                    .observe(started.elapsed().as_secs_f64());
                self.metrics
                    .last_job
                    .with_label_values(&[name])
                    .set(Utc::now().timestamp() as f64);
                self.health.job_settled(name);
            }
            Err(PublishError::Nacked) => {
                // The broker could not take our copy; put the job back to be tried again.
                let _ = delivery
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await;
            }
            Err(error) => {
                // The connection is going; the unacked delivery comes back after reconnecting.
                tracing::warn!(%error, worker = name, "could not settle a job; it will be redelivered");
            }
        }
    }

    async fn handle_with_tries(&self, context: &JobContext, job: Job, attempt: u32) -> Settle {
        let waits = retry::in_process_waits(self.settings.worker.in_process_tries);
        let mut waits = waits.into_iter();
        loop {
            match self.transact(context, job.clone()).await {
                Ok(Handled::Committed(outcome)) => {
                    return Settle::Publish {
                        outcome,
                        label: "committed",
                    };
                }
                Ok(Handled::Rejected(outcome)) => {
                    return Settle::Publish {
                        outcome,
                        label: "rejected",
                    };
                }
                Ok(Handled::Duplicate(outcome)) => {
                    self.metrics
                        .inbox_hits
                        .with_label_values(&[self.name()])
                        .inc();
                    return Settle::Publish {
                        outcome,
                        label: "duplicate",
                    };
                }
                Err(JobError::Rejected(_)) => {
                    unreachable!("transact turns rejections into outcomes")
                }
                Err(JobError::NeedsOps(reason)) => {
                    let detail = reason.message_en.clone();
                    return Settle::DeadLetter { reason, detail };
                }
                Err(JobError::Transient(error)) => match waits.next() {
                    Some(wait) => {
                        tracing::info!(worker = self.name(), attempt, error = %format!("{error:#}"), "transient failure; trying again in process");
                        tokio::time::sleep(wait).await;
                    }
                    None => {
                        return Settle::Retry {
                            error: format!("{error:#}"),
                        };
                    }
                },
            }
        }
    }

    async fn transact(&self, context: &JobContext, job: Job) -> Result<Handled, JobError> {
        let consumer = self.name();
        // A redelivered or retried job was probably handled already: answer it without running
        // the handler. Fresh deliveries skip this look-up; `record` catches them anyway.
        if context.redelivered || context.attempt > 1 {
            let mut connection = self.pool.acquire().await?;
            if let Some(outcome) =
                inbox::lookup(&mut connection, consumer, &context.message_id).await?
            {
                return Ok(Handled::Duplicate(outcome));
            }
        }
        let mut transaction = self.pool.begin().await?;
        let (outcome, handled_as_rejection) =
            match self.handler.handle(context, job, &mut transaction).await {
                Ok(outcome) => (outcome, false),
                Err(JobError::Rejected(rejection)) => {
                    // Nothing the handler did is kept; the rejection itself is recorded below in a
                    // transaction of its own, so a redelivery gets the same answer.
                    transaction.rollback().await?;
                    transaction = self.pool.begin().await?;
                    let event = JobRejected {
                        job_message_id: context.message_id.clone(),
                        job_type: context.message_type.clone(),
                        subject_id: context.subject_id.clone(),
                        reason: rejection.reason,
                        problems: rejection.problems,
                        problem_count: rejection.problem_count,
                    };
                    let routing_key = format!("{}.rejected", self.handler.queue().key());
                    (Outcome::event(&routing_key, &event), true)
                }
                Err(other) => return Err(other),
            };
        let recorded = inbox::record(
            &mut transaction,
            consumer,
            &context.message_id,
            &context.message_type,
            &outcome,
        )
        .await?;
        if !recorded {
            // Another delivery of this message committed while we worked: its outcome stands.
            transaction.rollback().await?;
            let mut connection = self.pool.acquire().await?;
            let stored = inbox::lookup(&mut connection, consumer, &context.message_id)
                .await?
                .unwrap_or_default();
            return Ok(Handled::Duplicate(stored));
        }
        transaction.commit().await?;
        Ok(if handled_as_rejection {
            Handled::Rejected(outcome)
        } else {
            Handled::Committed(outcome)
        })
    }

    async fn publish_outcome(
        &self,
        delivery: &Delivery,
        publisher: &Publisher,
        outcome: &Outcome,
    ) -> Result<(), PublishError> {
        let job_message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str())
            .unwrap_or_default();
        let reply_to = delivery
            .properties
            .reply_to()
            .as_ref()
            .map(|queue| queue.as_str());
        for (index, message) in outcome.messages.iter().enumerate() {
            let message_id = outgoing_message_id(job_message_id, index);
            publisher
                .publish_outgoing(message, &message_id, job_message_id, reply_to)
                .await?;
        }
        Ok(())
    }

    async fn ack(
        &self,
        delivery: &Delivery,
        label: &str,
        type_label: &str,
    ) -> Result<(), PublishError> {
        delivery.acker.ack(BasicAckOptions::default()).await?;
        self.metrics
            .jobs
            .with_label_values(&[self.name(), type_label, label])
            .inc();
        Ok(())
    }

    async fn retry_later(
        &self,
        delivery: &Delivery,
        publisher: &Publisher,
        attempt: u32,
        error: &str,
        type_label: &str,
    ) -> Result<(), PublishError> {
        let levels = self.settings.topology_params().retry_delays;
        let (level, jitter) = retry::retry_level(attempt, &levels);
        tracing::warn!(worker = self.name(), attempt, retry_in_ms = (level + jitter).as_millis() as u64, %error, "job failed transiently; retrying later");
        tokio::time::sleep(jitter).await;
        let first_failure = amqp::header_str(&delivery.properties, amqp::FIRST_FAILURE_HEADER)
            .unwrap_or_else(|| Utc::now().to_rfc3339());
        let properties = amqp::with_headers(
            amqp::republishable(&delivery.properties),
            &[
                (
                    amqp::ATTEMPT_HEADER,
                    AMQPValue::LongLongInt(i64::from(attempt) + 1),
                ),
                (amqp::FIRST_FAILURE_HEADER, text_value(&first_failure)),
                (
                    amqp::ORIGINAL_EXCHANGE_HEADER,
                    text_value(&original_exchange(delivery)),
                ),
                (
                    amqp::ORIGINAL_ROUTING_KEY_HEADER,
                    text_value(self.handler.queue().key()),
                ),
            ],
            &[],
        );
        // The retry queue dead-letters back to the jobs exchange with this routing key.
        publisher
            .publish(
                &retry_name(level),
                self.handler.queue().key(),
                &delivery.data,
                properties,
            )
            .await?;
        self.metrics.retries.with_label_values(&[self.name()]).inc();
        self.ack(delivery, "retried", type_label).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn dead_letter(
        &self,
        delivery: &Delivery,
        publisher: &Publisher,
        reason: &ClerkMessage,
        detail: &str,
        attempt: u32,
        subject_id: Option<String>,
        type_label: &str,
    ) -> Result<(), PublishError> {
        let queue = self.handler.queue();
        let first_failure = amqp::header_str(&delivery.properties, amqp::FIRST_FAILURE_HEADER)
            .unwrap_or_else(|| Utc::now().to_rfc3339());
        tracing::error!(worker = self.name(), code = %reason.code, detail, attempt, "dead-lettering a job");
        let properties = amqp::with_headers(
            amqp::republishable(&delivery.properties),
            &[
                (amqp::REASON_CODE_HEADER, text_value(&reason.code)),
                (amqp::REASON_ZH_HEADER, text_value(&reason.message_zh)),
                (amqp::REASON_EN_HEADER, text_value(&reason.message_en)),
                (amqp::REASON_DETAIL_HEADER, text_value(detail)),
                (
                    amqp::ATTEMPTS_HEADER,
                    AMQPValue::LongLongInt(i64::from(attempt)),
                ),
                (amqp::WORKER_HEADER, text_value(self.name())),
                (amqp::FIRST_FAILURE_HEADER, text_value(&first_failure)),
                (
                    amqp::ORIGINAL_EXCHANGE_HEADER,
                    text_value(&original_exchange(delivery)),
                ),
                (amqp::ORIGINAL_ROUTING_KEY_HEADER, text_value(queue.key())),
            ],
            &[],
        );
        publisher
            .publish(
                DEAD_LETTER_EXCHANGE,
                &queue.dead_letter_key(),
                &delivery.data,
                properties,
            )
            .await?;
        let job_message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_owned())
            .unwrap_or_default();
        let event = JobFailed {
            job_message_id: job_message_id.clone(),
            job_type: delivery
                .properties
                .kind()
                .as_ref()
                .map(|kind| kind.as_str().to_owned())
                .unwrap_or_default(),
            subject_id,
            reason: reason.clone(),
            attempts: attempt,
            worker: self.name().to_owned(),
            dead_letter_queue: queue.dead_letter_queue(),
        };
        let failed = Outgoing {
            exchange: EVENTS_EXCHANGE.to_owned(),
            routing_key: format!("{}.failed", queue.key()),
            message_type: JobFailed::TYPE.to_owned(),
            body: serde_json::to_value(&event).unwrap_or_default(),
            expiration_ms: None,
            copy_to_reply_to: true,
        };
        let failure_id = outgoing_message_id(&format!("{job_message_id}/failed/{attempt}"), 0);
        let reply_to = delivery
            .properties
            .reply_to()
            .as_ref()
            .map(|queue| queue.as_str());
        publisher
            .publish_outgoing(&failed, &failure_id, &job_message_id, reply_to)
            .await?;
        self.metrics
            .dead_letters
            .with_label_values(&[self.name(), &reason.code])
            .inc();
        self.ack(delivery, "dead_lettered", type_label).await
    }
}

/// Which messages a central queue takes: its own jobs; outlet answers on the results queue;
/// outlet work the broker dead-lettered (expired or rejected) on the outlet-expired queue.
fn queue_accepts(queue: simflow_schemas::topology::JobQueue, role: MessageRole) -> bool {
    use simflow_schemas::topology::JobQueue;
    match role {
        MessageRole::Job(owner) => owner == queue,
        MessageRole::OutletResult => queue == JobQueue::OutletResults,
        MessageRole::OutletWork => queue == JobQueue::OutletExpired,
        MessageRole::Event(_) => false,
    }
}

fn original_exchange(delivery: &Delivery) -> String {
    amqp::header_str(&delivery.properties, amqp::ORIGINAL_EXCHANGE_HEADER)
        .unwrap_or_else(|| delivery.exchange.as_str().to_owned())
}

/// Checks the envelope and decodes the body; the error is the dead-letter reason.
fn decode(
    message_id: Option<&str>,
    message_type: Option<&str>,
    body: &[u8],
) -> Result<(String, Job), ClerkMessage> {
    let Some(message_id) = message_id.filter(|id| !id.is_empty()) else {
        return Err(ClerkMessage::new(
            "MISSING_MESSAGE_ID",
            "消息缺少message_id，无法保证只处理一次",
            "The message has no message_id, so it cannot be handled exactly once",
        ));
    };
    let Some(message_type) = message_type else {
        return Err(ClerkMessage::new(
            "MISSING_MESSAGE_TYPE",
            "消息缺少类型",
            "The message has no type property",
        ));
    };
    match Job::decode(message_type, body) {
        Ok(job) => Ok((message_id.to_owned(), job)),
        Err(DecodeError::UnknownType(kind)) => Err(ClerkMessage::new(
            "UNKNOWN_MESSAGE_TYPE",
            "未知的消息类型",
            &format!("Unknown message type {kind:?}"),
        )),
        Err(DecodeError::MissingType) => Err(ClerkMessage::new(
            "MISSING_MESSAGE_TYPE",
            "消息缺少类型",
            "The message has no type property",
        )),
        Err(DecodeError::Malformed {
            message_type,
            source,
        }) => Err(ClerkMessage::new(
            "MALFORMED_MESSAGE",
            "消息格式错误",
            &format!("Malformed {message_type} body: {source}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outgoing_ids_are_stable_per_job_and_index() {
        assert_eq!(
            outgoing_message_id("job-1", 0),
            outgoing_message_id("job-1", 0)
        );
        assert_ne!(
            outgoing_message_id("job-1", 0),
            outgoing_message_id("job-1", 1)
        );
        assert_ne!(
            outgoing_message_id("job-1", 0),
            outgoing_message_id("job-2", 0)
        );
    }

    #[test]
    fn envelopes_without_id_or_with_bad_bodies_are_refused_with_a_reason() {
        assert_eq!(
            decode(None, Some("transfer.create.v1"), b"{}")
                .unwrap_err()
                .code,
            "MISSING_MESSAGE_ID"
        );
        assert_eq!(
            decode(Some("m"), None, b"{}").unwrap_err().code,
            "MISSING_MESSAGE_TYPE"
        );
        assert_eq!(
            decode(Some("m"), Some("nope.v1"), b"{}").unwrap_err().code,
            "UNKNOWN_MESSAGE_TYPE"
        );
        assert_eq!(
            decode(Some("m"), Some("transfer.approve_in.v1"), b"not json")
                .unwrap_err()
                .code,
            "MALFORMED_MESSAGE"
        );
    }
}
