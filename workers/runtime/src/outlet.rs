//! The broker side of an outlet writer node: consume only the outlet's own queue as the outlet's
//! own broker user, one delivery at a time, and publish answers to the results exchange with a
//! broker-validated `user_id`.
//!
//! An outlet node has no PostgreSQL and no inbox: its handler (the outlet crate) keeps a local
//! journal and decides per delivery what to answer. This module settles the delivery after the
//! handler decides: answers are published with confirms and then the delivery is acked; a
//! delivery the handler cannot take is rejected without requeue, so the broker dead-letters it
//! through the outlet queue's dead-letter exchange to the central side, which reports it; a
//! delivery interrupted by shutdown is left to the broker, which redelivers it on reconnect.
//! The outlet user may not declare, bind or publish anywhere else (its permissions say so).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use secrecy::SecretString;
use simflow_schemas::registry::{JobSet, Message, MessageRole, OutletWorkJob};
use simflow_schemas::topology::{OUTLET_RESULTS_KEY, RESULTS_EXCHANGE, outlet_queue_name};
use tokio_util::sync::CancellationToken;

use crate::amqp::{self, Publisher, base_properties};
use crate::metrics::{Health, Metrics};
use crate::session::{self, Ended, Reporting};
use crate::worker::outgoing_message_id;

/// How an outlet node reaches the broker.
#[derive(Debug, Clone)]
pub struct OutletConnection {
    /// `amqp://<outlet user>:<password>@host:port/vhost` (or amqps with a client certificate).
    pub uri: SecretString,
    /// The outlet's code; its queue is `simflow.outlet.<code>`.
    pub outlet_code: String,
    /// The broker user the node connects as; set as `user_id` on everything it publishes.
    pub user: String,
}

/// One delivery for the outlet's handler.
#[derive(Debug, Clone)]
pub struct OutletWork {
    /// The job's `message_id`.
    pub message_id: String,
    /// The broker delivered it before (maybe to a node that crashed mid-work).
    pub redelivered: bool,
    /// The decoded job: a read request or a sealed write script.
    pub job: OutletWorkJob,
}

/// What the handler decided.
#[derive(Debug)]
pub enum OutletDecision {
    /// Publish these answers, then ack.
    Answer(Vec<OutletAnswer>),
    /// The work cannot be done by any outlet (poison); the broker dead-letters it.
    Reject {
        /// Why, for the log.
        reason: String,
    },
    /// Stop without settling (shutdown mid-work); the broker redelivers it later.
    LeaveForRedelivery,
}

/// One answer an outlet publishes.
#[derive(Debug, Clone)]
pub struct OutletAnswer {
    /// The `type` property.
    pub message_type: String,
    /// The JSON body.
    pub body: serde_json::Value,
}

