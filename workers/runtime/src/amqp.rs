//! Broker plumbing: connecting, declaring the topology, publishing with confirms, and the
//! small client that CLIs, the demo and tests use to publish jobs and watch events.
//!
//! Every publish here is persistent, `mandatory` and confirmed: a nack or a returned message is
//! an error the caller must handle, never a silent loss.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::Confirmation;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use secrecy::ExposeSecret;
use simflow_schemas::registry::Message;
use simflow_schemas::topology::{ArgValue, EVENTS_EXCHANGE, ExchangeKind as SpecKind, Topology};

use crate::outcome::Outgoing;

/// Outcome header: the message id of the job this answers (the `correlation_id` property is
/// the publisher's own, when it set one).
pub const JOB_MESSAGE_ID_HEADER: &str = "x-simflow-job-message-id";

/// What an outcome answers.
#[derive(Debug, Clone, Copy)]
pub struct AnswerTo<'a> {
    /// The job's message id.
    pub job_message_id: &'a str,
    /// The `correlation_id` the outcome carries: the publisher's, or the job's message id.
    pub correlation_id: &'a str,
    /// The publisher's `reply_to` queue, which gets a copy of events.
    pub reply_to: Option<&'a str>,
}

/// The routing key of [`Publisher::probe`] on the default exchange: no queue has this name.
pub const READINESS_PROBE_KEY: &str = "simflow.readiness-probe";

/// Header carrying the try number of a job (1 for the first try).
pub const ATTEMPT_HEADER: &str = "x-simflow-attempt";
/// Dead-letter header: stable reason code.
pub const REASON_CODE_HEADER: &str = "x-simflow-reason-code";
/// Dead-letter header: reason in Chinese.
pub const REASON_ZH_HEADER: &str = "x-simflow-reason-zh";
/// Dead-letter header: reason in English.
pub const REASON_EN_HEADER: &str = "x-simflow-reason-en";
/// Dead-letter header: technical detail for ops (never a secret).
pub const REASON_DETAIL_HEADER: &str = "x-simflow-reason-detail";
/// Dead-letter header: tries made.
pub const ATTEMPTS_HEADER: &str = "x-simflow-attempts";
/// Dead-letter header: the worker that gave up.
pub const WORKER_HEADER: &str = "x-simflow-worker";
/// Retry and dead-letter header: when the job first failed (RFC 3339).
pub const FIRST_FAILURE_HEADER: &str = "x-simflow-first-failure";
/// Dead-letter header: the exchange the job was first published to.
pub const ORIGINAL_EXCHANGE_HEADER: &str = "x-simflow-original-exchange";
/// Dead-letter header: the routing key the job was first published with.
pub const ORIGINAL_ROUTING_KEY_HEADER: &str = "x-simflow-original-routing-key";

/// Why a publish did not land.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The broker connection or channel failed.
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    /// The broker refused the message (nack): publish again.
    #[error("the broker refused the message (nack)")]
    Nacked,
    /// No queue is bound for the routing key (`mandatory` returned it).
    #[error("no queue is bound to {exchange:?} with routing key {routing_key:?}")]
    Unroutable {
        /// The exchange.
        exchange: String,
        /// The routing key.
        routing_key: String,
    },
}

/// Opens a connection named after the process, so ops can tell connections apart.
pub async fn connect(uri: &secrecy::SecretString, name: &str) -> Result<Connection, lapin::Error> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(uri.expose_secret(), properties).await
}

/// Connects over `amqps` with a TLS configuration of the caller's: the server must chain to
/// its CA (nothing else is trusted), and its client certificate, if any, is presented
/// (`?auth_mechanism=external` in the URI makes it the login).
pub async fn connect_tls(
    uri: &secrecy::SecretString,
    name: &str,
    tls: &crate::outlet_tls::LoadedTls,
) -> Result<Connection, lapin::Error> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    lapin::DefaultConnectionBuilder::new()?
        .with_uri_str(uri.expose_secret().to_owned())
        .with_properties(properties)
        .with_tls_config(tls.0.clone())
        .connect()
        .await
}

