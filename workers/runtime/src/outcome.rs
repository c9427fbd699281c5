//! What a handled job leaves behind on the broker: the messages to publish once the database
//! transaction has committed.
//!
//! An outcome is stored in the inbox with the job, so a redelivered job publishes exactly the
//! same messages again (with the same message ids) instead of doing the work twice.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use simflow_schemas::registry::{Event, Message};
use simflow_schemas::topology::{EVENTS_EXCHANGE, OUTLETS_EXCHANGE};

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outgoing {
    /// The exchange.
    pub exchange: String,
    /// The routing key.
    pub routing_key: String,
    /// The AMQP `type` property.
    pub message_type: String,
    /// The JSON body.
    pub body: serde_json::Value,
    /// Per-message expiry, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_ms: Option<u64>,
    /// Also send a copy to the job's `reply_to` queue (answers to the requester).
    #[serde(default)]
    pub copy_to_reply_to: bool,
}

impl Outgoing {
    /// An event on the events exchange (copied to `reply_to`) with this routing key.
    pub fn event<M: Message>(routing_key: &str, event: &M) -> Outgoing {
        Outgoing {
            exchange: EVENTS_EXCHANGE.to_owned(),
            routing_key: routing_key.to_owned(),
            message_type: M::TYPE.to_owned(),
            body: serde_json::to_value(event).unwrap_or(serde_json::Value::Null),
            expiration_ms: None,
            copy_to_reply_to: true,
        }
    }
}

/// Everything a job publishes after it commits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The messages, in publish order.
    pub messages: Vec<Outgoing>,
}

impl Outcome {
    /// An outcome that publishes nothing.
    pub fn nothing() -> Outcome {
        Outcome::default()
    }

    /// An outcome with one event on the events exchange (copied to `reply_to`).
    pub fn event<E: Event>(event: &E) -> Outcome {
        Outcome::nothing().and_event(event)
    }

    /// Adds an event on the events exchange (copied to `reply_to`), with the routing key its
    /// type declares.
    pub fn and_event<E: Event>(self, event: &E) -> Outcome {
        self.and(Outgoing::event(event.routing_key(), event))
    }

    /// Adds work for an outlet's queue, optionally expiring.
    pub fn and_outlet_work<M: Message>(
        mut self,
        outlet_code: &str,
        work: &M,
        expires_after: Option<Duration>,
    ) -> Outcome {
        self.messages.push(Outgoing {
            exchange: OUTLETS_EXCHANGE.to_owned(),
            routing_key: outlet_code.to_owned(),
            message_type: M::TYPE.to_owned(),
            body: serde_json::to_value(work).unwrap_or(serde_json::Value::Null),
            expiration_ms: expires_after
                .map(|duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)),
            copy_to_reply_to: false,
        });
        self
    }

    /// Adds any message.
    pub fn and(mut self, message: Outgoing) -> Outcome {
        self.messages.push(message);
        self
    }
}
