//! Dead-letter queue operations for ops: list with reasons, show one, replay one or all to
//! the queue it came from (through the internal exchange), keeping its message id (so the
//! inbox still recognises it), discard one; and the marks that make dead-lettering idempotent.
//!
//! Listing takes the messages without acknowledging them and gives them all back, so looking
//! never loses or reorders anything that matters; replay acknowledges a dead letter only after
//! its copy is confirmed on its queue, replays each message once per run (a second copy of the
//! same message in the queue is dropped, not replayed), and first removes the message's
//! dead-letter mark so that the replayed job, failing again, is dead-lettered again.

use std::collections::BTreeMap;

use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::AMQPValue;
use lapin::{BasicProperties, Connection};
use serde::Serialize;
use simflow_schemas::topology::{INTERNAL_EXCHANGE, JOBS_EXCHANGE, JobQueue};
use sqlx::PgPool;

use crate::amqp::{self, Publisher};

/// One dead letter as ops see it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// The dead-letter queue it sits in.
    pub queue: String,
    /// Its `message_id`.
    pub message_id: Option<String>,
    /// Its `type`.
    pub message_type: Option<String>,
    /// simflow's reason code, or the broker's reason (`delivery_limit`, `expired`, …).
    pub reason_code: String,
    /// Reason in Chinese (simflow dead letters only).
    pub reason_zh: Option<String>,
    /// Reason in English.
    pub reason_en: Option<String>,
    /// Technical detail for ops.
    pub detail: Option<String>,
    /// Tries made.
    pub attempts: Option<u32>,
    /// The worker that gave up.
    pub worker: Option<String>,
    /// When it first failed.
    pub first_failure: Option<String>,
    /// Where a replay sends it.
    pub original_exchange: String,
    /// With this routing key.
    pub original_routing_key: String,
    /// Body size in bytes.
    pub body_bytes: usize,
    /// The body as text (bodies never hold card keys in clear; write scripts are sealed).
    pub body: String,
}

/// Which dead letters to replay.
#[derive(Debug, Clone)]
pub enum Selection {
    /// Every dead letter in the queue.
    All,
    /// The one with this message id.
    MessageId(String),
}

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    /// Dead letters sent back to their queue.
    pub replayed: Vec<String>,
    /// Second copies of a message already replayed in this run, dropped.
    pub duplicates_dropped: usize,
    /// Dead letters left in place.
    pub kept: usize,
}

/// The key a dead-letter mark and a `.failed` event id use: the message id, or for a message
/// without one, the SHA-256 of its body (stable across redeliveries, distinct per body).
pub fn message_key(message_id: Option<&str>, body: &[u8]) -> String {
    match message_id.filter(|id| !id.is_empty()) {
        Some(id) => id.to_owned(),
        None => format!("sha256:{}", hex::encode(crate::worker::digest(body))),
    }
}

/// The right to dead-letter one message, held until its copy is confirmed: a row lock on its
/// mark, in a transaction that commits once the copy is in the dead-letter queue.
#[derive(Debug)]
pub(crate) struct DeadLetterClaim {
    transaction: sqlx::Transaction<'static, sqlx::Postgres>,
}

/// What [`claim`] found.
#[derive(Debug)]
pub(crate) enum Claimed {
    /// Nobody dead-lettered this message yet: this worker does, then [`DeadLetterClaim::done`].
    Ours(DeadLetterClaim),
    /// Its copy is in the dead-letter queue already (a redelivery after the worker that made it
    /// died before the ack, or a second copy the publisher sent): acknowledge only.
    AlreadyDeadLettered,
}

/// Claims dead-lettering of a message for `consumer`, the way the inbox claims a job: an
/// `INSERT … ON CONFLICT DO NOTHING` of its mark, committed only once the copy is confirmed. A
/// second copy of the message handled meanwhile (another batch, another process) waits on the
/// uncommitted mark and then finds it; a worker that dies before the confirm leaves no mark, so
/// the redelivery is dead-lettered.
pub(crate) async fn claim(
    db: &PgPool,
    consumer: &str,
    message_key: &str,
    reason_code: &str,
) -> Result<Claimed, sqlx::Error> {
    let mut transaction = db.begin().await?;
    let inserted: Option<i32> = sqlx::query_scalar(
        "INSERT INTO runtime.dead_letter_marks (consumer, message_key, reason_code) VALUES ($1, $2, $3) \
         ON CONFLICT (consumer, message_key) DO NOTHING RETURNING 1",
    )
    .bind(consumer)
    .bind(message_key)
    .bind(reason_code)
    .fetch_optional(&mut *transaction)
    .await?;
    match inserted {
        Some(_) => Ok(Claimed::Ours(DeadLetterClaim { transaction })),
        None => {
            transaction.rollback().await?;
            Ok(Claimed::AlreadyDeadLettered)
        }
    }
}

