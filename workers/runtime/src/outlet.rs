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
    /// Further nodes of the same broker cluster (same user and vhost), tried in turn after
    /// `uri` when a node does not answer or goes away; empty for a single node.
    pub failover_uris: Vec<SecretString>,
    /// The outlet's code; its queue is `simflow.outlet.<code>`.
    pub outlet_code: String,
    /// The broker user the node connects as; set as `user_id` on everything it publishes.
    pub user: String,
    /// For `amqps`: the CA the broker's certificate must chain to and the node's client
    /// certificate (see [`crate::outlet_tls`]); `None` for a password over plain `amqp`.
    pub tls: Option<crate::outlet_tls::LoadedTls>,
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

    /// How often the node says it is alive (on the results path, beside its work, also while
    /// a card is being written); `None`: never.
    fn heartbeat_every(&self) -> Option<Duration> {
        None
    }

    /// What the node says when it says it is alive (asked at every beat); `None`: skip this one.
    fn heartbeat(&self) -> Option<OutletAnswer> {
        None
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
    /// The server's TLS certificate does not chain to the CA the node trusts, or does not name
    /// the host the node connects to: the node does not talk to it (not worth retrying).
    #[error(
        "outlet {outlet}: the broker's TLS certificate is not trusted (it must be signed by the CA in the node's tls_ca_cert and name the host of broker_uri); not connecting: {cause}"
    )]
    UntrustedServer {
        /// The outlet code.
        outlet: String,
        /// What the TLS library said.
        cause: String,
    },
}

/// A TLS failure on our side: the server's certificate did not verify.
fn is_untrusted_server(text: &str) -> bool {
    text.contains("invalid peer certificate")
}

fn refusal(outlet: &str, cause: String) -> OutletError {
    if is_untrusted_server(&cause) {
        OutletError::UntrustedServer {
            outlet: outlet.to_owned(),
            cause,
        }
    } else {
        OutletError::Refused {
            outlet: outlet.to_owned(),
            cause,
        }
    }
}

fn is_access_refused(error: &lapin::Error) -> bool {
    let text = error.to_string();
    text.contains("ACCESS_REFUSED")
        || text.contains("ACCESS-REFUSED")
        || text.contains("403")
        || text.contains("NOT_FOUND")
        || is_untrusted_server(&text)
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
    let addresses = connection.addresses();
    session::run(
        reporting,
        is_access_refused,
        || open_session(&connection, &addresses),
        |session| serve(&connection, &handler, session, reporting),
    )
    .await
    .map_err(|cause| refusal(&connection.outlet_code, cause))
}

/// A connection consuming the outlet's own queue, and a confirm channel for answers.
struct OutletSession {
    connection: lapin::Connection,
    channel: lapin::Channel,
    consumer: lapin::Consumer,
    publisher: Publisher,
}

impl OutletConnection {
    /// `uri` then `failover_uris`, as one list to connect through.
    pub fn addresses(&self) -> crate::brokers::BrokerAddresses {
        let mut uris = vec![self.uri.clone()];
        uris.extend(self.failover_uris.iter().cloned());
        crate::brokers::BrokerAddresses::new(uris)
            .unwrap_or_else(|_| crate::brokers::BrokerAddresses::single(self.uri.clone()))
    }
}