impl OutletAnswer {
    /// An answer from a contract type (must be an outlet result).
    pub fn of<M: Message>(message: &M) -> OutletAnswer {
        debug_assert_eq!(M::ROLE, MessageRole::OutletResult);
        OutletAnswer {
            message_type: M::TYPE.to_owned(),
            body: serde_json::to_value(message).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// An outlet node's work handler.
pub trait OutletHandler: Send + Sync + 'static {
    /// Handles one delivery. It may take long (the clerk inserts a card); shutdown is signalled
    /// through `shutdown` and the handler decides whether to finish (never abandon a card write
    /// half way) or leave the work for redelivery.
    fn handle(
        &self,
        work: OutletWork,
        shutdown: CancellationToken,
    ) -> impl Future<Output = OutletDecision> + Send;

    /// Work the node started before it last stopped and whose delivery may never come back
    /// (it expired in the queue while the node was down): finished now, answered once
    /// connected and before consuming, each as `(message_id of the original work, answers)`.
    /// The answers carry the same outgoing message ids as answers to a redelivery would.
    fn recover(
        &self,
        shutdown: CancellationToken,
    ) -> impl Future<Output = Vec<(String, Vec<OutletAnswer>)>> + Send {
        let _ = shutdown;
        async { Vec::new() }
    }

    /// What the node tells the centre each time it connects, after [`OutletHandler::recover`]
    /// and before it consumes (e.g. its reader's identity), as `(message id, answers)`;
    /// published like any answer. Nothing by default.
    fn connected(&self) -> impl Future<Output = Option<(String, Vec<OutletAnswer>)>> + Send {
        async { None }
    }
}

/// Why the outlet consumer stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum OutletError {
    /// The broker refused the outlet's credentials or permissions (not worth retrying).
    #[error("the broker refused outlet {outlet}: {cause}")]
    Refused {
        /// The outlet code.
        outlet: String,
        /// What the broker said.
        cause: String,
    },
}

fn is_access_refused(error: &lapin::Error) -> bool {
    let text = error.to_string();
    text.contains("ACCESS_REFUSED")
        || text.contains("ACCESS-REFUSED")
        || text.contains("403")
        || text.contains("NOT_FOUND")
}

/// Consumes the outlet's queue until `shutdown`, reconnecting with backoff. A refusal by the
/// broker (bad credentials, no permission, no such queue) ends the loop with an error.
pub async fn run<H: OutletHandler>(
    connection: OutletConnection,
    handler: Arc<H>,
    metrics: Arc<Metrics>,
    health: Health,
    shutdown: CancellationToken,
) -> Result<(), OutletError> {
    let component = format!("outlet {}", connection.outlet_code);
    let reporting = Reporting {
        component: &component,
        health: &health,
        metrics: &metrics,
        shutdown: &shutdown,
    };
    session::run(
        reporting,
        is_access_refused,
        || open_session(&connection),
        |session| serve(&connection, &handler, session, reporting),
    )
    .await
    .map_err(|cause| OutletError::Refused {
        outlet: connection.outlet_code.clone(),
        cause,
    })
}

/// A connection consuming the outlet's own queue, and a confirm channel for answers.
struct OutletSession {
    connection: lapin::Connection,
    channel: lapin::Channel,
    consumer: lapin::Consumer,
    publisher: Publisher,
}

async fn open_session(connection: &OutletConnection) -> Result<OutletSession, lapin::Error> {
    let connected = amqp::connect(
        &connection.uri,
        &format!("simflow-outlet-{}", connection.outlet_code),
    )
    .await?;
    let channel = connected.create_channel().await?;
    let consumer = consume_own_queue(
        &channel,
        &outlet_queue_name(&connection.outlet_code),
        &format!("outlet-{}", connection.outlet_code),
    )
    .await?;
    let publisher = Publisher::open(&connected).await?;
    Ok(OutletSession {
        connection: connected,
        channel,
        consumer,
        publisher,
    })
}

/// Answers what the node finished before it last stopped, then settles deliveries one at a
/// time until shutdown or a lost connection.
async fn serve<H: OutletHandler>(
    connection: &OutletConnection,
    handler: &Arc<H>,
    session: OutletSession,
    reporting: Reporting<'_>,
) -> Ended {
    let OutletSession {
        connection: connected,
        channel,
        mut consumer,
        publisher,
    } = session;
    let shutdown = reporting.shutdown;
    // Unfinished work from before a crash, answered before anything new is taken. The
    // consumer exists already, but with prefetch 1 the broker holds back all but one
    // delivery, which waits until this is done.
    for (message_id, answers) in handler.recover(shutdown.clone()).await {
        if let Err(error) = publish_answers(connection, &publisher, &message_id, &answers).await {
            tracing::warn!(%error, message_id, "could not publish a recovered answer; it is tried again at the next start");
        }
    }
    if let Some((message_id, answers)) = handler.connected().await
        && let Err(error) = publish_answers(connection, &publisher, &message_id, &answers).await
    {
        tracing::warn!(%error, "could not publish the connect report; it is sent again at the next connect");
    }
    reporting.waiting();
    let ended = loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                let _ = channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()).await;
                break Ended::Shutdown;
            }
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    let settled = settle(connection, handler, &publisher, delivery, shutdown).await;
                    reporting.work_settled();
                    if let Err(error) = settled {
                        tracing::warn!(%error, "could not settle outlet work; it will be redelivered");
                        break Ended::ConnectionLost;
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "outlet consumer error");
                    if is_access_refused(&error) {
                        break Ended::Refused(error.to_string());
                    }
                    break Ended::ConnectionLost;
                }
                None => break Ended::ConnectionLost,
            },
        }
    };
    let _ = channel.close(200, "bye".into()).await;
    let _ = connected.close(200, "bye".into()).await;
    if matches!(ended, Ended::ConnectionLost) {
        // Let a broken connection finish closing before the next try.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ended
}

