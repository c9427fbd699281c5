//! What an outlet node says about itself (not about a card): its heartbeat.
//!
//! The node publishes it on the results path it already may write to, as its own broker user
//! (validated `user_id`); the centre records when it arrived (on the centre's clock) as the
//! outlet's "last seen". It carries no secret: a key fingerprint is public.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::outlet_code_schema;

/// `outlet.heartbeat.v1`: the node is running, consuming its queue, and can publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutletHeartbeat {
    /// The outlet.
    #[schemars(schema_with = "outlet_code_schema")]
    pub outlet_code: String,
    /// The node's software version (`simflow` package version).
    pub node_version: String,
    /// The fingerprint of the key the node opens scripts with, when it holds one; the centre
    /// warns when it differs from the key it seals to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<String>,
    /// When the node sent it (the node's clock: informative only).
    pub sent_at: DateTime<Utc>,
}

/// `outlet.key_rotated.v1`: the node made itself a new key pair (the secret never leaves it)
/// and asks the centre to seal scripts to the new public key from now on. The node keeps its
/// previous secret key until `previous_key_retires_at` (scripts sealed before the rotation
/// still open until then) and deletes it after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutletKeyRotated {
    /// The outlet.
    #[schemars(schema_with = "outlet_code_schema")]
    pub outlet_code: String,
    /// The new X25519 public key, base64.
    pub public_key: String,
    /// The fingerprint of the key it replaces (the one the centre seals to now).
    pub previous_fingerprint: String,
    /// When the node deletes the previous secret key.
    pub previous_key_retires_at: DateTime<Utc>,
}
