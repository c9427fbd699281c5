//! The AsyncAPI 3.0 document of the wire contract, generated from the registry and topology.
//!
//! `schemas/asyncapi.json` is this function's output, checked in; a test fails when they drift,
//! and `deploy/test.sh` runs `@asyncapi/parser` over it (`schemas/check/`).
//! The document is meant to be enough for a team in another language to integrate: every
//! exchange, routing key and queue is an AMQP channel binding (0.3.0, the version the parser
//! knows), every publish and consume an operation with its AMQP operation binding, every message
//! type a message with its payload schema, and the conventions (properties, idempotency, answers,
//! dead letters, limits) are the document's description.
//!
//! Nothing here is listed by hand: channels come from the bindings of
//! [`topology::central_topology`] and [`topology::outlet_topology`], their messages from the
//! closed job enums of the registry ([`registry::job_types`]) and the events' routing keys.
//! What the topology cannot say (who publishes to which exchange) is `publishers_of`, which
//! refuses an exchange it does not know, so a new exchange cannot go undocumented.
//!
//! How AMQP properties are written down: AsyncAPI's message `headers` are the AMQP `headers`
//! table only (the `x-simflow-*` application headers). `type` is the message binding's
//! `messageType`, `content_encoding` its `contentEncoding`, `content_type` the message's
//! `contentType`, `delivery_mode`, `timestamp` and `mandatory` the operation bindings'.
//! The binding (0.3.0) has no field for `message_id`, `correlation_id`, `reply_to` or `user_id`;
//! they are a JSON Schema of the AMQP basic properties under the extension `x-properties` of each
//! message's AMQP binding. Correlation uses AsyncAPI's `correlationId`, whose location must be a
//! header or the payload: outcomes carry the job's `message_id` in the header
//! `x-simflow-job-message-id` for that reason.

use std::collections::{BTreeMap, BTreeSet};

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::common::OUTLET_CODE_PATTERN;
use crate::registry::{self, MessageInfo, MessageRole};
use crate::topology::{
    self, CONTENT_ENCODING, CONTENT_TYPE, DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE, ExchangeKind,
    ExchangeSpec, INTERNAL_EXCHANGE, JOBS_EXCHANGE, JobQueue, MAX_MESSAGE_BYTES,
    OUTLET_EXPIRED_KEY, OUTLETS_EXCHANGE, RESULTS_EXCHANGE, RETRY_PREFIX, Topology, TopologyParams,
    UNROUTED_EVENTS, UNROUTED_EVENTS_KEPT, UPSTREAM_PERMISSIONS, UPSTREAM_USER, arguments_json,
};

/// The AMQP bindings version `@asyncapi/parser` validates (its `@asyncapi/specs` has 0.2.0 and
/// 0.3.0; 0.4.0 exists upstream but no parser release knows it yet).
const AMQP_BINDING_VERSION: &str = "0.3.0";

/// How channel bindings write the vhost: the server variable of that name.
const VHOST: &str = "{vhost}";

/// The outlet code placeholder in outlet channels' addresses.
const OUTLET_CODE: &str = "{outletCode}";

/// Who does something on the broker; each is a security scheme (a broker user) and a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Actor {
    /// CRM, ESS, the counter app: the `simflow-upstream` user.
    Upstream,
    /// The central workers.
    Simflow,
    /// An outlet's writer node, as that outlet's own broker user.
    Outlet,
    /// People working the dead-letter queues with `simflow dlq` (simflow's user).
    Ops,
}

impl Actor {
    fn tag(self) -> &'static str {
        match self {
            Actor::Upstream => "upstream",
            Actor::Simflow => "simflow",
            Actor::Outlet => "outlet",
            Actor::Ops => "ops",
        }
    }

    fn security_scheme(self) -> &'static str {
        match self {
            Actor::Upstream => "upstream",
            Actor::Simflow | Actor::Ops => "simflow",
            Actor::Outlet => "outlet",
        }
    }
}

/// Who publishes to an exchange, and a sentence on when. Panics for an exchange it does not
/// know: a new exchange must say who writes to it before the document can be generated.
fn publishers_of(exchange: &str) -> (Option<Actor>, &'static str) {
    match exchange {
        JOBS_EXCHANGE => (
            Some(Actor::Upstream),
            "Upstream systems publish jobs here; it binds only the queues upstream may feed.",
        ),
        INTERNAL_EXCHANGE => (
            Some(Actor::Simflow),
            "simflow's own way into every central queue: `simflow dlq replay` publishes here, and \
             expired retries come back here. Only simflow's user may write to it, so a delivery \
             that arrives through it carries headers simflow set.",
        ),
        EVENTS_EXCHANGE => (
            Some(Actor::Simflow),
            "Outcome events, after the job's transaction committed. An event no queue is bound for \
             goes to the alternate exchange `simflow.events.unrouted`.",
        ),
        OUTLETS_EXCHANGE => (
            Some(Actor::Simflow),
            "Work for outlet writer nodes: sealed write scripts and forwarded read requests.",
        ),
        RESULTS_EXCHANGE => (
            Some(Actor::Outlet),
            "The only exchange outlet nodes may publish to, each with `user_id` set to its own \
             broker user (the broker refuses another).",
        ),
        DEAD_LETTER_EXCHANGE => (
            Some(Actor::Simflow),
            "Dead letters: simflow publishes a job it cannot do here (with the reason headers), and \
             the broker dead-letters here what a queue's delivery limit or expiry throws out.",
        ),
        UNROUTED_EVENTS => (
            None,
            "The events exchange's alternate exchange: the broker routes here every event no queue \
             is bound for, so an outcome is never unroutable.",
        ),
        retry if retry.starts_with(RETRY_PREFIX) => (
            Some(Actor::Simflow),
            "A retry level: simflow publishes a transiently failed job here with the routing key \
             of its queue; it waits for the queue's TTL and comes back through `simflow.internal`.",
        ),
        unknown => panic!("the AsyncAPI document does not know who publishes to {unknown}"),
    }
}