/// Starts consuming an outlet's queue, one delivery at a time. The declare is passive (the
/// outlet may not declare, and a passive declare needs no permission: it only says the queue
/// exists); the consume is what needs `read` on the queue, so it is what a wrong outlet's
/// credentials are refused at.
async fn consume_own_queue(
    channel: &lapin::Channel,
    queue: &str,
    tag: &str,
) -> Result<lapin::Consumer, lapin::Error> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .basic_qos(1, BasicQosOptions { global: false })
        .await?;
    channel
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// Checks once whether the outlet's credentials may consume its queue (for provisioning checks
/// and clear errors at start-up): `Ok(())`, or the broker's refusal.
pub async fn check_access(connection: &OutletConnection) -> Result<(), OutletError> {
    let refused = |cause: String| OutletError::Refused {
        outlet: connection.outlet_code.clone(),
        cause,
    };
    let connected = amqp::connect(&connection.uri, "simflow-outlet-check")
        .await
        .map_err(|error| refused(error.to_string()))?;
    let channel = connected
        .create_channel()
        .await
        .map_err(|error| refused(error.to_string()))?;
    let queue = outlet_queue_name(&connection.outlet_code);
    // The check consumer takes nothing it keeps: anything delivered goes back when the
    // channel closes.
    let result = async {
        let consumer = consume_own_queue(&channel, &queue, "simflow-outlet-check").await?;
        channel
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await
    }
    .await;
    let _ = connected.close(200, "checked".into()).await;
    result.map_err(|error| refused(error.to_string()))
}

async fn settle<H: OutletHandler>(
    connection: &OutletConnection,
    handler: &Arc<H>,
    publisher: &Publisher,
    delivery: lapin::message::Delivery,
    shutdown: &CancellationToken,
) -> Result<(), lapin::Error> {
    let properties = &delivery.properties;
    let message_id = properties
        .message_id()
        .as_ref()
        .map(|id| id.as_str().to_owned())
        .unwrap_or_default();
    let message_type = properties
        .kind()
        .as_ref()
        .map(|kind| kind.as_str().to_owned())
        .unwrap_or_default();
    let decision = match OutletWorkJob::decode(&message_type, &delivery.data) {
        Ok(job) if !message_id.is_empty() => {
            let work = OutletWork {
                message_id: message_id.clone(),
                redelivered: delivery.redelivered,
                job,
            };
            handler.handle(work, shutdown.clone()).await
        }
        Ok(job) => OutletDecision::Reject {
            reason: format!("{} has no message id", job.message_type()),
        },
        Err(error) => OutletDecision::Reject {
            reason: error.to_string(),
        },
    };
    match decision {
        OutletDecision::Answer(answers) => {
            match publish_answers(connection, publisher, &message_id, &answers).await {
                Ok(()) => {}
                Err(amqp::PublishError::Broker(error)) => return Err(error),
                Err(error) => {
                    // Nacked or unroutable: keep the work; the node answers again on redelivery.
                    tracing::warn!(%error, "the broker did not take an outlet answer");
                    return requeue(&delivery).await;
                }
            }
            delivery.acker.ack(BasicAckOptions::default()).await?;
        }
        OutletDecision::Reject { reason } => {
            tracing::error!(
                message_id,
                reason,
                "outlet work rejected; the broker dead-letters it"
            );
            delivery
                .acker
                .reject(BasicRejectOptions { requeue: false })
                .await?;
        }
        OutletDecision::LeaveForRedelivery => requeue(&delivery).await?,
    }
    Ok(())
}

