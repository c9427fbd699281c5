//! Settling deliveries on the broker once their batch has committed: publish the outcome with
//! confirms, then ack; or send a copy to a retry queue, then ack; or dead-letter a copy with
//! reason headers and publish `<kind>.failed`, then ack. Every delivery of a batch is settled
//! at once, so their publishes share the wait for confirms.
//!
//! Broker trouble while settling leaves the delivery unacknowledged: the broker redelivers it
//! and the inbox answers it. Dead-lettering is idempotent: a message's mark
//! (`runtime.dead_letter_marks`) is claimed before its copy is made and committed once the copy
//! is confirmed in the dead-letter queue, so a redelivery or a second copy of a marked message
//! is only acknowledged; `dlq replay` removes the mark before it replays.
//!
//! Outcomes carry the publisher's `correlation_id` (or, without one, the job's message id) and
//! the job's message id in the `x-simflow-job-message-id` header.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::AMQPValue;
use simflow_schemas::common::ClerkMessage;
use simflow_schemas::events::JobFailed;
use simflow_schemas::registry::{SharedEvent, event_routing_key};
use simflow_schemas::topology::{DEAD_LETTER_EXCHANGE, JobQueue, retry_name};

use crate::amqp::{self, PublishError, Publisher, Unconfirmed, text_value};
use crate::deadletter;
use crate::metrics::{Health, Metrics};
use crate::outcome::{Outcome, Outgoing};
use crate::reasons;
use crate::retry;
use crate::settings::Settings;

use super::envelope::Envelope;

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

/// What to do with one delivery.
#[derive(Debug)]
pub(crate) enum Settle {
    /// Publish the outcome, then ack. `id_base` derives the outgoing message ids.
    Publish {
        outcome: Outcome,
        id_base: String,
        label: &'static str,
    },
    /// Send a copy to the next retry queue, then ack.
    Retry { error: String },
    /// Dead-letter a copy with the reason, publish `<kind>.failed`, then ack.
    DeadLetter {
        reason: ClerkMessage,
        detail: String,
    },
}

/// One delivery and what to do with it.
#[derive(Debug)]
pub(crate) struct Settlement {
    pub delivery: Delivery,
    pub received_at: Instant,
    pub envelope: Envelope,
    pub subject_id: Option<String>,
    pub settle: Settle,
}

/// Everything settling needs, in one place.
#[derive(Debug, Clone)]
pub(crate) struct Settler {
    pub publisher: Publisher,
    pub pool: sqlx::PgPool,
    pub queue: JobQueue,
    pub worker: &'static str,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    pub health: Health,
}

impl Settler {
    /// Settles every delivery of a batch; their publishes go out together and their confirms
    /// are awaited together.
    pub async fn settle_all(&self, settlements: Vec<Settlement>) {
        futures_util::future::join_all(
            settlements
                .into_iter()
                .map(|settlement| self.settle(settlement)),
        )
        .await;
    }

    async fn settle(&self, settlement: Settlement) {
        let Settlement {
            delivery,
            received_at,
            envelope,
            subject_id,
            settle,
        } = settlement;
        let result = match settle {
            Settle::Publish {
                outcome,
                id_base,
                label,
            } => match self.publish_outcome(&delivery, &outcome, &id_base).await {
                Ok(()) => self.ack(&delivery, &envelope, label).await,
                Err(PublishError::Unroutable {
                    exchange,
                    routing_key,
                }) => {
                    // The work is committed but its outcome cannot be delivered; ops fix the
                    // binding and replay, and the inbox republishes the stored outcome.
                    let failure = Failure {
                        reason: reasons::OUTCOME_UNROUTABLE.message(),
                        detail: format!("no route for {exchange}/{routing_key}"),
                        subject_id,
                    };
                    self.dead_letter(&delivery, &envelope, failure).await
                }
                Err(error) => Err(error),
            },
            Settle::Retry { error } => {
                if envelope.attempt >= self.settings.worker.max_attempts {
                    let failure = Failure {
                        reason: reasons::RETRIES_EXHAUSTED.message(),
                        detail: error,
                        subject_id,
                    };
                    self.dead_letter(&delivery, &envelope, failure).await
                } else {
                    self.retry_later(&delivery, &envelope, &error).await
                }
            }
            Settle::DeadLetter { reason, detail } => {
                let failure = Failure {
                    reason,
                    detail,
                    subject_id,
                };
                self.dead_letter(&delivery, &envelope, failure).await
            }
        };
        match result {
            Ok(()) => {
                self.metrics
                    .handling_seconds
                    .with_label_values(&[self.worker, envelope.type_label()])
                    .observe(received_at.elapsed().as_secs_f64());
                self.metrics
                    .last_job
                    .with_label_values(&[self.worker])
                    .set(Utc::now().timestamp() as f64);
                self.health.job_settled(self.worker);
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
                tracing::warn!(%error, worker = self.worker, "could not settle a job; it will be redelivered");
            }
        }
    }