/// Who consumes a queue, if anyone (retry queues are only waited in).
fn consumer_of(queue: &str) -> Option<(Actor, &'static str)> {
    if JobQueue::ALL
        .into_iter()
        .any(|candidate| candidate.queue_name() == queue)
    {
        return Some((
            Actor::Simflow,
            "A central worker consumes it (manual acknowledgement, per-consumer prefetch).",
        ));
    }
    if JobQueue::ALL
        .into_iter()
        .any(|candidate| candidate.dead_letter_queue() == queue)
        || queue == UNROUTED_EVENTS
    {
        return Some((
            Actor::Ops,
            "Ops read it with `simflow dlq` (list, replay, drop).",
        ));
    }
    if queue.starts_with(topology::OUTLET_QUEUE_PREFIX) {
        return Some((
            Actor::Outlet,
            "The outlet's writer node consumes it as the outlet's broker user (single active \
             consumer, prefetch 1).",
        ));
    }
    None
}

/// The description of the whole document: what every integrator must know.
fn conventions(params: &TopologyParams) -> String {
    let upstream_keys: Vec<String> = JobQueue::UPSTREAM
        .iter()
        .map(|queue| format!("`{}`", queue.key()))
        .collect();
    format!(
        "\
simflow is the job pipeline for on-site blank-SIM writing (社会渠道现场写卡). Upstream systems publish \
jobs; simflow's workers carry them out once each and answer every job with exactly one outcome event.

## Where to publish, where to listen
- Jobs: exchange `{JOBS_EXCHANGE}` (direct), routing key = the job queue's key ({upstream_keys}); \
each channel `jobs.<key>` lists the message types that key takes. Nothing else is bound there.
- Answers: topic exchange `{EVENTS_EXCHANGE}`, routing key `<kind>.<event>` (`transfer.created`, …), \
`<kind>.rejected` or `<kind>.failed`; bind a queue of your own (`upstream.*` or server-named) with \
the keys you care about. A copy also goes to the job's `reply_to` queue when it set one.
- The upstream role is the broker user `{UPSTREAM_USER}`: configure `{configure}`, write `{write}`, \
read `{read}` (RabbitMQ permission patterns; `deploy/rabbitmq/definitions.json` declares them). \
It cannot publish to simflow's internal, outlet, result, retry or dead-letter exchanges.
- Every name lives in the deployment's virtual host: the server variable `vhost`, written `{{vhost}}` \
in the channel bindings.

## Every message
- AMQP properties (the `x-properties` schema of each message's AMQP binding): `message_id` \
(required: the idempotency key; a job published again with the same id is done at most once and \
answered again with the same outcome; the same id with a different body is refused as \
`MESSAGE_ID_REUSED`), `type` (required: the message's name here, e.g. `transfer.create.v1`), \
`content_type` `application/json` (absent is taken as JSON), `delivery_mode` 2 (persistent); \
`correlation_id` and `reply_to` when you want them. The acting staff ID (工号) is the body's \
`staff_id`.
- Limits: the body is UTF-8 JSON matching the message's payload schema, at most {max_bytes} bytes \
(1 MiB: the workers' `[amqp] max_message_bytes`, and the broker's `max_message_size`, which refuses \
a larger publish by closing the channel, 406 PRECONDITION_FAILED); `content_type` is \
`application/json` or absent; `content_encoding` is absent or `identity` (no gzip). A job that \
breaks a limit, has no `message_id` or `type`, an unknown `type`, another queue's `type`, or a body \
that does not match its schema is not guessed at: it goes to the dead-letter queue with its reason \
and is answered by `<kind>.failed`.
- Publish with publisher confirms and the `mandatory` flag; a nack or a returned message means the \
job was not taken: publish it again with the same `message_id`.
- Headers: simflow reads no application header from a publisher. `x-simflow-*`, `x-death` and \
other headers a publisher sets are carried along and change nothing; simflow sets its own on the \
copies it makes (retries, dead letters) and on what it publishes.

## Answers
Every job is answered by exactly one outcome event on `{EVENTS_EXCHANGE}`. An outcome's \
`correlation_id` property is the job's `correlation_id`, or the job's `message_id` when it had none; \
its header `x-simflow-job-message-id` is always the job's `message_id` (the messages' \
`correlationId`). Its own `message_id` is derived from the job's, so a redelivered job is answered \
with the same ids.
- a success event of the job's kind (e.g. `transfer.approved.v1` on `transfer.approved_in`);
- `job.rejected.v1` on `<kind>.rejected`: a business answer (department mismatch, 卡库位不一致 …) \
with a stable code and the clerk's text in Chinese and English; nothing changed;
- `job.failed.v1` on `<kind>.failed`: the job could not be done (malformed, over a limit, retries \
used up, write script missing) and waits in the dead-letter queue `simflow.<kind>.dlq` for ops.
An event no queue is bound for is kept (the newest {kept}) in `{UNROUTED_EVENTS}`.

## Failures, retries and dead letters
Transient failures (database or broker restarts) are retried after {delays} through the \
`{RETRY_PREFIX}<delay>` queues, which return the job through `{INTERNAL_EXCHANGE}`. Dead letters \
carry the original body and properties plus the headers `x-simflow-reason-code`, \
`x-simflow-reason-zh`, `x-simflow-reason-en`, `x-simflow-reason-detail`, `x-simflow-attempts`, \
`x-simflow-worker`, `x-simflow-first-failure` (RFC 3339), `x-simflow-original-exchange` and \
`x-simflow-original-routing-key`; messages the broker dead-letters itself (delivery limit \
{delivery_limit}, expiry) carry its `x-death` header instead.

## Outlets
Each outlet node consumes only `simflow.outlet.<outlet code>` (single active consumer; work expires \
after {outlet_ttl} s into `simflow.outlet-expired`) as its own broker user (configure `^$`, write \
`^simflow\\.results$`, read its own queue), and publishes only to `{RESULTS_EXCHANGE}` with `user_id` \
set to that user. Write scripts are sealed to the outlet's public key; no message carries a card key \
in clear. Upstream asks for a card read with `card.read_request.v1` on `jobs.writecard`; the centre \
forwards it to the outlet.
",
        upstream_keys = upstream_keys.join(", "),
        configure = UPSTREAM_PERMISSIONS.configure,
        write = UPSTREAM_PERMISSIONS.write,
        read = UPSTREAM_PERMISSIONS.read,
        max_bytes = MAX_MESSAGE_BYTES,
        kept = UNROUTED_EVENTS_KEPT,
        delays = params
            .retry_delays
            .iter()
            .map(|delay| topology::retry_name(*delay).trim_start_matches(RETRY_PREFIX).to_owned())
            .collect::<Vec<_>>()
            .join(", "),
        delivery_limit = params.delivery_limit,
        outlet_ttl = params.outlet_message_ttl.as_secs(),
    )
}

fn tag(actor: Actor) -> Value {
    json!({ "name": actor.tag() })
}

fn security(actor: Actor) -> Value {
    json!([{ "$ref": format!("#/components/securitySchemes/{}", actor.security_scheme()) }])
}

/// Escapes a name for a JSON pointer (RFC 6901).
fn pointer(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// A channel parameter of the address, with its description.
#[derive(Debug, Clone)]
struct Parameter {
    name: &'static str,
    description: String,
    examples: Vec<String>,
    values: Option<Vec<String>>,
}

impl Parameter {
    fn outlet_code() -> Parameter {
        Parameter {
            name: "outletCode",
            description: format!(
                "The outlet's code as provisioned (`simflow outlets provision`): `{OUTLET_CODE_PATTERN}`."
            ),
            examples: vec!["HX0001".to_owned()],
            values: None,
        }
    }

    fn queue_key() -> Parameter {
        Parameter {
            name: "queueKey",
            description: "The key of the central queue the job came from and goes back to."
                .to_owned(),
            examples: Vec::new(),
            values: Some(
                JobQueue::ALL
                    .iter()
                    .map(|queue| queue.key().to_owned())
                    .collect(),
            ),
        }
    }

    fn reply_to() -> Parameter {
        Parameter {
            name: "replyTo",
            description: "The queue the job named in its `reply_to` property.".to_owned(),
            examples: vec!["upstream.counter-app.replies".to_owned()],
            values: None,
        }
    }

    fn json(&self) -> Value {
        let mut object = json!({ "description": self.description });
        if let Some(values) = &self.values {
            object["enum"] = json!(values);
        }
        if !self.examples.is_empty() {
            object["examples"] = json!(self.examples);
        }
        object
    }
}

/// What a channel carries and where it is.
#[derive(Debug)]
struct ChannelSpec {
    id: String,
    /// The routing key or queue name; `None` where a fanout exchange ignores the key.
    address: Option<String>,
    title: String,
    description: String,
    parameters: Vec<Parameter>,
    binding: Value,
    messages: Vec<&'static str>,
}

/// The document being built.
#[derive(Debug, Default)]
struct Builder {
    channels: Map<String, Value>,
    operations: Map<String, Value>,
    /// Every message type some channel carries.
    carried: BTreeSet<&'static str>,
}

impl Builder {
    fn channel(&mut self, spec: ChannelSpec) {
        let mut messages = Map::new();
        for message_type in &spec.messages {
            self.carried.insert(message_type);
            messages.insert(
                (*message_type).to_owned(),
                json!({ "$ref": format!("#/components/messages/{message_type}") }),
            );
        }
        let mut channel = json!({
            "address": spec.address,
            "title": spec.title,
            "description": spec.description,
            "messages": messages,
            "bindings": { "amqp": spec.binding },
        });
        if !spec.parameters.is_empty() {
            let parameters: Map<String, Value> = spec
                .parameters
                .iter()
                .map(|parameter| (parameter.name.to_owned(), parameter.json()))
                .collect();
            channel["parameters"] = Value::Object(parameters);
        }
        assert!(
            self.channels.insert(spec.id.clone(), channel).is_none(),
            "channel {} described twice",
            spec.id
        );
    }

    /// An operation on a channel; its messages are all the channel's.
    fn operation(
        &mut self,
        id: String,
        action: &str,
        channel_id: &str,
        actor: Actor,
        summary: String,
        binding: Value,
    ) {
        let channel = &self.channels[channel_id];
        let messages: Vec<Value> = channel["messages"]
            .as_object()
            .map(|messages| {
                messages
                    .keys()
                    .map(|key| {
                        json!({ "$ref": format!("#/channels/{}/messages/{}", pointer(channel_id), pointer(key)) })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let operation = json!({
            "action": action,
            "channel": { "$ref": format!("#/channels/{}", pointer(channel_id)) },
            "summary": summary,
            "tags": [tag(actor)],
            "security": security(actor),
            "messages": messages,
            "bindings": { "amqp": binding },
        });
        assert!(
            self.operations.insert(id.clone(), operation).is_none(),
            "operation {id} described twice"
        );
    }
}

fn exchange_binding(exchange: &ExchangeSpec) -> Value {
    let mut binding = json!({
        "is": "routingKey",
        "exchange": {
            "name": exchange.name,
            "type": exchange.kind.as_str(),
            "durable": true,
            "autoDelete": false,
            "vhost": VHOST,
        },
        "bindingVersion": AMQP_BINDING_VERSION,
    });
    if !exchange.arguments.is_empty() {
        binding["x-arguments"] = arguments_json(&exchange.arguments);
    }
    binding
}

fn queue_binding(queue: &topology::QueueSpec, bound_from: &[&topology::BindingSpec]) -> Value {
    json!({
        "is": "queue",
        "queue": {
            "name": queue.name,
            "durable": true,
            "exclusive": false,
            "autoDelete": false,
            "vhost": VHOST,
        },
        "bindingVersion": AMQP_BINDING_VERSION,
        "x-arguments": arguments_json(&queue.arguments),
        "x-bound": bound_from
            .iter()
            .map(|binding| json!({ "exchange": binding.exchange, "routingKey": binding.routing_key }))
            .collect::<Vec<_>>(),
    })
}

/// `send` with confirms: persistent, `mandatory` (binding 0.3.0's table lists `mandatory`
/// under `receive`, a leftover of AsyncAPI 2's inverted publish/subscribe: in AMQP it is a flag
/// of `basic.publish`, so it belongs to the sender), with a timestamp.
fn send_binding(routing_key: Option<&str>) -> Value {
    let mut binding = json!({
        "deliveryMode": 2,
        "mandatory": true,
        "timestamp": true,
        "bindingVersion": AMQP_BINDING_VERSION,
    });
    if let Some(routing_key) = routing_key {
        binding["cc"] = json!([routing_key]);
    }
    binding
}

/// `receive` with manual acknowledgement.
fn receive_binding(routing_keys: &[String]) -> Value {
    let mut binding = json!({ "ack": true, "bindingVersion": AMQP_BINDING_VERSION });
    if !routing_keys.is_empty() {
        binding["cc"] = json!(routing_keys);
    }
    binding
}

/// Every job type any central queue takes, once each.
fn every_job_type() -> Vec<&'static str> {
    let mut types: Vec<&'static str> = Vec::new();
    for queue in JobQueue::ALL {
        for message_type in registry::job_types(queue) {
            if !types.contains(message_type) {
                types.push(message_type);
            }
        }
    }
    types
}

/// Every event type, in registry order.
fn every_event_type() -> Vec<&'static str> {
    registry::all()
        .iter()
        .filter(|info| matches!(info.role, MessageRole::Event(_)))
        .map(|info| info.message_type)
        .collect()
}

/// The routing keys of the events and which type each carries (`*` expanded to every queue).
fn event_routes() -> Vec<(String, &'static str)> {
    let mut routes = Vec::new();
    for info in registry::all() {
        let MessageRole::Event(keys) = info.role else {
            continue;
        };
        for pattern in keys {
            match pattern.strip_prefix("*.") {
                Some(suffix) => routes.extend(
                    JobQueue::ALL
                        .iter()
                        .map(|queue| (format!("{}.{suffix}", queue.key()), info.message_type)),
                ),
                None => routes.push(((*pattern).to_owned(), info.message_type)),
            }
        }
    }
    routes
}

/// The messages a binding of the central topology routes to its queue.
fn messages_routed_to(queue: &str) -> Vec<&'static str> {
    if let Some(job_queue) = JobQueue::ALL
        .into_iter()
        .find(|candidate| candidate.queue_name() == queue || candidate.dead_letter_queue() == queue)
    {
        return registry::job_types(job_queue).to_vec();
    }
    if queue == UNROUTED_EVENTS {
        return every_event_type();
    }
    if queue.starts_with(RETRY_PREFIX) {
        return every_job_type();
    }
    if queue.starts_with(topology::OUTLET_QUEUE_PREFIX) {
        return registry::job_types(JobQueue::OutletExpired).to_vec();
    }
    panic!("the AsyncAPI document does not know what queue {queue} holds")
}

/// A short name of an exchange for channel ids (`simflow.jobs` → `jobs`).
fn short(name: &str) -> &str {
    name.strip_prefix("simflow.").unwrap_or(name)
}

fn describe_routes(builder: &mut Builder, topology: &Topology, outlet: &Topology) {
    let exchanges: BTreeMap<&str, &ExchangeSpec> = topology
        .exchanges
        .iter()
        .map(|exchange| (exchange.name.as_str(), exchange))
        .collect();
    let every_binding = topology.bindings.iter().chain(&outlet.bindings);

    // One channel per (exchange, routing key) that a binding routes, with the send operation of
    // whoever publishes there.
    for binding in every_binding {
        let exchange = exchanges[binding.exchange.as_str()];
        let (publisher, why) = publishers_of(&exchange.name);
        let fanout = exchange.kind == ExchangeKind::Fanout;
        let retry = exchange.name.starts_with(RETRY_PREFIX);
        let (address, parameters) = if retry {
            // A retry keeps the routing key of the queue it came from (the fanout ignores it).
            (Some("{queueKey}".to_owned()), vec![Parameter::queue_key()])
        } else if fanout {
            (None, Vec::new())
        } else if binding.routing_key == OUTLET_CODE {
            (Some(OUTLET_CODE.to_owned()), vec![Parameter::outlet_code()])
        } else {
            (Some(binding.routing_key.clone()), Vec::new())
        };
        let id = match &address {
            Some(key) if !key.starts_with('{') => {
                format!("{}.{}", short(&exchange.name), binding.routing_key)
            }
            _ => short(&exchange.name).to_owned(),
        };
        let shown_key = address.clone().unwrap_or_else(|| "(any)".to_owned());
        let outlet_expired = binding.routing_key == OUTLET_EXPIRED_KEY;
        let description = if outlet_expired {
            format!(
                "{why} Routing key `{OUTLET_EXPIRED_KEY}`: outlet work that expired in an outlet's \
                 queue, or that an outlet node refused; the broker dead-letters it here, on to `{}`.",
                binding.queue
            )
        } else {
            format!(
                "{why} Exchange `{}` ({}), routing key `{}`, bound to queue `{}`.",
                exchange.name,
                exchange.kind.as_str(),
                shown_key,
                binding.queue
            )
        };
        builder.channel(ChannelSpec {
            id: id.clone(),
            address: address.clone(),
            title: format!("{} → {}", exchange.name, binding.queue),
            description,
            parameters,
            binding: exchange_binding(exchange),
            messages: messages_routed_to(&binding.queue),
        });
        // The broker, not an application, publishes expired outlet work and unrouted events.
        let Some(actor) = publisher.filter(|_| !outlet_expired) else {
            continue;
        };
        let verb = match exchange.name.as_str() {
            JOBS_EXCHANGE => "Publish a job",
            INTERNAL_EXCHANGE => "Replay a job from its dead-letter queue",
            OUTLETS_EXCHANGE => "Send an outlet its work",
            RESULTS_EXCHANGE => {
                "Report what the outlet's reader did (`user_id` = the outlet's broker user)"
            }
            DEAD_LETTER_EXCHANGE => "Dead-letter a job that needs ops",
            _ => "Retry a job later",
        };
        builder.operation(
            format!("send.{id}"),
            "send",
            &id,
            actor,
            format!("{verb} ({}, `{shown_key}`).", exchange.name),
            send_binding(address.as_deref()),
        );
    }
}

fn describe_queues(builder: &mut Builder, topology: &Topology, outlet: &Topology) {
    for queue in topology.queues.iter().chain(&outlet.queues) {
        let bound_from: Vec<&topology::BindingSpec> = topology
            .bindings
            .iter()
            .chain(&outlet.bindings)
            .filter(|binding| binding.queue == queue.name)
            .collect();
        let consumer = consumer_of(&queue.name);
        let is_outlet = queue.name.starts_with(topology::OUTLET_QUEUE_PREFIX);
        let id = format!(
            "queue.{}",
            short(&queue.name).replace(OUTLET_CODE, "outletCode")
        );
        let description = match consumer {
            Some((_, how)) => format!("Queue `{}`. {how}", queue.name),
            None => format!(
                "Queue `{}`: a retry level; nothing consumes it, its messages expire back to `{INTERNAL_EXCHANGE}`.",
                queue.name
            ),
        };
        builder.channel(ChannelSpec {
            id: id.clone(),
            address: Some(queue.name.clone()),
            title: queue.name.clone(),
            description,
            parameters: if is_outlet {
                vec![Parameter::outlet_code()]
            } else {
                Vec::new()
            },
            binding: queue_binding(queue, &bound_from),
            messages: messages_routed_to(&queue.name),
        });
        let Some((actor, _)) = consumer else {
            continue;
        };
        let mut keys: Vec<String> = Vec::new();
        for binding in &bound_from {
            if !binding.routing_key.is_empty() && !keys.contains(&binding.routing_key) {
                keys.push(binding.routing_key.clone());
            }
        }
        builder.operation(
            format!("receive.{id}"),
            "receive",
            &id,
            actor,
            format!("Consume `{}`.", queue.name),
            receive_binding(&keys),
        );
    }
}

fn describe_events(builder: &mut Builder, events: &ExchangeSpec) {
    for (key, message_type) in event_routes() {
        let id = format!("{}.{key}", short(EVENTS_EXCHANGE));
        let meaning = if key.ends_with(".rejected") {
            "a business refusal; nothing changed"
        } else if key.ends_with(".failed") {
            "the job waits in its dead-letter queue for ops"
        } else {
            "the job's success"
        };
        builder.channel(ChannelSpec {
            id: id.clone(),
            address: Some(key.clone()),
            title: format!("{EVENTS_EXCHANGE} {key}"),
            description: format!(
                "Event `{message_type}` with routing key `{key}` on topic exchange `{EVENTS_EXCHANGE}`: \
                 {meaning}. Bind a queue of your own with this key (or a pattern)."
            ),
            parameters: Vec::new(),
            binding: exchange_binding(events),
            messages: vec![message_type],
        });
        builder.operation(
            format!("send.{id}"),
            "send",
            &id,
            Actor::Simflow,
            format!("Answer a job with `{key}`."),
            send_binding(Some(&key)),
        );
        builder.operation(
            format!("receive.{id}"),
            "receive",
            &id,
            Actor::Upstream,
            format!("Receive `{key}` in a queue of your own bound to `{EVENTS_EXCHANGE}`."),
            receive_binding(std::slice::from_ref(&key)),
        );
    }

    // The copy of every event to the job's `reply_to`, through the default exchange.
    let id = "replyTo".to_owned();
    builder.channel(ChannelSpec {
        id: id.clone(),
        address: Some("{replyTo}".to_owned()),
        title: "reply_to".to_owned(),
        description: "A copy of the outcome event to the queue the job named in `reply_to`, through \
                      the default exchange. A copy that cannot be delivered (the queue is gone) is \
                      only logged: the event on `simflow.events` stands."
            .to_owned(),
        parameters: vec![Parameter::reply_to()],
        binding: json!({
            "is": "routingKey",
            "exchange": { "name": "", "type": "default", "durable": true, "autoDelete": false, "vhost": VHOST },
            "bindingVersion": AMQP_BINDING_VERSION,
        }),
        messages: every_event_type(),
    });
    builder.operation(
        format!("send.{id}"),
        "send",
        &id,
        Actor::Simflow,
        "Copy the outcome to the job's `reply_to` queue.".to_owned(),
        send_binding(Some("{replyTo}")),
    );
    builder.operation(
        format!("receive.{id}"),
        "receive",
        &id,
        Actor::Upstream,
        "Receive outcomes in the queue named in `reply_to`.".to_owned(),
        receive_binding(&[]),
    );
}

/// The AMQP basic properties of a message, by who publishes it.
fn properties_schemas() -> Map<String, Value> {
    let message_id = json!({
        "type": "string", "minLength": 1,
        "description": "The idempotency key: unique per job; keep it when publishing the same job again."
    });
    let message_type = json!({ "type": "string", "description": "The message's name, e.g. `transfer.create.v1` (the binding's `messageType`)." });
    let content_type = json!({ "type": "string", "const": CONTENT_TYPE, "description": "Absent is taken as application/json." });
    let content_encoding = json!({ "type": "string", "const": CONTENT_ENCODING, "description": "Absent or identity: bodies are never compressed." });
    let delivery_mode = json!({ "type": "integer", "const": 2, "description": "Persistent." });
    let timestamp = json!({ "type": "integer", "description": "Seconds since the epoch." });
    let publisher = json!({
        "type": "object",
        "description": "AMQP basic properties of a job (what a publisher sets).",
        "required": ["message_id", "type"],
        "properties": {
            "message_id": message_id,
            "type": message_type,
            "content_type": content_type,
            "content_encoding": content_encoding,
            "delivery_mode": delivery_mode,
            "timestamp": timestamp,
            "correlation_id": { "type": "string", "description": "Optional: echoed as the `correlation_id` of the outcome." },
            "reply_to": { "type": "string", "description": "Optional: a queue that also receives the outcome event." },
            "user_id": { "type": "string", "description": "Optional; when set, the broker checks it is the connection's user." }
        }
    });
    let mut outlet = publisher.clone();
    outlet["description"] = json!(
        "AMQP basic properties of an outlet's answer: `user_id` is required and is the outlet's broker user."
    );
    outlet["required"] = json!(["message_id", "type", "user_id"]);
    let simflow = json!({
        "type": "object",
        "description": "AMQP basic properties of what simflow publishes (outcome events, outlet work).",
        "required": ["message_id", "type", "correlation_id", "content_type", "delivery_mode", "timestamp"],
        "properties": {
            "message_id": { "type": "string", "description": "Derived from the job's message id: a redelivered job is answered with the same id." },
            "type": message_type,
            "content_type": content_type,
            "delivery_mode": delivery_mode,
            "timestamp": timestamp,
            "correlation_id": { "type": "string", "description": "The job's `correlation_id`, or the job's `message_id` when it had none." },
            "expiration": { "type": "string", "description": "Outlet work only: milliseconds after which the broker drops it into `simflow.outlet-expired`." }
        }
    });
    Map::from_iter([
        ("PublisherProperties".to_owned(), publisher),
        ("OutletProperties".to_owned(), outlet),
        ("SimflowProperties".to_owned(), simflow),
    ])
}

/// The application headers (the AMQP `headers` table).
fn header_schemas() -> Map<String, Value> {
    let text = |description: &str| json!({ "type": "string", "description": description });
    let number = |description: &str| json!({ "type": "integer", "description": description });
    let headers = json!({
        "type": "object",
        "description": "Application headers. A publisher sets none that simflow reads: `x-simflow-*`, `x-death` \
                        and any other header a publisher sets are carried along and change nothing. simflow \
                        sets the ones below on the copies it makes (retries through `simflow.internal`, dead \
                        letters in `simflow.<kind>.dlq`) and on what it publishes.",
        "properties": {
            "x-simflow-job-message-id": text("On everything simflow publishes in answer to a job: the job's `message_id`."),
            "x-simflow-attempt": number("On a retry: the try it is (2, 3, …); counted only when it arrives through `simflow.internal`."),
            "x-simflow-first-failure": text("On a retry or dead letter: when the job first failed (RFC 3339)."),
            "x-simflow-original-exchange": text("On a retry or dead letter: the exchange the job was first published to."),
            "x-simflow-original-routing-key": text("On a retry or dead letter: its routing key."),
            "x-simflow-original-user-id": text("On a retry or dead letter: the validated `user_id` of the original."),
            "x-simflow-reason-code": text("On a dead letter: the stable reason code."),
            "x-simflow-reason-zh": text("On a dead letter: the reason in Chinese."),
            "x-simflow-reason-en": text("On a dead letter: the reason in English."),
            "x-simflow-reason-detail": text("On a dead letter: what exactly was wrong, for ops (never a body or a secret)."),
            "x-simflow-attempts": number("On a dead letter: the tries made."),
            "x-simflow-worker": text("On a dead letter: the worker that gave up."),
            "x-death": { "type": "array", "description": "Set by the broker when it dead-letters a message (delivery limit, expiry); counted only on a delivery that came through `simflow.dlx`." }
        }
    });
    let outcome = json!({
        "allOf": [
            { "$ref": "#/components/schemas/Headers" },
            { "type": "object", "required": ["x-simflow-job-message-id"] }
        ],
        "description": "Headers of what simflow publishes in answer to a job."
    });
    Map::from_iter([
        ("Headers".to_owned(), headers),
        ("OutcomeHeaders".to_owned(), outcome),
    ])
}

fn first_paragraph(text: &str) -> String {
    text.split("\n\n")
        .next()
        .unwrap_or_default()
        .replace('\n', " ")
}

/// Where a message travels, in words.
fn travels(info: &MessageInfo) -> String {
    match info.role {
        MessageRole::Job(queue) => {
            let consumed_elsewhere: Vec<String> = JobQueue::ALL
                .into_iter()
                .filter(|other| {
                    *other != queue && registry::job_types(*other).contains(&info.message_type)
                })
                .map(|other| format!("`{}`", other.queue_name()))
                .collect();
            let mut text = format!(
                "A job: publish to `{JOBS_EXCHANGE}` with routing key `{}`; the worker takes it from `{}`.",
                queue.key(),
                queue.queue_name()
            );
            if !consumed_elsewhere.is_empty() {
                text.push_str(&format!(
                    " The centre forwards it to the outlet's queue `simflow.outlet.<outlet code>`; \
                     if no writer takes it in time it expires into {}.",
                    consumed_elsewhere.join(", ")
                ));
            }
            text
        }
        MessageRole::OutletWork => format!(
            "Outlet work: simflow publishes it to `{OUTLETS_EXCHANGE}` with the outlet code as routing key; \
             if no writer takes it in time it expires into `{}`.",
            JobQueue::OutletExpired.queue_name()
        ),
        MessageRole::OutletResult => format!(
            "An outlet's answer: published to `{RESULTS_EXCHANGE}` with routing key `{}` and `user_id` = \
             the outlet's broker user; the centre takes it from `{}`.",
            JobQueue::OutletResults.key(),
            JobQueue::OutletResults.queue_name()
        ),
        MessageRole::Event(keys) => format!(
            "An outcome event on `{EVENTS_EXCHANGE}`, routing key {}.",
            keys.iter()
                .map(|key| format!("`{}`", key.replace('*', "<kind>")))
                .collect::<Vec<_>>()
                .join(" or ")
        ),
    }
}

fn message(info: &MessageInfo, payload: Value, description: &str) -> Value {
    let (headers, properties) = match info.role {
        MessageRole::Job(_) => ("Headers", "PublisherProperties"),
        MessageRole::OutletResult => ("Headers", "OutletProperties"),
        MessageRole::OutletWork | MessageRole::Event(_) => ("OutcomeHeaders", "SimflowProperties"),
    };
    let mut message = json!({
        "name": info.message_type,
        "title": info.rust_name,
        "summary": first_paragraph(description),
        "description": format!("{description}\n\n{}", travels(info)),
        "contentType": CONTENT_TYPE,
        "headers": { "$ref": format!("#/components/schemas/{headers}") },
        "payload": payload,
        "bindings": { "amqp": {
            "contentEncoding": CONTENT_ENCODING,
            "messageType": info.message_type,
            "bindingVersion": AMQP_BINDING_VERSION,
            "x-properties": { "$ref": format!("#/components/schemas/{properties}") },
        }},
    });
    if headers == "OutcomeHeaders" {
        message["correlationId"] = json!({ "$ref": "#/components/correlationIds/jobMessageId" });
    }
    message
}

/// Builds the AsyncAPI document.
pub fn document() -> Value {
    let params = TopologyParams::default();
    let central = topology::central_topology(&params);
    let outlet = topology::outlet_topology(OUTLET_CODE, &params);
    let events = central
        .exchanges
        .iter()
        .find(|exchange| exchange.name == EVENTS_EXCHANGE)
        .expect("the central topology has the events exchange");

    let mut builder = Builder::default();
    describe_routes(&mut builder, &central, &outlet);
    describe_queues(&mut builder, &central, &outlet);
    describe_events(&mut builder, events);

    let mut generator = registry::schema_settings(SchemaSettings::draft07())
        .with(|settings| {
            settings.definitions_path = "/components/schemas/".into();
            settings.meta_schema = None;
        })
        .into_generator();
    let mut messages = Map::new();
    for info in registry::all() {
        assert!(
            builder.carried.contains(info.message_type),
            "{} travels on no channel",
            info.message_type
        );
        let payload =
            serde_json::to_value((info.subschema)(&mut generator)).expect("schemas serialise");
        let description = (info.schema)()
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        messages.insert(
            info.message_type.to_owned(),
            message(info, payload, &description),
        );
    }
    let mut schemas: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    schemas.extend(properties_schemas());
    schemas.extend(header_schemas());

    let vhost_variable = json!({
        "default": "%2F",
        "description": "The deployment's virtual host, percent-encoded as in an AMQP URI (`%2F` is `/`, the \
                        one `deploy/rabbitmq/definitions.json` declares). Every exchange and queue here lives \
                        in it; the channel bindings write it `{vhost}`.",
        "examples": ["%2F", "simflow"]
    });
    let server = |protocol: &str, port: &str, description: &str| {
        json!({
            "host": "{host}:{port}",
            "pathname": "/{vhost}",
            "protocol": protocol,
            "protocolVersion": "0.9.1",
            "title": "RabbitMQ",
            "description": description,
            "variables": {
                "host": { "default": "127.0.0.1", "description": "The broker's host name." },
                "port": { "default": port, "description": "The broker's AMQP port." },
                "vhost": vhost_variable
            },
            "security": [
                { "$ref": "#/components/securitySchemes/upstream" },
                { "$ref": "#/components/securitySchemes/simflow" },
                { "$ref": "#/components/securitySchemes/outlet" }
            ],
            "bindings": { "amqp": { "bindingVersion": AMQP_BINDING_VERSION } }
        })
    };

    json!({
        "asyncapi": "3.0.0",
        "id": "urn:simflow:wire-contract",
        "info": {
            "title": "simflow wire contract",
            "version": "1.1.0",
            "description": conventions(&params),
            "license": {
                "name": "Apache-2.0",
                "url": "https://www.apache.org/licenses/LICENSE-2.0"
            },
            "tags": [
                { "name": Actor::Upstream.tag(), "description": "Done by an upstream system (CRM, ESS, the counter app) as the broker user `simflow-upstream`." },
                { "name": Actor::Simflow.tag(), "description": "Done by simflow's central workers." },
                { "name": Actor::Outlet.tag(), "description": "Done by an outlet's writer node as that outlet's broker user." },
                { "name": Actor::Ops.tag(), "description": "Done by ops with `simflow dlq`." }
            ]
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            "broker": server("amqp", "5672", "RabbitMQ 3.10 or newer, plain AMQP."),
            "brokerTls": server("amqps", "5671", "The same broker over TLS, where the deployment enables it (outlets may log in with a client certificate).")
        },
        "channels": builder.channels,
        "operations": builder.operations,
        "components": {
            "messages": messages,
            "schemas": schemas,
            "correlationIds": {
                "jobMessageId": {
                    "description": "The `message_id` of the job this answers. The AMQP `correlation_id` property carries \
                                    the job's own `correlation_id`, or this id when the job set none.",
                    "location": "$message.header#/x-simflow-job-message-id"
                }
            },
            "securitySchemes": {
                "upstream": {
                    "type": "userPassword",
                    "description": format!(
                        "The upstream role: broker user `{UPSTREAM_USER}` (ops set its password). Permissions in the \
                         vhost: configure `{}`, write `{}`, read `{}`.",
                        UPSTREAM_PERMISSIONS.configure, UPSTREAM_PERMISSIONS.write, UPSTREAM_PERMISSIONS.read
                    ),
                    "x-user": UPSTREAM_USER,
                    "x-permissions": {
                        "configure": UPSTREAM_PERMISSIONS.configure,
                        "write": UPSTREAM_PERMISSIONS.write,
                        "read": UPSTREAM_PERMISSIONS.read
                    }
                },
                "simflow": {
                    "type": "userPassword",
                    "description": "simflow's own broker user: it declares the topology and is the only user that may \
                                    write to the internal, outlet, retry and dead-letter exchanges."
                },
                "outlet": {
                    "type": "userPassword",
                    "description": "One broker user per outlet (`simflow outlets provision`): configure `^$`, write \
                                    `^simflow\\.results$`, read `^simflow\\.outlet\\.<outlet code>$`. Every result it \
                                    publishes sets `user_id` to this user."
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{SharedEvent, event_routing_key};

    fn channels_on(document: &Value, exchange: &str) -> Vec<(String, Value)> {
        document["channels"]
            .as_object()
            .expect("channels")
            .iter()
            .filter(|(_, channel)| channel["bindings"]["amqp"]["exchange"]["name"] == exchange)
            .map(|(id, channel)| (id.clone(), channel.clone()))
            .collect()
    }

    fn addresses_on(document: &Value, exchange: &str) -> BTreeSet<String> {
        channels_on(document, exchange)
            .into_iter()
            .filter_map(|(_, channel)| channel["address"].as_str().map(str::to_owned))
            .collect()
    }

    #[test]
    fn every_binding_and_queue_of_the_topology_is_a_channel() {
        let document = document();
        let central = topology::central_topology(&TopologyParams::default());
        for binding in &central.bindings {
            let channels = channels_on(&document, &binding.exchange);
            assert!(
                channels.iter().any(|(_, channel)| {
                    let address = &channel["address"];
                    (address == &json!(binding.routing_key)
                        || address.is_null()
                        || address == "{queueKey}")
                        && channel["title"]
                            .as_str()
                            .is_some_and(|title| title.ends_with(&format!("→ {}", binding.queue)))
                }),
                "no channel for {} --{}--> {}",
                binding.exchange,
                binding.routing_key,
                binding.queue
            );
        }
        let queues: BTreeSet<&str> = document["channels"]
            .as_object()
            .expect("channels")
            .values()
            .filter(|channel| channel["bindings"]["amqp"]["is"] == "queue")
            .filter_map(|channel| channel["bindings"]["amqp"]["queue"]["name"].as_str())
            .collect();
        for queue in &central.queues {
            assert!(
                queues.contains(queue.name.as_str()),
                "queue {} undocumented",
                queue.name
            );
        }
        assert!(queues.contains("simflow.outlet.{outletCode}"));
    }

    #[test]
    fn every_routing_key_the_workers_publish_has_a_channel() {
        let document = document();
        let events = addresses_on(&document, EVENTS_EXCHANGE);
        for queue in JobQueue::ALL {
            for shared in [SharedEvent::Rejected, SharedEvent::Failed] {
                let key = event_routing_key(queue, shared);
                assert!(events.contains(&key), "{key} undocumented");
            }
            assert!(
                addresses_on(&document, DEAD_LETTER_EXCHANGE).contains(&queue.dead_letter_key()),
                "{} undocumented",
                queue.dead_letter_key()
            );
            assert!(addresses_on(&document, INTERNAL_EXCHANGE).contains(queue.key()));
        }
        for info in registry::all() {
            if let MessageRole::Event(keys) = info.role {
                for key in keys.iter().filter(|key| !key.starts_with('*')) {
                    assert!(events.contains(*key), "{key} undocumented");
                }
            }
        }
        for delay in TopologyParams::default().retry_delays {
            assert_eq!(
                addresses_on(&document, &topology::retry_name(delay)),
                BTreeSet::from(["{queueKey}".to_owned()])
            );
        }
        assert!(addresses_on(&document, RESULTS_EXCHANGE).contains(topology::OUTLET_RESULTS_KEY));
        assert!(addresses_on(&document, OUTLETS_EXCHANGE).contains(OUTLET_CODE));
        assert!(addresses_on(&document, "").contains("{replyTo}"));
    }

    #[test]
    fn upstream_publishes_only_to_the_jobs_exchange_and_only_the_upstream_keys() {
        let document = document();
        let upstream: BTreeSet<String> = JobQueue::UPSTREAM
            .iter()
            .map(|queue| queue.key().to_owned())
            .collect();
        assert_eq!(addresses_on(&document, JOBS_EXCHANGE), upstream);
        for (id, operation) in document["operations"].as_object().expect("operations") {
            let by_upstream =
                operation["security"][0]["$ref"] == "#/components/securitySchemes/upstream";
            let channel_id = operation["channel"]["$ref"]
                .as_str()
                .and_then(|reference| reference.strip_prefix("#/channels/"))
                .expect("a channel reference");
            let exchange =
                &document["channels"][channel_id]["bindings"]["amqp"]["exchange"]["name"];
            if by_upstream && operation["action"] == "send" {
                assert_eq!(exchange, JOBS_EXCHANGE, "{id}");
            }
            if exchange == JOBS_EXCHANGE && operation["action"] == "send" {
                assert!(by_upstream, "{id}");
            }
        }
        let role = &document["components"]["securitySchemes"]["upstream"];
        assert_eq!(role["x-user"], UPSTREAM_USER);
        assert_eq!(role["x-permissions"]["write"], UPSTREAM_PERMISSIONS.write);
        assert_eq!(role["x-permissions"]["read"], UPSTREAM_PERMISSIONS.read);
        assert_eq!(
            role["x-permissions"]["configure"],
            UPSTREAM_PERMISSIONS.configure
        );
    }

    #[test]
    fn every_binding_names_the_vhost_by_the_server_variable() {
        let document = document();
        for (id, channel) in document["channels"].as_object().expect("channels") {
            let amqp = &channel["bindings"]["amqp"];
            let vhost = if amqp["is"] == "queue" {
                &amqp["queue"]["vhost"]
            } else {
                &amqp["exchange"]["vhost"]
            };
            assert_eq!(vhost, VHOST, "{id}");
        }
        for server in document["servers"].as_object().expect("servers").values() {
            assert!(
                server["pathname"]
                    .as_str()
                    .is_some_and(|path| path.contains(VHOST))
            );
            assert!(server["variables"]["vhost"]["default"].is_string());
        }
    }

    #[test]
    fn outcomes_correlate_by_header_and_properties_stay_out_of_the_headers() {
        let document = document();
        let headers = &document["components"]["schemas"]["Headers"]["properties"];
        for property in [
            "message_id",
            "type",
            "correlation_id",
            "reply_to",
            "user_id",
        ] {
            assert!(
                headers.get(property).is_none(),
                "{property} is a property, not a header"
            );
        }
        for info in registry::all() {
            let message = &document["components"]["messages"][info.message_type];
            assert_eq!(
                message["bindings"]["amqp"]["messageType"],
                info.message_type
            );
            assert_eq!(message["name"], info.message_type);
            if matches!(info.role, MessageRole::Event(_)) {
                assert_eq!(
                    message["correlationId"]["$ref"],
                    "#/components/correlationIds/jobMessageId"
                );
            }
        }
        assert_eq!(
            document["components"]["correlationIds"]["jobMessageId"]["location"],
            "$message.header#/x-simflow-job-message-id"
        );
    }
}
