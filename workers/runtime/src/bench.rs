//! The raw broker limit for benchmarks: publish with confirms and consume with manual acks on a
//! quorum queue declared like simflow's work queues, with nothing else in the way.
//!
//! Benchmarks print simflow's own throughput next to this number measured in the same run on the
//! same machine, so the ratio means something on a shared, noisy machine.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, Consumer, PublisherConfirm};
use secrecy::SecretString;
use simflow_schemas::topology::{ArgValue, JobQueue, TopologyParams};

use crate::amqp::{self, base_properties};

/// One raw run.
#[derive(Debug, Clone, Copy)]
pub struct RawRun {
    /// Messages published and consumed.
    pub messages: usize,
    /// From the first publish to the last ack.
    pub elapsed: Duration,
}

impl RawRun {
    /// Messages per second.
    pub fn per_second(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

/// What a raw run sends: `count` messages of `body_size` bytes, up to `window` unconfirmed,
/// consumed with `prefetch`.
#[derive(Debug, Clone, Copy)]
pub struct RawLoad<'a> {
    /// The broker.
    pub uri: &'a SecretString,
    /// Bytes per message (the job's size).
    pub body_size: usize,
    /// Messages.
    pub count: usize,
    /// Consumer prefetch.
    pub prefetch: u16,
    /// Publishes in flight.
    pub window: usize,
}

/// Publishes `count` persistent messages of `body_size` bytes with confirms (up to `window` in
/// flight) to a fresh quorum queue shaped like a work queue, while a consumer with `prefetch`
/// acks each; returns when the last one is acked. The queue is deleted afterwards.
pub async fn raw_round_trip(load: &RawLoad<'_>) -> anyhow::Result<RawRun> {
    let RawLoad {
        uri,
        body_size,
        count,
        prefetch,
        window,
    } = *load;
    let connection = amqp::connect(uri, "simflow-bench-raw").await?;
    let queue = format!("simflow.bench.raw.{}", uuid::Uuid::new_v4().simple());
    let mut arguments = simflow_schemas::topology::central_topology(&TopologyParams::default())
        .queues
        .into_iter()
        .find(|spec| spec.name == JobQueue::Transfer.queue_name())
        .map(|spec| spec.arguments)
        .unwrap_or_default();
    // Same queue type, limits and dead-lettering as a work queue, minus the routing to a DLQ.
    arguments.remove("x-dead-letter-routing-key");
    arguments.insert(
        "x-dead-letter-exchange".to_owned(),
        ArgValue::Str(String::new()),
    );
    let setup = connection.create_channel().await?;
    declare_durable(&setup, &queue, amqp::field_table(&arguments)).await?;

    let consume = connection.create_channel().await?;
    let consumer = consume_with_prefetch(&consume, &queue, prefetch).await?;
    let consumer_tag = consumer.tag();
    let publish = confirm_channel(&connection).await?;

    let started = Instant::now();
    let consumer_task = tokio::spawn(settle_each(consumer, count, |delivery| async move {
        delivery.acker.ack(BasicAckOptions::default()).await?;
        anyhow::Ok(())
    }));
    publish_all(&publish, &queue, body_size, count, window, "bench.raw.v1").await?;
    let consumed = consumer_task.await??;
    let elapsed = started.elapsed();
    anyhow::ensure!(consumed == count, "consumed {consumed} of {count}");
    consume
        .basic_cancel(consumer_tag, Default::default())
        .await?;
    consume.close(200, "bench done".into()).await?;
    finish(connection, &setup, &[&queue]).await?;
    Ok(RawRun {
        messages: count,
        elapsed,
    })
}

/// The raw broker limit of a job that is answered: like [`raw_round_trip`], but a responder
/// consumes each message (with `prefetch`), publishes one persistent answer with a confirm to
/// a reply queue, then acks; a second consumer takes the answers. That is the broker traffic
/// of one simflow job and its outcome event, with no database and no rules.
pub async fn raw_request_reply(load: &RawLoad<'_>) -> anyhow::Result<RawRun> {
    let (uri, body_size, count) = (load.uri, load.body_size, load.count);
    let (prefetch, window) = (load.prefetch, load.window);
    let connection = amqp::connect(uri, "simflow-bench-raw-reply").await?;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let requests = format!("simflow.bench.requests.{suffix}");
    let replies = format!("simflow.bench.replies.{suffix}");
    let setup = connection.create_channel().await?;
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), amqp::text_value("quorum"));
    for queue in [&requests, &replies] {
        declare_durable(&setup, queue, arguments.clone()).await?;
    }

    // The responder: answer with a confirm, then ack, for up to `prefetch` at once.
    let respond = confirm_channel(&connection).await?;
    let incoming = consume_with_prefetch(&respond, &requests, prefetch).await?;
    let reply_queue = replies.clone();
    let responder = tokio::spawn(settle_each(incoming, count, move |delivery| {
        let channel = respond.clone();
        let reply_queue = reply_queue.clone();
        async move {
            let properties = base_properties("bench.reply.v1", "reply");
            let confirm = publish_persistent(&channel, &reply_queue, &delivery.data, properties)
                .await?
                .await?;
            anyhow::ensure!(confirm.is_ack(), "the broker nacked a reply");
            delivery.acker.ack(BasicAckOptions::default()).await?;
            anyhow::Ok(())
        }
    }));

    let collect = connection.create_channel().await?;
    let mut answers = consume_with_prefetch(&collect, &replies, 1000).await?;
    let collector = tokio::spawn(async move {
        let mut received = 0usize;
        while received < count {
            let Some(answer) = answers.next().await else {
                break;
            };
            answer?.acker.ack(BasicAckOptions::default()).await?;
            received += 1;
        }
        anyhow::Ok(received)
    });

    let publish = confirm_channel(&connection).await?;
    let started = Instant::now();
    publish_all(
        &publish,
        &requests,
        body_size,
        count,
        window,
        "bench.request.v1",
    )
    .await?;
    let received = collector.await??;
    let elapsed = started.elapsed();
    responder.await??;
    anyhow::ensure!(received == count, "answered {received} of {count}");
    finish(connection, &setup, &[&requests, &replies]).await?;
    Ok(RawRun {
        messages: count,
        elapsed,
    })
}