/// The vhost an AMQP URI names (`/` when it names none).
pub fn vhost_of(uri: &secrecy::SecretString) -> anyhow::Result<String> {
    let parsed: lapin::uri::AMQPUri = uri
        .expose_secret()
        .parse()
        .map_err(|error: String| anyhow::anyhow!("amqp.uri is not a valid AMQP URI: {error}"))?;
    Ok(parsed.vhost)
}

/// Turns topology arguments into an AMQP field table.
pub fn field_table(arguments: &BTreeMap<String, ArgValue>) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in arguments {
        let value = match value {
            ArgValue::Str(text) => AMQPValue::LongString(text.as_str().into()),
            ArgValue::Int(number) => AMQPValue::LongLongInt(*number),
            ArgValue::Bool(flag) => AMQPValue::Boolean(*flag),
        };
        table.insert(name.as_str().into(), value);
    }
    table
}

/// Declares a topology. Idempotent: declaring what exists with the same arguments is a no-op.
pub async fn declare(channel: &Channel, topology: &Topology) -> Result<(), lapin::Error> {
    for exchange in &topology.exchanges {
        let kind = match exchange.kind {
            SpecKind::Direct => ExchangeKind::Direct,
            SpecKind::Topic => ExchangeKind::Topic,
            SpecKind::Fanout => ExchangeKind::Fanout,
        };
        channel
            .exchange_declare(
                exchange.name.as_str().into(),
                kind,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                field_table(&exchange.arguments),
            )
            .await?;
    }
    for queue in &topology.queues {
        channel
            .queue_declare(
                queue.name.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                field_table(&queue.arguments),
            )
            .await?;
    }
    for binding in &topology.bindings {
        channel
            .queue_bind(
                binding.queue.as_str().into(),
                binding.exchange.as_str().into(),
                binding.routing_key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// Deletes the queues of a topology (used when an outlet is revoked).
pub async fn delete_queues(channel: &Channel, topology: &Topology) -> Result<(), lapin::Error> {
    for queue in &topology.queues {
        channel
            .queue_delete(queue.name.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    Ok(())
}

/// The properties every simflow message carries.
pub fn base_properties(message_type: &str, message_id: &str) -> BasicProperties {
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default();
    BasicProperties::default()
        .with_message_id(message_id.into())
        .with_type(message_type.into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_timestamp(now)
}

/// Reads a string header.
pub fn header_str(properties: &BasicProperties, name: &str) -> Option<String> {
    let headers = properties.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.as_str().to_owned()),
        _ => None,
    }
}

/// Reads an integer header.
pub fn header_u32(properties: &BasicProperties, name: &str) -> Option<u32> {
    let headers = properties.headers().as_ref()?;
    let number: i64 = match headers.inner().get(name)? {
        AMQPValue::LongLongInt(n) => *n,
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        AMQPValue::ShortUInt(n) => i64::from(*n),
        AMQPValue::ShortShortInt(n) => i64::from(*n),
        AMQPValue::ShortShortUInt(n) => i64::from(*n),
        _ => return None,
    };
    u32::try_from(number).ok()
}

/// Returns the properties with some headers set (others kept).
pub fn with_headers(
    properties: BasicProperties,
    set: &[(&str, AMQPValue)],
    remove: &[&str],
) -> BasicProperties {
    let mut headers: BTreeMap<ShortString, AMQPValue> = properties
        .headers()
        .as_ref()
        .map(|table| table.inner().clone())
        .unwrap_or_default();
    for name in remove {
        headers.remove(&ShortString::from(*name));
    }
    for (name, value) in set {
        headers.insert((*name).into(), value.clone());
    }
    properties.with_headers(FieldTable::from(headers))
}

/// Header carrying the validated `user_id` of a message simflow republished (a retry or a dead
/// letter): simflow's own user cannot publish a `user_id` that is not its own.
pub const ORIGINAL_USER_ID_HEADER: &str = "x-simflow-original-user-id";

/// The properties of a copy simflow republishes under its own broker user: everything of the
/// original but `user_id`, which moves to [`ORIGINAL_USER_ID_HEADER`].
pub fn republishable(properties: &BasicProperties) -> BasicProperties {
    let mut copy = BasicProperties::default();
    if let Some(value) = properties.content_type() {
        copy = copy.with_content_type(value.clone());
    }
    if let Some(value) = properties.content_encoding() {
        copy = copy.with_content_encoding(value.clone());
    }
    if let Some(value) = properties.headers() {
        copy = copy.with_headers(value.clone());
    }
    if let Some(value) = properties.delivery_mode() {
        copy = copy.with_delivery_mode(*value);
    }
    if let Some(value) = properties.priority() {
        copy = copy.with_priority(*value);
    }
    if let Some(value) = properties.correlation_id() {
        copy = copy.with_correlation_id(value.clone());
    }
    if let Some(value) = properties.reply_to() {
        copy = copy.with_reply_to(value.clone());
    }
    if let Some(value) = properties.message_id() {
        copy = copy.with_message_id(value.clone());
    }
    if let Some(value) = properties.timestamp() {
        copy = copy.with_timestamp(*value);
    }
    if let Some(value) = properties.kind() {
        copy = copy.with_type(value.clone());
    }
    if let Some(value) = properties.app_id() {
        copy = copy.with_app_id(value.clone());
    }
    match properties.user_id() {
        Some(user) => with_headers(
            copy,
            &[(ORIGINAL_USER_ID_HEADER, text_value(user.as_str()))],
            &[],
        ),
        None => copy,
    }
}

/// A string header value.
pub fn text_value(text: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(text))
}

/// A channel in confirm mode; every publish waits for the broker's confirm.
#[derive(Debug, Clone)]
pub struct Publisher {
    channel: Channel,
}

impl Publisher {
    /// Opens a confirm-mode channel on `connection`.
    pub async fn open(connection: &Connection) -> Result<Publisher, lapin::Error> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Publisher { channel })
    }

    /// Publishes one message (mandatory, persistent) and waits for the confirm.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        self.send(exchange, routing_key, body, properties)
            .await?
            .confirmed()
            .await
    }

    /// Publishes one message (mandatory, persistent) without waiting for the confirm: many
    /// sends, then their confirms awaited together, cost one round trip instead of many.
    pub async fn send(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<Unconfirmed, PublishError> {
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                properties.with_delivery_mode(2),
            )
            .await?;
        Ok(Unconfirmed {
            confirm,
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            required: true,
        })
    }

    /// Publishes an empty, transient message nobody receives (the default exchange, a routing
    /// key no queue has, not mandatory) and does not wait for its confirm. RabbitMQ tells a
    /// connection of a memory or disk alarm (`connection.blocked`) only once it has published:
    /// an idle worker would otherwise never learn that its next outcome cannot be published.
    pub async fn probe(&self) -> Result<(), lapin::Error> {
        let _unconfirmed = self
            .channel
            .basic_publish(
                "".into(),
                READINESS_PROBE_KEY.into(),
                BasicPublishOptions::default(),
                b"",
                BasicProperties::default().with_delivery_mode(1),
            )
            .await?;
        Ok(())
    }

    /// Publishes a stored outgoing message with its deterministic id, answering a job, and
    /// waits for the confirm.
    pub async fn publish_outgoing(
        &self,
        message: &Outgoing,
        message_id: &str,
        answer_to: &AnswerTo<'_>,
    ) -> Result<(), PublishError> {
        all_confirmed(self.send_outgoing(message, message_id, answer_to).await?).await
    }

    /// Sends a stored outgoing message (and its copy to `reply_to`, whose loss is only
    /// logged: the requester's own queue may be gone, the event on the events exchange stands).
    pub async fn send_outgoing(
        &self,
        message: &Outgoing,
        message_id: &str,
        answer_to: &AnswerTo<'_>,
    ) -> Result<Vec<Unconfirmed>, PublishError> {
        let body = serde_json::to_vec(&message.body).unwrap_or_default();
        let mut properties = with_headers(
            base_properties(&message.message_type, message_id)
                .with_correlation_id(answer_to.correlation_id.into()),
            &[(JOB_MESSAGE_ID_HEADER, text_value(answer_to.job_message_id))],
            &[],
        );
        let correlation_id = answer_to.correlation_id;
        let reply_to = answer_to.reply_to;
        if let Some(expiration) = message.expiration_ms {
            properties = properties.with_expiration(expiration.to_string().into());
        }
        let mut sent = vec![
            self.send(
                &message.exchange,
                &message.routing_key,
                &body,
                properties.clone(),
            )
            .await?,
        ];
        tracing::debug!(message_id, correlation_id, routing_key = %message.routing_key, "published outcome");
        if message.copy_to_reply_to
            && let Some(reply_to) = reply_to
        {
            let mut copy = self.send("", reply_to, &body, properties).await?;
            copy.required = false;
            sent.push(copy);
        }
        Ok(sent)
    }

    /// The underlying channel (for consumers that share it).
    pub fn channel(&self) -> &Channel {
        &self.channel
    }
}