    async fn publish_outcome(
        &self,
        delivery: &Delivery,
        outcome: &Outcome,
        id_base: &str,
    ) -> Result<(), PublishError> {
        let answering = Answering::of(delivery);
        let mut sent: Vec<Unconfirmed> = Vec::new();
        for (index, message) in outcome.messages.iter().enumerate() {
            let message_id = outgoing_message_id(id_base, index);
            sent.extend(
                self.publisher
                    .send_outgoing(message, &message_id, &answering.to_job())
                    .await?,
            );
        }
        amqp::all_confirmed(sent).await
    }

    async fn ack(
        &self,
        delivery: &Delivery,
        envelope: &Envelope,
        label: &str,
    ) -> Result<(), PublishError> {
        delivery.acker.ack(BasicAckOptions::default()).await?;
        self.metrics
            .jobs
            .with_label_values(&[self.worker, envelope.type_label(), label])
            .inc();
        // Every way out but a retry is the job's outcome, confirmed by the broker by now.
        if label != "retried"
            && let Some(seconds) = envelope.seconds_since_timestamp(Instant::now())
        {
            self.metrics
                .publish_to_outcome_seconds
                .with_label_values(&[self.worker, envelope.type_label()])
                .observe(seconds);
        }
        Ok(())
    }

    async fn retry_later(
        &self,
        delivery: &Delivery,
        envelope: &Envelope,
        error: &str,
    ) -> Result<(), PublishError> {
        let levels = self.settings.topology_params().retry_delays;
        let (level, jitter) = retry::retry_level(envelope.attempt, &levels);
        tracing::warn!(worker = self.worker, attempt = envelope.attempt, retry_in_ms = (level + jitter).as_millis() as u64, %error, "job failed transiently; retrying later");
        tokio::time::sleep(jitter).await;
        let properties = self.copy_properties(
            delivery,
            &[(
                amqp::ATTEMPT_HEADER,
                AMQPValue::LongLongInt(i64::from(envelope.attempt) + 1),
            )],
        );
        // The retry queue dead-letters back to the jobs exchange with this routing key.
        self.publisher
            .publish(
                &retry_name(level),
                self.queue.key(),
                &delivery.data,
                properties,
            )
            .await?;
        self.metrics.retries.with_label_values(&[self.worker]).inc();
        self.ack(delivery, envelope, "retried").await
    }