/// Gives a delivery back to the queue for redelivery (also dead letters only looked at).
pub(crate) async fn requeue(delivery: &lapin::message::Delivery) -> Result<(), lapin::Error> {
    delivery
        .acker
        .nack(BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        })
        .await?;
    Ok(())
}

/// Publishes a node's answers to one piece of work with confirms, the outlet's `user_id`, and
/// outgoing message ids derived from the work's message id.
async fn publish_answers(
    connection: &OutletConnection,
    publisher: &Publisher,
    message_id: &str,
    answers: &[OutletAnswer],
) -> Result<(), amqp::PublishError> {
    for (index, answer) in answers.iter().enumerate() {
        let body = serde_json::to_vec(&answer.body).unwrap_or_default();
        let properties = base_properties(
            &answer.message_type,
            &outgoing_message_id(message_id, index),
        )
        .with_correlation_id(message_id.into())
        .with_user_id(connection.user.as_str().into());
        publisher
            .publish(RESULTS_EXCHANGE, OUTLET_RESULTS_KEY, &body, properties)
            .await?;
    }
    Ok(())
}

/// The broker user name of an outlet in a vhost. Broker users are global, vhosts are not:
/// outside the default vhost the name carries the vhost, so two deployments (or two test
/// vhosts) on one broker never share an outlet user.
pub fn outlet_user(vhost: &str, outlet_code: &str) -> String {
    if vhost == "/" {
        format!("simflow-outlet-{outlet_code}")
    } else {
        format!("simflow-outlet-{outlet_code}.{vhost}")
    }
}

/// Whether an outlet code is safe in queue names, user names and permission patterns.
pub fn valid_outlet_code(outlet_code: &str) -> bool {
    !outlet_code.is_empty()
        && outlet_code.len() <= 32
        && outlet_code
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// Gives an outlet its queue and its own broker user, which may read only that queue and
/// publish only to the results exchange (configure nothing). Idempotent: provisioning again
/// sets the password and permissions anew.
pub async fn provision(
    client: &crate::amqp::Client,
    management: &crate::management::Management,
    vhost: &str,
    outlet_code: &str,
    password: &SecretString,
    params: &simflow_schemas::topology::TopologyParams,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        valid_outlet_code(outlet_code),
        "outlet code {outlet_code:?}: use 1–32 letters, digits, - or _"
    );
    client
        .declare(&simflow_schemas::topology::outlet_topology(
            outlet_code,
            params,
        ))
        .await?;
    let user = outlet_user(vhost, outlet_code);
    management.put_user(&user, password).await?;
    let read = format!("^{}$", regex_escape(&outlet_queue_name(outlet_code)));
    let write = format!("^{}$", regex_escape(RESULTS_EXCHANGE));
    management
        .set_permissions(vhost, &user, "^$", &write, &read)
        .await?;
    Ok(())
}

/// Takes an outlet's broker user away (its connections are closed by the broker). The queue
/// stays until it is drained or expires, so nothing in it is lost.
pub async fn revoke(
    management: &crate::management::Management,
    vhost: &str,
    outlet_code: &str,
) -> anyhow::Result<()> {
    management
        .delete_user(&outlet_user(vhost, outlet_code))
        .await
}

fn regex_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() + 4);
    for character in text.chars() {
        if "\\.+*?()|[]{}^$".contains(character) {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outlet_codes_are_checked_before_they_reach_names_and_patterns() {
        assert!(valid_outlet_code("HX0001"));
        assert!(valid_outlet_code("hexi-01_a"));
        assert!(!valid_outlet_code(""));
        assert!(!valid_outlet_code("a.b"));
        assert!(!valid_outlet_code(".*"));
        assert!(!valid_outlet_code(&"x".repeat(33)));
    }

    #[test]
    fn permission_patterns_match_only_the_outlets_own_queue() {
        assert_eq!(
            regex_escape("simflow.outlet.HX0001"),
            "simflow\\.outlet\\.HX0001"
        );
        assert_eq!(outlet_user("/", "HX0001"), "simflow-outlet-HX0001");
        assert_eq!(
            outlet_user("staging", "HX0001"),
            "simflow-outlet-HX0001.staging"
        );
    }
}