/// A message sent but not yet confirmed by the broker.
#[derive(Debug)]
pub struct Unconfirmed {
    confirm: lapin::PublisherConfirm,
    exchange: String,
    routing_key: String,
    /// Its loss fails the publish; a copy whose loss is tolerated says false.
    required: bool,
}

impl Unconfirmed {
    /// Waits for the broker's answer: taken, refused (nack) or returned (no route).
    pub async fn confirmed(self) -> Result<(), PublishError> {
        let outcome = match self.confirm.await? {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(_returned)) => Err(PublishError::Unroutable {
                exchange: self.exchange,
                routing_key: self.routing_key,
            }),
            Confirmation::Nack(_) => Err(PublishError::Nacked),
        };
        match outcome {
            Err(error) if !self.required => {
                tracing::warn!(%error, "a copy to reply_to was not taken; the event stands");
                Ok(())
            }
            outcome => outcome,
        }
    }
}

/// Waits for every confirm; the first failure wins (all are awaited regardless).
pub async fn all_confirmed(sent: Vec<Unconfirmed>) -> Result<(), PublishError> {
    let mut result = Ok(());
    for unconfirmed in sent {
        if let Err(error) = unconfirmed.confirmed().await
            && result.is_ok()
        {
            result = Err(error);
        }
    }
    result
}