    /// The properties of a copy simflow republishes (to a retry queue or the dead-letter
    /// queue): the original's, with where it came from, when it first failed, and `extra`.
    fn copy_properties(
        &self,
        delivery: &Delivery,
        extra: &[(&str, AMQPValue)],
    ) -> lapin::BasicProperties {
        let mut headers = vec![
            (
                amqp::FIRST_FAILURE_HEADER,
                text_value(&first_failure(delivery)),
            ),
            (
                amqp::ORIGINAL_EXCHANGE_HEADER,
                text_value(&original_exchange(delivery)),
            ),
            (
                amqp::ORIGINAL_ROUTING_KEY_HEADER,
                text_value(self.queue.key()),
            ),
        ];
        headers.extend(extra.iter().cloned());
        amqp::with_headers(amqp::republishable(&delivery.properties), &headers, &[])
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        envelope: &Envelope,
        failure: Failure,
    ) -> Result<(), PublishError> {
        let Failure {
            reason,
            detail,
            subject_id,
        } = failure;
        let attempt = envelope.attempt;
        let key = deadletter::message_key(envelope.message_id.as_deref(), &delivery.data);
        // Claimed first, for every delivery: a redelivery and a second copy the publisher sent
        // (the same message id) find the first copy's mark and are only acknowledged. Without
        // the database the copy is made anyway (replay drops second copies).
        let claim = match deadletter::claim(&self.pool, self.worker, &key, &reason.code).await {
            Ok(deadletter::Claimed::Ours(claim)) => Some(claim),
            Ok(deadletter::Claimed::AlreadyDeadLettered) => {
                tracing::info!(worker = self.worker, message_key = %key, "already dead-lettered; acknowledging this copy");
                return self.ack(delivery, envelope, "dead_lettered").await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot claim the dead letter; dead-lettering without a mark (replay drops second copies)");
                None
            }
        };
        tracing::error!(worker = self.worker, code = %reason.code, detail, attempt, "dead-lettering a job");
        let properties = self.copy_properties(
            delivery,
            &[
                (amqp::REASON_CODE_HEADER, text_value(&reason.code)),
                (amqp::REASON_ZH_HEADER, text_value(&reason.message_zh)),
                (amqp::REASON_EN_HEADER, text_value(&reason.message_en)),
                (amqp::REASON_DETAIL_HEADER, text_value(&detail)),
                (
                    amqp::ATTEMPTS_HEADER,
                    AMQPValue::LongLongInt(i64::from(attempt)),
                ),
                (amqp::WORKER_HEADER, text_value(self.worker)),
            ],
        );
        let copy = self
            .publisher
            .send(
                DEAD_LETTER_EXCHANGE,
                &self.queue.dead_letter_key(),
                &delivery.data,
                properties,
            )
            .await?;
        let job_message_id = envelope.message_id.clone().unwrap_or_default();
        let event = JobFailed {
            job_message_id: job_message_id.clone(),
            job_type: envelope.message_type.clone().unwrap_or_default(),
            subject_id,
            reason: reason.clone(),
            attempts: attempt,
            worker: self.worker.to_owned(),
            dead_letter_queue: self.queue.dead_letter_queue(),
        };
        let failed = Outgoing::event(&event_routing_key(self.queue, SharedEvent::Failed), &event);
        // Distinct for every message, also those without a message id, and the same on every
        // redelivery of one message.
        let failure_id = outgoing_message_id(&format!("{key}/failed/{attempt}"), 0);
        let answering = Answering::of(delivery);
        let mut sent = vec![copy];
        sent.extend(
            self.publisher
                .send_outgoing(&failed, &failure_id, &answering.to_job())
                .await?,
        );
        amqp::all_confirmed(sent).await?;
        if let Some(claim) = claim
            && let Err(error) = claim.done().await
        {
            tracing::warn!(%error, "cannot mark the dead letter; a redelivery would be dead-lettered again (replay drops second copies)");
        }
        crate::fault::after_dead_letter();
        self.metrics
            .dead_letters
            .with_label_values(&[self.worker, &reason.code])
            .inc();
        self.ack(delivery, envelope, "dead_lettered").await
    }
}

/// What an outcome answers: the job's message id, the publisher's correlation id and
/// reply-to queue.
struct Answering<'a> {
    job_message_id: &'a str,
    correlation_id: Option<&'a str>,
    reply_to: Option<&'a str>,
}

impl<'a> Answering<'a> {
    fn of(delivery: &'a Delivery) -> Answering<'a> {
        let properties = &delivery.properties;
        Answering {
            job_message_id: properties
                .message_id()
                .as_ref()
                .map(|id| id.as_str())
                .unwrap_or_default(),
            correlation_id: properties
                .correlation_id()
                .as_ref()
                .map(|id| id.as_str())
                .filter(|id| !id.is_empty()),
            reply_to: properties
                .reply_to()
                .as_ref()
                .map(|queue| queue.as_str())
                .filter(|queue| !queue.is_empty()),
        }
    }

    fn to_job(&self) -> amqp::AnswerTo<'a> {
        amqp::AnswerTo {
            job_message_id: self.job_message_id,
            correlation_id: self.correlation_id.unwrap_or(self.job_message_id),
            reply_to: self.reply_to,
        }
    }
}

/// Why a job is dead-lettered.
#[derive(Debug)]
struct Failure {
    reason: ClerkMessage,
    detail: String,
    subject_id: Option<String>,
}

fn first_failure(delivery: &Delivery) -> String {
    amqp::header_str(&delivery.properties, amqp::FIRST_FAILURE_HEADER)
        .unwrap_or_else(|| Utc::now().to_rfc3339())
}

fn original_exchange(delivery: &Delivery) -> String {
    amqp::header_str(&delivery.properties, amqp::ORIGINAL_EXCHANGE_HEADER)
        .unwrap_or_else(|| delivery.exchange.as_str().to_owned())
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
}