/// Declares a durable queue.
async fn declare_durable(
    channel: &Channel,
    queue: &str,
    arguments: FieldTable,
) -> Result<(), lapin::Error> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments,
        )
        .await?;
    Ok(())
}

/// A channel in confirm mode.
async fn confirm_channel(connection: &Connection) -> Result<Channel, lapin::Error> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// Consumes `queue` on `channel` with manual acks and at most `prefetch` unacked deliveries.
async fn consume_with_prefetch(
    channel: &Channel,
    queue: &str,
    prefetch: u16,
) -> Result<Consumer, lapin::Error> {
    channel
        .basic_qos(prefetch, BasicQosOptions { global: false })
        .await?;
    channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// Publishes one persistent, mandatory message to `queue` through the default exchange; the
/// returned future resolves with the broker's confirm.
async fn publish_persistent(
    channel: &Channel,
    queue: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<PublisherConfirm, lapin::Error> {
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            properties,
        )
        .await
}

/// Publishes `count` messages of `body_size` bytes and type `message_type` to `queue` on a
/// confirm channel, at most `window` unconfirmed at once; fails on the first nack.
async fn publish_all(
    channel: &Channel,
    queue: &str,
    body_size: usize,
    count: usize,
    window: usize,
    message_type: &str,
) -> anyhow::Result<()> {
    let body = vec![b'x'; body_size];
    let publishes = futures_util::stream::iter(0..count).map(|index| {
        let properties = base_properties(message_type, &index.to_string());
        let body = &body;
        async move {
            publish_persistent(channel, queue, body, properties)
                .await?
                .await
        }
    });
    let mut confirms = publishes.buffer_unordered(window.max(1));
    while let Some(confirm) = confirms.next().await {
        anyhow::ensure!(confirm?.is_ack(), "the broker nacked a {message_type}");
    }
    Ok(())
}

/// Takes `count` deliveries off `consumer` and settles each with `settle`, concurrently (the
/// consumer's prefetch bounds how many are in flight); returns how many were taken.
async fn settle_each<Settle, Settling>(
    mut consumer: Consumer,
    count: usize,
    mut settle: Settle,
) -> anyhow::Result<usize>
where
    Settle: FnMut(Delivery) -> Settling,
    Settling: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let mut taken = 0usize;
    let mut in_flight = tokio::task::JoinSet::new();
    while taken < count {
        let Some(delivery) = consumer.next().await else {
            break;
        };
        in_flight.spawn(settle(delivery?));
        taken += 1;
        while let Some(done) = in_flight.try_join_next() {
            done??;
        }
    }
    while let Some(done) = in_flight.join_next().await {
        done??;
    }
    Ok(taken)
}

/// Deletes the run's queues and closes its connection.
async fn finish(connection: Connection, setup: &Channel, queues: &[&str]) -> anyhow::Result<()> {
    for queue in queues {
        setup
            .queue_delete((*queue).into(), QueueDeleteOptions::default())
            .await?;
    }
    let _ = connection.close(200, "bench done".into()).await;
    Ok(())
}
