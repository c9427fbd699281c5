//! What the runtime reads from a delivery before any business rule runs: the envelope
//! (`message_id`, `type`, try number, validated user) and the body, decoded into the queue's
//! closed job enum. A delivery that fails here is dead-lettered with the reason, never dropped.
//!
//! Trust: simflow's own headers (`x-simflow-attempt`, `x-simflow-original-user-id`) count only
//! on a delivery that came through the internal exchange, which only simflow's user may write
//! (retries and replays); the broker's `x-death` counts only on a delivery the broker itself
//! dead-lettered to us (through the dead-letter exchange). Anything else a publisher set is
//! carried along but changes nothing.

use chrono::Utc;
use lapin::message::Delivery;
use simflow_schemas::common::ClerkMessage;
use simflow_schemas::registry::{DecodeError, JobSet};
use simflow_schemas::topology::{
    CONTENT_ENCODING, CONTENT_TYPE, DEAD_LETTER_EXCHANGE, INTERNAL_EXCHANGE,
};

use crate::amqp;
use crate::handler::JobContext;
use crate::reasons;

/// A delivery's envelope, read once.
#[derive(Debug, Clone)]
pub(crate) struct Envelope {
    /// `message_id`, when present and not empty.
    pub message_id: Option<String>,
    /// `type`, when present.
    pub message_type: Option<String>,
    /// 1 for the first try, then 2, 3 … across retries.
    pub attempt: u32,
    /// The AMQP `timestamp` (Unix seconds) the publisher set, if any; copies keep it.
    pub timestamp: Option<u64>,
}

/// Whether the delivery came through simflow's internal exchange (a retry or a replay).
fn from_simflow(delivery: &Delivery) -> bool {
    delivery.exchange.as_str() == INTERNAL_EXCHANGE
}

impl Envelope {
    /// Reads the envelope of a delivery.
    pub fn read(delivery: &Delivery) -> Envelope {
        let properties = &delivery.properties;
        let attempt = if from_simflow(delivery) {
            amqp::header_u32(properties, amqp::ATTEMPT_HEADER)
                .unwrap_or(1)
                .max(1)
        } else {
            1
        };
        Envelope {
            message_id: properties
                .message_id()
                .as_ref()
                .map(|id| id.as_str().to_owned())
                .filter(|id| !id.is_empty()),
            message_type: properties
                .kind()
                .as_ref()
                .map(|kind| kind.as_str().to_owned()),
            attempt,
            timestamp: properties.timestamp().as_ref().copied(),
        }
    }

    /// Seconds from the AMQP timestamp to `instant` (a moment on this machine's monotonic
    /// clock, at most a few seconds ago); `None` without a timestamp. The timestamp counts
    /// whole seconds, so the result is the true time rounded up by less than one second
    /// (never negative).
    pub fn seconds_since_timestamp(&self, instant: std::time::Instant) -> Option<f64> {
        let published = self.timestamp? as f64;
        let now = Utc::now().timestamp_micros() as f64 / 1e6;
        let at = now - instant.elapsed().as_secs_f64();
        Some((at - published).max(0.0))
    }

    /// The `type` for metric labels: a known type, or `unknown` (labels stay bounded).
    pub fn type_label(&self) -> &str {
        self.message_type
            .as_deref()
            .filter(|kind| simflow_schemas::registry::find(kind).is_some())
            .unwrap_or("unknown")
    }
}

/// A delivery the runtime cannot hand to its handler, and why.
#[derive(Debug, Clone)]
pub(crate) struct Refused {
    /// The reason, for the dead-letter headers and the `.failed` event.
    pub reason: ClerkMessage,
    /// What exactly was wrong, for ops (never a body or a secret).
    pub detail: String,
}

impl Refused {
    fn new(reason: simflow_schemas::reason::Reason, detail: String) -> Refused {
        Refused {
            reason: reason.message(),
            detail,
        }
    }
}

