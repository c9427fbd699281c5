//! The AsyncAPI 2.6 document of the wire contract, generated from the registry and topology.
//!
//! `schemas/asyncapi.json` is this function's output, checked in; a test fails when they drift.
//! The document is meant to be enough for a team in another language to integrate: it names
//! the exchanges, routing keys, queues, message types, payload schemas and the conventions
//! (properties, idempotency, events, dead letters) every message follows.

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::registry::{self, MessageRole};
use crate::topology::{
    self, DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE, JOBS_EXCHANGE, JobQueue, OUTLET_RESULTS_KEY,
    OUTLETS_EXCHANGE, RESULTS_EXCHANGE, TopologyParams,
};

const CONVENTIONS: &str = "\
simflow is the job pipeline for on-site blank-SIM writing (社会渠道现场写卡). Upstream systems publish \
jobs; simflow's workers carry them out once each and answer with events.

## Every message
- AMQP properties: `message_id` (required, the idempotency key: a job re-published with the same id \
is done at most once and answered again with the same outcome), `type` (required, e.g. \
`transfer.create.v1`: the message's name in this document), `content_type: application/json`, \
`delivery_mode: 2` (persistent), `timestamp`; `correlation_id` and `reply_to` where an answer is \
wanted. The acting staff ID (工号) is the `staff_id` field of the body.
- Publish with publisher confirms and the `mandatory` flag; a nack or a returned message means the \
job was not taken: publish it again with the same `message_id`.
- Unknown `type` values and bodies that do not match their schema are not guessed: the job goes to \
the dead-letter queue and a `job.failed.v1` event says why.

## Answers
Every job is answered by exactly one outcome event on the `simflow.events` topic exchange, whose \
`correlation_id` is the job's `message_id` (and, when the job had `reply_to`, a copy to that queue):
- a success event of the job's kind (e.g. `transfer.approved.v1` on `transfer.approved_in`);
- `job.rejected.v1` on `<kind>.rejected`: a business answer (department mismatch, 卡库位不一致 …) \
with a stable code and the clerk's text in Chinese and English; nothing changed;
- `job.failed.v1` on `<kind>.failed`: the job could not be done (poison message, retries used up, \
write script missing) and waits in the dead-letter queue `simflow.<kind>.dlq` for ops.
Bind your own queue to `simflow.events` with the routing keys you care about.

## Failures, retries and dead letters
Transient failures (database or broker restarts) are retried with exponential backoff through the \
`simflow.retry.<delay>` queues; the attempt count travels in the `x-simflow-attempt` header. Dead \
letters carry the original message and properties plus the headers `x-simflow-reason-code`, \
`x-simflow-reason-zh`, `x-simflow-reason-en`, `x-simflow-attempts`, `x-simflow-worker`, \
`x-simflow-first-failure` (RFC 3339), `x-simflow-original-exchange` and \
`x-simflow-original-routing-key`; messages the broker dead-letters itself (delivery limit, expiry) \
carry the broker's `x-death` header instead.

## Outlets
Each outlet node consumes only `simflow.outlet.<outlet code>` (single active consumer) as its own \
broker user, and publishes only to `simflow.results` with `user_id` set to that user. Write \
scripts are sealed to the outlet's public key; no message carries a card key in clear.
";

fn amqp_exchange(name: &str, kind: &str) -> Value {
    json!({
        "name": name,
        "type": kind,
        "durable": true,
        "autoDelete": false,
        "vhost": "/"
    })
}

fn message_ref(message_type: &str) -> Value {
    json!({ "$ref": format!("#/components/messages/{message_type}") })
}

fn one_of(message_types: &[&str]) -> Value {
    if let [only] = message_types {
        message_ref(only)
    } else {
        json!({ "oneOf": message_types.iter().map(|t| message_ref(t)).collect::<Vec<_>>() })
    }
}

/// The job queues upstream systems publish to (the outlet-facing queues are described apart).
const UPSTREAM_QUEUES: [JobQueue; 5] = [
    JobQueue::Transfer,
    JobQueue::Issue,
    JobQueue::Return,
    JobQueue::CardFile,
    JobQueue::WriteCard,
];

/// Builds the AsyncAPI document.
pub fn document() -> Value {
    let params = TopologyParams::default();
    let central = topology::central_topology(&params);
    let infos = registry::all();
    let types_where = |wanted: &dyn Fn(MessageRole) -> bool| -> Vec<&'static str> {
        infos
            .iter()
            .filter(|info| wanted(info.role))
            .map(|info| info.message_type)
            .collect()
    };

    let mut channels = Map::new();
    for queue in UPSTREAM_QUEUES {
        let types = types_where(&|role| role == MessageRole::Job(queue));
        let arguments = central
            .queues
            .iter()
            .find(|spec| spec.name == queue.queue_name())
            .map(|spec| queue_arguments_json(&spec.arguments))
            .unwrap_or(Value::Null);
        channels.insert(
            format!("jobs/{}", queue.key()),
            json!({
                "description": format!(
                    "Jobs for the {key} worker: publish to exchange `{JOBS_EXCHANGE}` with routing key `{key}`. \
                     They wait in quorum queue `{queue_name}`; dead letters go to `{dlq}`.",
                    key = queue.key(),
                    queue_name = queue.queue_name(),
                    dlq = queue.dead_letter_queue(),
                ),
                "bindings": { "amqp": {
                    "is": "routingKey",
                    "exchange": amqp_exchange(JOBS_EXCHANGE, "direct"),
                    "bindingVersion": "0.2.0"
                }},
                "x-simflow-queue": { "name": queue.queue_name(), "arguments": arguments },
                "publish": {
                    "operationId": format!("publish_{}_job", queue.key()),
                    "summary": format!("Send a {} job to simflow.", queue.key()),
                    "message": one_of(&types)
                }
            }),
        );
    }

    channels.insert(
        "outlets/{outletCode}".to_owned(),
        json!({
            "description": format!(
                "Work for one outlet's writer node: exchange `{OUTLETS_EXCHANGE}`, routing key = outlet code, \
                 queue `simflow.outlet.<outlet code>` (quorum, single active consumer, messages expire after \
                 {ttl} s and are dead-lettered to `{DEAD_LETTER_EXCHANGE}` as `outlet-expired`). Counter apps \
                 publish read requests here; the write-card worker publishes sealed write scripts.",
                ttl = params.outlet_message_ttl.as_secs()
            ),
            "parameters": { "outletCode": {
                "description": "The outlet's code, e.g. HX0001.",
                "schema": { "type": "string", "pattern": "^[A-Za-z0-9_-]{1,32}$" }
            }},
            "bindings": { "amqp": {
                "is": "routingKey",
                "exchange": amqp_exchange(OUTLETS_EXCHANGE, "direct"),
                "bindingVersion": "0.2.0"
            }},
            "publish": {
                "operationId": "send_outlet_work",
                "summary": "Ask an outlet's reader to read the card (counter app) or run a write script (write-card worker).",
                "message": one_of(&types_where(&|role| role == MessageRole::OutletWork))
            },
            "subscribe": {
                "operationId": "receive_outlet_work",
                "summary": "The outlet node receives its work.",
                "message": one_of(&types_where(&|role| role == MessageRole::OutletWork))
            }
        }),
    );

    channels.insert(
        format!("results/{OUTLET_RESULTS_KEY}"),
        json!({
            "description": format!(
                "Answers from outlet nodes: exchange `{RESULTS_EXCHANGE}`, routing key `{OUTLET_RESULTS_KEY}`, \
                 queue `{queue}`. The `user_id` property is required and must equal the outlet's broker user.",
                queue = JobQueue::OutletResults.queue_name()
            ),
            "bindings": { "amqp": {
                "is": "routingKey",
                "exchange": amqp_exchange(RESULTS_EXCHANGE, "direct"),
                "bindingVersion": "0.2.0"
            }},
            "publish": {
                "operationId": "publish_outlet_result",
                "summary": "An outlet node reports a card read or a write result.",
                "message": one_of(&types_where(&|role| role == MessageRole::OutletResult))
            }
        }),
    );

    for info in infos {
        let MessageRole::Event(routing_keys) = info.role else {
            continue;
        };
        for pattern in routing_keys {
            let keys: Vec<String> = match pattern.strip_prefix("*.") {
                Some(suffix) => UPSTREAM_QUEUES
                    .iter()
                    .map(|queue| format!("{}.{suffix}", queue.key()))
                    .collect(),
                None => vec![(*pattern).to_owned()],
            };
            for key in keys {
                channels.insert(
                    format!("events/{key}"),
                    json!({
                        "description": format!(
                            "Event `{key}` on topic exchange `{EVENTS_EXCHANGE}`; `correlation_id` is the job's `message_id`."
                        ),
                        "bindings": { "amqp": {
                            "is": "routingKey",
                            "exchange": amqp_exchange(EVENTS_EXCHANGE, "topic"),
                            "bindingVersion": "0.2.0"
                        }},
                        "subscribe": {
                            "operationId": format!("on_{}", key.replace(['.', '-'], "_")),
                            "message": message_ref(info.message_type)
                        }
                    }),
                );
            }
        }
    }

    let mut generator = SchemaSettings::draft07()
        .with(|settings| {
            settings.definitions_path = "/components/schemas/".into();
            settings.meta_schema = None;
        })
        .into_generator();
    let mut messages = Map::new();
    for info in infos {
        let payload = (info.subschema)(&mut generator);
        let description = (info.schema)()
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        messages.insert(
            info.message_type.to_owned(),
            json!({
                "name": info.message_type,
                "title": info.rust_name,
                "summary": description,
                "contentType": "application/json",
                "correlationId": { "location": "$message.header#/correlation_id" },
                "bindings": { "amqp": {
                    "messageType": info.message_type,
                    "deliveryMode": 2,
                    "bindingVersion": "0.2.0"
                }},
                "headers": { "$ref": "#/components/schemas/AmqpProperties" },
                "payload": payload
            }),
        );
    }
    let mut schemas = generator.take_definitions(true);
    schemas.insert("AmqpProperties".to_owned(), amqp_properties_schema());

    json!({
        "asyncapi": "2.6.0",
        "id": "urn:simflow:wire-contract",
        "info": {
            "title": "simflow wire contract",
            "version": "1.0.0",
            "description": CONVENTIONS
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "url": "127.0.0.1:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "RabbitMQ 3.10+ on the project machines (vhost `/`)."
            }
        },
        "channels": channels,
        "components": {
            "messages": messages,
            "schemas": schemas
        }
    })
}

