//! The raw broker limit for benchmarks: publish with confirms and consume with manual acks on a
//! quorum queue declared like simflow's work queues, with nothing else in the way.
//!
//! Benchmarks print simflow's own throughput next to this number measured in the same run on the
//! same machine, so the ratio means something on a shared, noisy machine.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
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

/// Publishes `count` persistent messages of `body_size` bytes with confirms (up to `window` in
/// flight) to a fresh quorum queue shaped like a work queue, while a consumer with `prefetch`
/// acks each; returns when the last one is acked. The queue is deleted afterwards.
pub async fn raw_round_trip(
    uri: &SecretString,
    body_size: usize,
    count: usize,
    prefetch: u16,
    window: usize,
) -> anyhow::Result<RawRun> {
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
    setup
        .queue_declare(
            queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            amqp::field_table(&arguments),
        )
        .await?;

    let consume = connection.create_channel().await?;
    consume
        .basic_qos(prefetch, BasicQosOptions { global: false })
        .await?;
    let mut consumer = consume
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let consumer_tag = consumer.tag();
    let publish = connection.create_channel().await?;

    publish
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let body = vec![b'x'; body_size];

    let started = Instant::now();
    let consumer_task = tokio::spawn(async move {
        let mut acked = 0usize;
        let mut acks = tokio::task::JoinSet::new();
        while acked < count {
            let Some(delivery) = consumer.next().await else {
                break;
            };
            let delivery = delivery?;
            acks.spawn(async move { delivery.acker.ack(BasicAckOptions::default()).await });
            acked += 1;
            while let Some(done) = acks.try_join_next() {
                done??;
            }
        }
        while let Some(done) = acks.join_next().await {
            done??;
        }
        anyhow::Ok(acked)
    });
    let publishes = futures_util::stream::iter(0..count).map(|index| {
        let publish = publish.clone();
        let body = &body;
        let queue = queue.as_str();
        async move {
            let properties = base_properties("bench.raw.v1", &index.to_string());
            publish
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
                .await?
                .await
        }
    });
    let mut confirms = publishes.buffer_unordered(window.max(1));
    while let Some(confirm) = confirms.next().await {
        anyhow::ensure!(confirm?.is_ack(), "the broker nacked a raw message");
    }
    let consumed = consumer_task.await??;
    let elapsed = started.elapsed();
    anyhow::ensure!(consumed == count, "consumed {consumed} of {count}");
    consume
        .basic_cancel(consumer_tag, Default::default())
        .await?;
    consume.close(200, "bench done".into()).await?;
    setup
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;

    let _ = connection.close(200, "bench done".into()).await;
    Ok(RawRun {
        messages: count,
        elapsed,
    })
}

/// The raw broker limit of a job that is answered: like [`raw_round_trip`], but a responder
/// consumes each message (with `prefetch`), publishes one persistent answer with a confirm to
/// a reply queue, then acks; a second consumer takes the answers. That is the broker traffic
/// of one simflow job and its outcome event, with no database and no rules.
pub async fn raw_request_reply(
    uri: &SecretString,
    body_size: usize,
    count: usize,
    prefetch: u16,
    window: usize,
) -> anyhow::Result<RawRun> {
    let connection = amqp::connect(uri, "simflow-bench-raw-reply").await?;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let requests = format!("simflow.bench.requests.{suffix}");
    let replies = format!("simflow.bench.replies.{suffix}");
    let setup = connection.create_channel().await?;
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), amqp::text_value("quorum"));
    for queue in [&requests, &replies] {
        setup
            .queue_declare(
                queue.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                arguments.clone(),
            )
            .await?;
    }

    // The responder: answer with a confirm, then ack, for up to `prefetch` at once.
    let respond = connection.create_channel().await?;
    respond
        .basic_qos(prefetch, BasicQosOptions { global: false })
        .await?;
    respond
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut incoming = respond
        .basic_consume(
            requests.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let reply_queue = replies.clone();
    let responder = tokio::spawn(async move {
        let mut answered = 0usize;
        let mut in_flight = tokio::task::JoinSet::new();
        while answered < count {
            let Some(delivery) = incoming.next().await else {
                break;
            };
            let delivery = delivery?;
            let channel = respond.clone();
            let reply_queue = reply_queue.clone();
            in_flight.spawn(async move {
                let confirm = channel
                    .basic_publish(
                        "".into(),
                        reply_queue.as_str().into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        &delivery.data,
                        base_properties("bench.reply.v1", "reply"),
                    )
                    .await?
                    .await?;
                anyhow::ensure!(confirm.is_ack(), "the broker nacked a reply");
                delivery.acker.ack(BasicAckOptions::default()).await?;
                anyhow::Ok(())
            });
            answered += 1;
            while let Some(done) = in_flight.try_join_next() {
                done??;
            }
        }
        while let Some(done) = in_flight.join_next().await {
            done??;
        }
        anyhow::Ok(())
    });

    let collect = connection.create_channel().await?;
    collect
        .basic_qos(1000, BasicQosOptions { global: false })
        .await?;
    let mut answers = collect
        .basic_consume(
            replies.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
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

    let publish = connection.create_channel().await?;
    publish
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let body = vec![b'x'; body_size];
    let started = Instant::now();
    let publishes = futures_util::stream::iter(0..count).map(|index| {
        let publish = publish.clone();
        let body = &body;
        let queue = requests.as_str();
        async move {
            publish
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    body,
                    base_properties("bench.request.v1", &index.to_string()),
                )
                .await?
                .await
        }
    });
    let mut confirms = publishes.buffer_unordered(window.max(1));
    while let Some(confirm) = confirms.next().await {
        anyhow::ensure!(confirm?.is_ack(), "the broker nacked a request");
    }
    let received = collector.await??;
    let elapsed = started.elapsed();
    responder.await??;
    anyhow::ensure!(received == count, "answered {received} of {count}");
    for queue in [&requests, &replies] {
        setup
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    let _ = connection.close(200, "bench done".into()).await;
    Ok(RawRun {
        messages: count,
        elapsed,
    })
}