/// The limits every body meets before it is decoded: at most `max_body_bytes`, JSON (no
/// `content_type` counts as JSON), not compressed or otherwise encoded.
fn check_body(delivery: &Delivery, max_body_bytes: usize) -> Result<(), Refused> {
    if delivery.data.len() > max_body_bytes {
        return Err(Refused::new(
            reasons::MESSAGE_TOO_LARGE,
            format!(
                "{} bytes; the limit is {max_body_bytes}",
                delivery.data.len()
            ),
        ));
    }
    let properties = &delivery.properties;
    if let Some(content_type) = properties.content_type().as_ref() {
        let media_type = content_type
            .as_str()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim();
        if !media_type.eq_ignore_ascii_case(CONTENT_TYPE) {
            return Err(Refused::new(
                reasons::CONTENT_TYPE_UNSUPPORTED,
                format!("content_type {:?}", content_type.as_str()),
            ));
        }
    }
    if let Some(encoding) = properties.content_encoding().as_ref() {
        let encoding = encoding.as_str().trim();
        if !(encoding.is_empty() || encoding.eq_ignore_ascii_case(CONTENT_ENCODING)) {
            return Err(Refused::new(
                reasons::CONTENT_ENCODING_UNSUPPORTED,
                format!("content_encoding {encoding:?}"),
            ));
        }
    }
    Ok(())
}

/// Checks the envelope and the body's size, type and encoding, and decodes the body into the
/// queue's job enum, with the context the handler gets.
pub(crate) fn open<J: JobSet>(
    delivery: &Delivery,
    envelope: &Envelope,
    max_body_bytes: usize,
) -> Result<(JobContext, J), Refused> {
    check_body(delivery, max_body_bytes)?;
    let Some(message_id) = envelope.message_id.clone() else {
        return Err(Refused::new(
            reasons::MISSING_MESSAGE_ID,
            reasons::MISSING_MESSAGE_ID.en.to_owned(),
        ));
    };
    let Some(message_type) = envelope.message_type.clone() else {
        return Err(Refused::new(
            reasons::MISSING_MESSAGE_TYPE,
            reasons::MISSING_MESSAGE_TYPE.en.to_owned(),
        ));
    };
    let job = J::decode(&message_type, &delivery.data).map_err(|error| match error {
        DecodeError::UnknownType(kind) => Refused::new(
            reasons::UNKNOWN_MESSAGE_TYPE,
            format!("unknown message type {kind:?}"),
        ),
        DecodeError::MissingType => Refused::new(
            reasons::MISSING_MESSAGE_TYPE,
            reasons::MISSING_MESSAGE_TYPE.en.to_owned(),
        ),
        DecodeError::NotForThisQueue { message_type } => Refused::new(
            reasons::UNEXPECTED_MESSAGE_TYPE,
            format!("{message_type} on {}", delivery.routing_key),
        ),
        DecodeError::Malformed {
            message_type,
            source,
        } => Refused::new(
            reasons::MALFORMED_MESSAGE,
            format!("malformed {message_type} body: {source}"),
        ),
    })?;
    let properties = &delivery.properties;
    let context = JobContext {
        subject_id: Some(job.subject_id()),
        message_id,
        message_type,
        attempt: envelope.attempt,
        received_at: Utc::now(),
        // A retried copy was republished by simflow's own user: the validated user id of the
        // original travels in a header. Only simflow may publish to the retry exchanges
        // (deploy/rabbitmq and ARCHITECTURE.md).
        user_id: properties
            .user_id()
            .as_ref()
            .map(|user| user.as_str().to_owned())
            .or_else(|| {
                from_simflow(delivery)
                    .then(|| amqp::header_str(properties, amqp::ORIGINAL_USER_ID_HEADER))
                    .flatten()
            }),
        redelivered: delivery.redelivered,
        death_reason: (delivery.exchange.as_str() == DEAD_LETTER_EXCHANGE)
            .then(|| crate::deadletter::death_reason(properties))
            .flatten(),
    };
    Ok((context, job))
}