impl DeadLetterClaim {
    /// Marks the message dead-lettered (its copy is confirmed in the dead-letter queue).
    pub(crate) async fn done(self) -> Result<(), sqlx::Error> {
        self.transaction.commit().await
    }
}

async fn unmark(db: &PgPool, consumer: &str, message_key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM runtime.dead_letter_marks WHERE consumer = $1 AND message_key = $2")
        .bind(consumer)
        .bind(message_key)
        .execute(db)
        .await?;
    Ok(())
}

fn x_death(properties: &BasicProperties) -> Option<BTreeMap<String, AMQPValue>> {
    let headers = properties.headers().as_ref()?;
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else {
        return None;
    };
    // The most recent death comes first.
    match deaths.as_slice().first()? {
        AMQPValue::FieldTable(table) => Some(
            table
                .inner()
                .iter()
                .map(|(key, value)| (key.as_str().to_owned(), value.clone()))
                .collect(),
        ),
        _ => None,
    }
}

/// The reason of the most recent broker dead-lettering of a message (`expired`, `rejected`,
/// `delivery_limit`, `maxlen`), if the broker dead-lettered it.
pub fn death_reason(properties: &BasicProperties) -> Option<String> {
    x_death(properties).and_then(|death| death.get("reason").and_then(text))
}

fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.as_str().to_owned()),
        _ => None,
    }
}

/// Reads the reason and origin of a dead letter from its headers.
pub fn describe(queue: &str, properties: &BasicProperties, body: &[u8]) -> DeadLetter {
    let death = x_death(properties);
    let death_text = |key: &str| {
        death
            .as_ref()
            .and_then(|death| death.get(key))
            .and_then(text)
    };
    let death_routing_key = death
        .as_ref()
        .and_then(|death| match death.get("routing-keys")? {
            AMQPValue::FieldArray(keys) => keys.as_slice().first().and_then(text),
            _ => None,
        });
    let reason_code = amqp::header_str(properties, amqp::REASON_CODE_HEADER)
        .or_else(|| death_text("reason").map(|reason| format!("broker:{reason}")))
        .unwrap_or_else(|| "unknown".to_owned());
    DeadLetter {
        queue: queue.to_owned(),
        message_id: properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_owned()),
        message_type: properties
            .kind()
            .as_ref()
            .map(|kind| kind.as_str().to_owned()),
        reason_code,
        reason_zh: amqp::header_str(properties, amqp::REASON_ZH_HEADER),
        reason_en: amqp::header_str(properties, amqp::REASON_EN_HEADER),
        detail: amqp::header_str(properties, amqp::REASON_DETAIL_HEADER),
        attempts: amqp::header_u32(properties, amqp::ATTEMPTS_HEADER),
        worker: amqp::header_str(properties, amqp::WORKER_HEADER),
        first_failure: amqp::header_str(properties, amqp::FIRST_FAILURE_HEADER),
        original_exchange: amqp::header_str(properties, amqp::ORIGINAL_EXCHANGE_HEADER)
            .or_else(|| death_text("exchange"))
            .unwrap_or_else(|| JOBS_EXCHANGE.to_owned()),
        original_routing_key: amqp::header_str(properties, amqp::ORIGINAL_ROUTING_KEY_HEADER)
            .or(death_routing_key)
            .unwrap_or_default(),
        body_bytes: body.len(),
        body: String::from_utf8_lossy(body).into_owned(),
    }
}

/// The properties of a replayed copy: the original ones without simflow's failure headers and
/// the broker's death history, so the job starts over at attempt 1 with its own message id.
fn replay_properties(properties: &BasicProperties) -> BasicProperties {
    amqp::with_headers(
        properties.clone(),
        &[],
        &[
            amqp::REASON_CODE_HEADER,
            amqp::REASON_ZH_HEADER,
            amqp::REASON_EN_HEADER,
            amqp::REASON_DETAIL_HEADER,
            amqp::ATTEMPTS_HEADER,
            amqp::WORKER_HEADER,
            amqp::FIRST_FAILURE_HEADER,
            amqp::ATTEMPT_HEADER,
            amqp::ORIGINAL_EXCHANGE_HEADER,
            amqp::ORIGINAL_ROUTING_KEY_HEADER,
            "x-death",
            "x-first-death-exchange",
            "x-first-death-queue",
            "x-first-death-reason",
        ],
    )
}