fn queue_arguments_json(
    arguments: &std::collections::BTreeMap<String, topology::ArgValue>,
) -> Value {
    let mut object = Map::new();
    for (name, value) in arguments {
        let value = match value {
            topology::ArgValue::Str(text) => json!(text),
            topology::ArgValue::Int(number) => json!(number),
            topology::ArgValue::Bool(flag) => json!(flag),
        };
        object.insert(name.clone(), value);
    }
    Value::Object(object)
}

fn amqp_properties_schema() -> Value {
    json!({
        "type": "object",
        "description": "AMQP 0-9-1 basic properties and headers simflow reads and sets (properties are not \
                        application headers on the wire; they are listed here so integrators see them in one place).",
        "required": ["message_id", "type"],
        "properties": {
            "message_id": { "type": "string", "description": "Idempotency key, unique per job; keep it when re-publishing." },
            "type": { "type": "string", "description": "The message type, e.g. transfer.create.v1." },
            "correlation_id": { "type": "string", "description": "On events: the message_id of the job answered." },
            "reply_to": { "type": "string", "description": "Optional queue that also receives the outcome event." },
            "timestamp": { "type": "integer", "description": "Seconds since the epoch, set by the publisher." },
            "user_id": { "type": "string", "description": "Required on outlet results: the outlet's broker user (validated by the broker)." },
            "x-simflow-attempt": { "type": "integer", "description": "Retry attempt, set by simflow on retries." }
        }
    })
}
