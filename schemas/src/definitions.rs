//! The RabbitMQ definitions file for ops (`deploy/rabbitmq/definitions.json`), generated from the
//! same topology the runtime declares, so a boot import never conflicts with the application.
//!
//! Outlet queues are not in it: they come and go with outlets (`simflow outlet provision`).

use serde_json::{Value, json};

use crate::topology::{
    OUTLET_QUEUE_PREFIX, TopologyParams, UPSTREAM_PERMISSIONS, UPSTREAM_USER, arguments_json,
    central_topology,
};

/// The vhost the definitions describe.
pub const VHOST: &str = "/";

/// Builds the definitions document for `rabbitmqctl import_definitions` or boot import.
pub fn document(params: &TopologyParams) -> Value {
    let topology = central_topology(params);
    let exchanges: Vec<Value> = topology
        .exchanges
        .iter()
        .map(|exchange| {
            json!({
                "name": exchange.name,
                "vhost": VHOST,
                "type": exchange.kind.as_str(),
                "durable": true,
                "auto_delete": false,
                "internal": false,
                "arguments": arguments_json(&exchange.arguments)
            })
        })
        .collect();
    let queues: Vec<Value> = topology
        .queues
        .iter()
        .map(|queue| {
            json!({
                "name": queue.name,
                "vhost": VHOST,
                "durable": true,
                "auto_delete": false,
                "arguments": arguments_json(&queue.arguments)
            })
        })
        .collect();
    let bindings: Vec<Value> = topology
        .bindings
        .iter()
        .map(|binding| {
            json!({
                "source": binding.exchange,
                "vhost": VHOST,
                "destination": binding.queue,
                "destination_type": "queue",
                "routing_key": binding.routing_key,
                "arguments": {}
            })
        })
        .collect();
    let outlet_pattern = format!("^{}", OUTLET_QUEUE_PREFIX.replace('.', "\\."));
    json!({
        "rabbit_version": "3.10.8",
        "rabbitmq_version": "3.10.8",
        "vhosts": [{ "name": VHOST }],
        // The upstream role. No password here: ops set one (or a client certificate) with
        // `rabbitmqctl change_password simflow-upstream …`; until then it cannot log in.
        "users": [{
            "name": UPSTREAM_USER,
            "password_hash": "",
            "hashing_algorithm": "rabbit_password_hashing_sha256",
            "tags": []
        }],
        "permissions": [{
            "user": UPSTREAM_USER,
            "vhost": VHOST,
            "configure": UPSTREAM_PERMISSIONS.configure,
            "write": UPSTREAM_PERMISSIONS.write,
            "read": UPSTREAM_PERMISSIONS.read
        }],
        "exchanges": exchanges,
        "queues": queues,
        "bindings": bindings,
        "policies": [
            {
                "vhost": VHOST,
                "name": "simflow-outlet-queues",
                "pattern": outlet_pattern,
                "apply-to": "queues",
                "priority": 10,
                "definition": { "expires": 604_800_000 }
            },
            {
                "vhost": VHOST,
                "name": "simflow-dead-letter-queues",
                "pattern": "^simflow\\..*\\.dlq$",
                "apply-to": "queues",
                "priority": 10,
                "definition": { "max-length": 1_000_000, "overflow": "reject-publish" }
            }
        ]
    })
}