/// Puts messages taken with `basic_get` back into their queue, in order.
async fn give_back(deliveries: Vec<lapin::message::Delivery>) -> Result<(), lapin::Error> {
    for delivery in deliveries {
        crate::outlet::requeue(&delivery).await?;
    }
    Ok(())
}

/// Lists up to `limit` dead letters of `queue`, leaving them in the queue.
pub async fn list(
    connection: &Connection,
    queue: &str,
    limit: usize,
) -> anyhow::Result<Vec<DeadLetter>> {
    let channel = connection.create_channel().await?;
    let mut letters = Vec::new();
    let mut held = Vec::new();
    while letters.len() < limit {
        let Some(message) = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        letters.push(describe(
            queue,
            &message.delivery.properties,
            &message.delivery.data,
        ));
        held.push(message.delivery);
    }
    give_back(held).await?;
    channel.close(200, "listed".into()).await?;
    Ok(letters)
}

/// Takes the dead letter with `message_id` out of `queue`'s dead-letter queue for good (every
/// copy of it), leaving the others in place; returns how many copies were removed. Its
/// dead-letter mark goes too (in `db`): if the same message is ever published again it is
/// handled like any other.
pub async fn discard(
    connection: &Connection,
    db: &PgPool,
    queue: JobQueue,
    message_id: &str,
) -> anyhow::Result<usize> {
    let dead_letter_queue = queue.dead_letter_queue();
    let channel = connection.create_channel().await?;
    let mut kept = Vec::new();
    let mut removed = 0;
    while let Some(message) = channel
        .basic_get(
            dead_letter_queue.as_str().into(),
            BasicGetOptions { no_ack: false },
        )
        .await?
    {
        let delivery = &message.delivery;
        let id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str());
        if id != Some(message_id) {
            kept.push(message.delivery);
            continue;
        }
        if removed == 0 {
            unmark(
                db,
                queue.key(),
                &message_key(Some(message_id), &delivery.data),
            )
            .await?;
        }
        delivery.acker.ack(BasicAckOptions::default()).await?;
        removed += 1;
    }
    give_back(kept).await?;
    channel.close(200, "discarded".into()).await?;
    Ok(removed)
}

/// Replays the selected dead letters of `queue`'s dead-letter queue into `queue` through the
/// internal exchange: each message once (later copies of it are dropped), its dead-letter mark
/// removed first (in `db`), its copy confirmed before the dead letter is acknowledged.
pub async fn replay(
    connection: &Connection,
    db: &PgPool,
    queue: JobQueue,
    selection: &Selection,
) -> anyhow::Result<ReplayReport> {
    let dead_letter_queue = queue.dead_letter_queue();
    let channel = connection.create_channel().await?;
    let publisher = Publisher::open(connection).await?;
    let mut report = ReplayReport::default();
    let mut kept = Vec::new();
    let mut replayed_keys = std::collections::BTreeSet::new();
    while let Some(message) = channel
        .basic_get(
            dead_letter_queue.as_str().into(),
            BasicGetOptions { no_ack: false },
        )
        .await?
    {
        let delivery = &message.delivery;
        let letter = describe(&dead_letter_queue, &delivery.properties, &delivery.data);
        let selected = match selection {
            Selection::All => true,
            Selection::MessageId(id) => letter.message_id.as_deref() == Some(id.as_str()),
        };
        if !selected {
            kept.push(message.delivery);
            continue;
        }
        let key = message_key(letter.message_id.as_deref(), &delivery.data);
        if !replayed_keys.insert(key.clone()) {
            delivery.acker.ack(BasicAckOptions::default()).await?;
            report.duplicates_dropped += 1;
            continue;
        }
        unmark(db, queue.key(), &key).await?;
        publisher
            .publish(
                INTERNAL_EXCHANGE,
                queue.key(),
                &delivery.data,
                replay_properties(&delivery.properties),
            )
            .await?;
        delivery.acker.ack(BasicAckOptions::default()).await?;
        report.replayed.push(letter.message_id.unwrap_or(key));
    }
    report.kept = kept.len();
    give_back(kept).await?;
    channel.close(200, "replayed".into()).await?;
    Ok(report)
}