/// A received event, decoded just enough for tests, the demo and CLIs.
#[derive(Debug, Clone)]
pub struct ReceivedEvent {
    /// The routing key it arrived with.
    pub routing_key: String,
    /// The `type` property.
    pub message_type: String,
    /// The `message_id` property.
    pub message_id: String,
    /// The `correlation_id` property (the publisher's, or the job's message id).
    pub correlation_id: Option<String>,
    /// The `x-simflow-job-message-id` header: the message id of the job this answers.
    pub job_message_id: Option<String>,
    /// The JSON body.
    pub body: serde_json::Value,
}

impl ReceivedEvent {
    /// Decodes the body as a contract type.
    pub fn decode<M: Message>(&self) -> anyhow::Result<M> {
        anyhow::ensure!(
            self.message_type == M::TYPE,
            "expected a {} event, got {} on {}",
            M::TYPE,
            self.message_type,
            self.routing_key
        );
        Ok(serde_json::from_value(self.body.clone())?)
    }
}

/// A connection for publishing jobs and watching events: what an upstream system does.
#[derive(Debug)]
pub struct Client {
    connection: Connection,
    publisher: Publisher,
    /// Why the broker blocks this connection's publishes, while it does.
    blocked: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl Client {
    /// Connects, and follows the broker's blocked/unblocked notifications (a memory or disk
    /// alarm makes every publish wait).
    pub async fn connect(uri: &secrecy::SecretString, name: &str) -> Result<Client, lapin::Error> {
        Client::over(connect(uri, name).await?).await
    }

    /// Like [`Client::connect`], to the first node of `addresses` that accepts (a cluster:
    /// see [`crate::brokers`]); a client made again after its node went away starts with the
    /// next node when it is given the same `addresses`.
    pub async fn connect_any(
        addresses: &crate::brokers::BrokerAddresses,
        name: &str,
    ) -> Result<Client, lapin::Error> {
        Client::over(addresses.connect(name).await?).await
    }

    async fn over(connection: Connection) -> Result<Client, lapin::Error> {
        let publisher = Publisher::open(&connection).await?;
        let blocked = std::sync::Arc::new(std::sync::Mutex::new(None));
        let mut events = connection.events_listener();
        let noted = std::sync::Arc::clone(&blocked);
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                let state = match event {
                    lapin::Event::ConnectionBlocked(reason) => Some(reason),
                    lapin::Event::ConnectionUnblocked => None,
                    _ => continue,
                };
                if let Ok(mut blocked) = noted.lock() {
                    *blocked = state;
                }
            }
        });
        Ok(Client {
            connection,
            publisher,
            blocked,
        })
    }

    /// Why the broker is blocking this client's publishes, if it is (e.g. `low on memory`).
    pub fn blocked(&self) -> Option<String> {
        self.blocked.lock().ok().and_then(|blocked| blocked.clone())
    }

    /// Runs a publish for at most `limit`; when it takes longer, says what it waited for: a
    /// broker that blocks publishers (memory or disk alarm), or a confirm that never came.
    pub async fn within<T>(
        &self,
        limit: Duration,
        publish: impl std::future::Future<Output = Result<T, PublishError>>,
    ) -> anyhow::Result<T> {
        match tokio::time::timeout(limit, publish).await {
            Ok(result) => Ok(result?),
            Err(_) => match self.blocked() {
                Some(reason) => anyhow::bail!(
                    "the broker is blocking publishers ({reason}: a memory or disk alarm); nothing was confirmed within {limit:?}"
                ),
                None => anyhow::bail!("the broker did not confirm the publish within {limit:?}"),
            },
        }
    }

    /// Whether the connection is still up (false once the broker went away).
    pub fn is_connected(&self) -> bool {
        self.connection.status().connected()
    }

    /// The confirm-mode publisher.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// The connection (for opening more channels).
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Declares a topology.
    pub async fn declare(&self, topology: &Topology) -> Result<(), lapin::Error> {
        let channel = self.connection.create_channel().await?;
        declare(&channel, topology).await?;
        channel.close(200, "declared".into()).await
    }

    /// Publishes a job of the contract to where its role says it goes.
    pub async fn publish_job<M: Message>(
        &self,
        job: &M,
        message_id: &str,
        route: JobRoute<'_>,
    ) -> Result<(), PublishError> {
        let body = serde_json::to_vec(job).unwrap_or_default();
        let (exchange, routing_key) = route.resolve::<M>();
        let mut properties = base_properties(M::TYPE, message_id);
        if let JobRoute::OutletWithUser { user_id, .. } = route {
            properties = properties.with_user_id(user_id.into());
        }
        self.publisher
            .publish(&exchange, &routing_key, &body, properties)
            .await
    }

    /// Publishes a message of the contract to where its role says it goes, with a `user_id`
    /// property (the broker refuses it unless it names this connection's user).
    pub async fn publish_job_as<M: Message>(
        &self,
        job: &M,
        message_id: &str,
        user_id: &str,
    ) -> Result<(), PublishError> {
        let body = serde_json::to_vec(job).unwrap_or_default();
        let (exchange, routing_key) = JobRoute::Default.resolve::<M>();
        let properties = base_properties(M::TYPE, message_id).with_user_id(user_id.into());
        self.publisher
            .publish(&exchange, &routing_key, &body, properties)
            .await
    }

    /// Publishes raw bytes with a type (for poison-message tests and replays).
    pub async fn publish_raw(
        &self,
        exchange: &str,
        routing_key: &str,
        message_type: Option<&str>,
        message_id: &str,
        body: &[u8],
    ) -> Result<(), PublishError> {
        let mut properties = BasicProperties::default()
            .with_message_id(message_id.into())
            .with_content_type("application/json".into());
        if let Some(message_type) = message_type {
            properties = properties.with_type(message_type.into());
        }
        self.publisher
            .publish(exchange, routing_key, body, properties)
            .await
    }

    /// Publishes a message with any envelope (what a careless or hostile publisher sends:
    /// forged headers, other content types, no message id), mandatory and confirmed.
    pub async fn publish_any(&self, message: &AnyMessage<'_>) -> Result<(), PublishError> {
        let mut properties = BasicProperties::default();
        if let Some(id) = message.message_id {
            properties = properties.with_message_id(id.into());
        }
        if let Some(kind) = message.message_type {
            properties = properties.with_type(kind.into());
        }
        if let Some(id) = message.correlation_id {
            properties = properties.with_correlation_id(id.into());
        }
        if let Some(content_type) = message.content_type {
            properties = properties.with_content_type(content_type.into());
        }
        if let Some(encoding) = message.content_encoding {
            properties = properties.with_content_encoding(encoding.into());
        }
        let headers: Vec<(&str, AMQPValue)> = message
            .headers
            .iter()
            .map(|(name, value)| {
                let value = match value {
                    AnyHeader::Text(text) => text_value(text),
                    AnyHeader::Int(number) => AMQPValue::LongLongInt(*number),
                };
                (*name, value)
            })
            .collect();
        let properties = with_headers(properties, &headers, &[]);
        self.publisher
            .publish(
                message.exchange,
                message.routing_key,
                message.body,
                properties,
            )
            .await
    }

    /// Binds a fresh exclusive queue to the events exchange and streams what arrives.
    pub async fn watch_events(&self, binding_keys: &[&str]) -> Result<EventWatch, lapin::Error> {
        let options = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..QueueDeclareOptions::default()
        };
        self.watch_queue("", options, FieldTable::default(), binding_keys)
            .await
    }

    /// Declares (or finds) a durable quorum queue `queue` bound to the events exchange and
    /// streams what arrives: events published while the watcher is away (a broker restart, a
    /// reconnect) wait there, so a watcher that reconnects misses nothing. Events may then
    /// arrive twice (at least once); their message ids tell the copies apart.
    pub async fn watch_durable(
        &self,
        queue: &str,
        binding_keys: &[&str],
    ) -> Result<EventWatch, lapin::Error> {
        let options = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let mut arguments = FieldTable::default();
        arguments.insert("x-queue-type".into(), text_value("quorum"));
        self.watch_queue(queue, options, arguments, binding_keys)
            .await
    }

    async fn watch_queue(
        &self,
        queue: &str,
        options: QueueDeclareOptions,
        arguments: FieldTable,
        binding_keys: &[&str],
    ) -> Result<EventWatch, lapin::Error> {
        let channel = self.connection.create_channel().await?;
        let queue = channel
            .queue_declare(queue.into(), options, arguments)
            .await?;
        for key in binding_keys {
            channel
                .queue_bind(
                    queue.name().clone(),
                    EVENTS_EXCHANGE.into(),
                    (*key).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        channel.basic_qos(500, BasicQosOptions::default()).await?;
        let consumer = channel
            .basic_consume(
                queue.name().clone(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(EventWatch {
            _channel: channel,
            consumer,
            queue: queue.name().as_str().to_owned(),
            skipped: std::collections::VecDeque::new(),
        })
    }

    /// Closes the connection.
    pub async fn close(self) {
        let _ = self.connection.close(200, "bye".into()).await;
    }
}

/// A message with any envelope, for [`Client::publish_any`].
#[derive(Debug, Clone, Default)]
pub struct AnyMessage<'a> {
    /// The exchange.
    pub exchange: &'a str,
    /// The routing key.
    pub routing_key: &'a str,
    /// `message_id`, if any.
    pub message_id: Option<&'a str>,
    /// `type`, if any.
    pub message_type: Option<&'a str>,
    /// `correlation_id`, if any.
    pub correlation_id: Option<&'a str>,
    /// `content_type`, if any.
    pub content_type: Option<&'a str>,
    /// `content_encoding`, if any.
    pub content_encoding: Option<&'a str>,
    /// Application headers.
    pub headers: Vec<(&'a str, AnyHeader)>,
    /// The body.
    pub body: &'a [u8],
}

/// A header value of an [`AnyMessage`].
#[derive(Debug, Clone)]
pub enum AnyHeader {
    /// A string.
    Text(String),
    /// An integer.
    Int(i64),
}

/// Where a job is published.
#[derive(Debug, Clone, Copy)]
pub enum JobRoute<'a> {
    /// Where the message type's role says (central job queues, results exchange).
    Default,
    /// To an outlet's queue by outlet code.
    Outlet(&'a str),
    /// To an outlet's queue with a validated `user_id`.
    OutletWithUser {
        /// The outlet code.
        outlet_code: &'a str,
        /// The broker user.
        user_id: &'a str,
    },
}

impl JobRoute<'_> {
    fn resolve<M: Message>(&self) -> (String, String) {
        use simflow_schemas::registry::MessageRole;
        use simflow_schemas::topology::{
            INTERNAL_EXCHANGE, JOBS_EXCHANGE, OUTLET_RESULTS_KEY, OUTLETS_EXCHANGE,
            RESULTS_EXCHANGE,
        };
        match (self, M::ROLE) {
            (JobRoute::Outlet(code), _)
            | (
                JobRoute::OutletWithUser {
                    outlet_code: code, ..
                },
                _,
            ) => (OUTLETS_EXCHANGE.to_owned(), (*code).to_owned()),
            (JobRoute::Default, MessageRole::Job(queue)) if queue.is_upstream() => {
                (JOBS_EXCHANGE.to_owned(), queue.key().to_owned())
            }
            (JobRoute::Default, MessageRole::Job(queue)) => {
                (INTERNAL_EXCHANGE.to_owned(), queue.key().to_owned())
            }
            (JobRoute::Default, MessageRole::OutletResult) => {
                (RESULTS_EXCHANGE.to_owned(), OUTLET_RESULTS_KEY.to_owned())
            }
            (JobRoute::Default, MessageRole::OutletWork | MessageRole::Event(_)) => (
                EVENTS_EXCHANGE.to_owned(),
                M::TYPE.trim_end_matches(".v1").to_owned(),
            ),
        }
    }
}

/// A stream of events from [`Client::watch_events`].
#[derive(Debug)]
pub struct EventWatch {
    _channel: Channel,
    consumer: lapin::Consumer,
    queue: String,
    /// Events read while looking for another correlation id, kept for later calls.
    skipped: std::collections::VecDeque<ReceivedEvent>,
}

impl EventWatch {
    /// The server-named queue.
    pub fn queue_name(&self) -> &str {
        &self.queue
    }

    /// The next event (oldest skipped one first), or an error after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> anyhow::Result<ReceivedEvent> {
        if let Some(event) = self.skipped.pop_front() {
            return Ok(event);
        }
        self.receive(timeout).await
    }

    async fn receive(&mut self, timeout: Duration) -> anyhow::Result<ReceivedEvent> {
        let delivery = tokio::time::timeout(timeout, self.consumer.next())
            .await
            .map_err(|_| anyhow::anyhow!("no event within {timeout:?}"))?
            .ok_or_else(|| anyhow::anyhow!("the event stream ended"))??;
        delivery.acker.ack(BasicAckOptions::default()).await?;
        let properties = &delivery.properties;
        Ok(ReceivedEvent {
            routing_key: delivery.routing_key.as_str().to_owned(),
            message_type: properties
                .kind()
                .as_ref()
                .map(|t| t.as_str().to_owned())
                .unwrap_or_default(),
            message_id: properties
                .message_id()
                .as_ref()
                .map(|t| t.as_str().to_owned())
                .unwrap_or_default(),
            correlation_id: properties
                .correlation_id()
                .as_ref()
                .map(|t| t.as_str().to_owned()),
            job_message_id: header_str(properties, JOB_MESSAGE_ID_HEADER),
            body: serde_json::from_slice(&delivery.data).unwrap_or(serde_json::Value::Null),
        })
    }

    /// The next event correlated to `job_message_id`, skipping others.
    pub async fn next_for(
        &mut self,
        job_message_id: &str,
        timeout: Duration,
    ) -> anyhow::Result<ReceivedEvent> {
        let wanted =
            |event: &ReceivedEvent| event.correlation_id.as_deref() == Some(job_message_id);
        if let Some(position) = self.skipped.iter().position(wanted)
            && let Some(event) = self.skipped.remove(position)
        {
            return Ok(event);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = self.receive(left).await.map_err(|error| {
                anyhow::anyhow!("waiting for the answer to {job_message_id}: {error}")
            })?;
            if wanted(&event) {
                return Ok(event);
            }
            // Kept for whoever asks for it next.
            self.skipped.push_back(event);
        }
    }

    /// Every event that arrives within `window` (for "nothing more came" checks).
    pub async fn drain(&mut self, window: Duration) -> Vec<ReceivedEvent> {
        let mut events = Vec::new();
        while let Ok(event) = self.next(window).await {
            events.push(event);
        }
        events
    }
}