async fn open_session(
    connection: &OutletConnection,
    addresses: &crate::brokers::BrokerAddresses,
) -> Result<OutletSession, lapin::Error> {
    let connected = addresses
        .connect_with(
            &format!("simflow-outlet-{}", connection.outlet_code),
            connection.tls.as_ref(),
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
    let heartbeat = handler.heartbeat_every().map(|every| {
        let handler = Arc::clone(handler);
        let publisher = publisher.clone();
        let user = connection.user.clone();
        tokio::spawn(async move {
            let mut beats = tokio::time::interval(every);
            beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                beats.tick().await;
                if let Some(answer) = handler.heartbeat()
                    && let Err(error) = publish_news(
                        &user,
                        &publisher,
                        &uuid::Uuid::new_v4().to_string(),
                        &answer,
                    )
                    .await
                {
                    tracing::warn!(%error, "the heartbeat was not published");
                }
            }
        })
    });
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
    if let Some(heartbeat) = heartbeat {
        heartbeat.abort();
    }
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
    let refused = |cause: String| refusal(&connection.outlet_code, cause);
    let connected = connection
        .addresses()
        .connect_with("simflow-outlet-check", connection.tls.as_ref())
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

/// Publishes something the node says on its own (not an answer to work: a heartbeat, a key
/// rotation) with confirms and the outlet's `user_id`.
async fn publish_news(
    user: &str,
    publisher: &Publisher,
    message_id: &str,
    answer: &OutletAnswer,
) -> Result<(), amqp::PublishError> {
    let body = serde_json::to_vec(&answer.body).unwrap_or_default();
    let properties = base_properties(&answer.message_type, message_id).with_user_id(user.into());
    publisher
        .publish(RESULTS_EXCHANGE, OUTLET_RESULTS_KEY, &body, properties)
        .await
}

/// Publishes one message as the outlet (its own connection, confirmed), for what a node says
/// outside its consume loop (`simflow outlet rotate-key`). The same `message_id` for the same
/// news lets the centre's inbox take it once.
pub async fn announce(
    connection: &OutletConnection,
    message_id: &str,
    answer: &OutletAnswer,
) -> anyhow::Result<()> {
    let connected = amqp::connect(
        &connection.uri,
        &format!("simflow-outlet-{}-announce", connection.outlet_code),
    )
    .await?;
    let result = async {
        let publisher = Publisher::open(&connected).await?;
        publish_news(&connection.user, &publisher, message_id, answer).await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let _ = connected.close(200, "announced".into()).await;
    result
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

/// Gives an outlet its queue and its own broker user without a password: the user logs in
/// only with `EXTERNAL`, by a client certificate whose common name is [`outlet_user`]
/// (see [`crate::outlet_tls`]). Same permissions as [`provision`]; provisioning an outlet
/// that had a password this way takes the password away.
pub async fn provision_external(
    client: &crate::amqp::Client,
    management: &crate::management::Management,
    vhost: &str,
    outlet_code: &str,
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
    management.put_user_without_password(&user).await?;
    let read = format!("^{}$", regex_escape(&outlet_queue_name(outlet_code)));
    let write = format!("^{}$", regex_escape(RESULTS_EXCHANGE));
    management
        .set_permissions(vhost, &user, "^$", &write, &read)
        .await?;
    Ok(())
}

/// Takes an outlet's broker user away and closes what is left of its connections (deleting a
/// user stops new logins; closing makes sure no open connection outlives it). From the moment
/// this returns nothing can publish or consume as that outlet. The queue stays: what happens to
/// the work in it is the caller's decision ([`delete_queue`]).
pub async fn revoke(
    management: &crate::management::Management,
    vhost: &str,
    outlet_code: &str,
) -> anyhow::Result<()> {
    let user = outlet_user(vhost, outlet_code);
    management.delete_user(&user).await?;
    for connection in management.connections(vhost).await? {
        // The broker may have closed it already as the user went.
        if connection.user == user
            && let Err(error) = management.close_connection(&connection.name).await
        {
            tracing::debug!(%error, "closing a revoked outlet's connection");
        }
    }
    Ok(())
}

/// Deletes an outlet's queue with whatever it still holds (after [`revoke`], once the caller
/// has settled that work itself). A queue that is gone already is fine.
pub async fn delete_queue(
    client: &crate::amqp::Client,
    outlet_code: &str,
) -> Result<(), lapin::Error> {
    client
        .publisher()
        .channel()
        .queue_delete(
            outlet_queue_name(outlet_code).as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await?;
    Ok(())
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
