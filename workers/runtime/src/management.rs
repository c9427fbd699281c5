//! A small client of the RabbitMQ management HTTP API: vhosts, users, permissions, queue
//! counters and connections.
//!
//! simflow uses it where AMQP cannot reach: provisioning an outlet's broker user with
//! permissions on only its own queue, giving each test its own vhost, and ops views.
//! It never publishes or consumes messages.

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use crate::settings::AmqpSettings;
use crate::uri::encode_segment;

/// A management API client.
#[derive(Debug, Clone)]
pub struct Management {
    /// The first node's API; request URLs are built on it.
    base: String,
    /// Every node's API, first included, in the order to try when one does not answer.
    bases: Vec<String>,
    user: String,
    password: SecretString,
    http: reqwest::Client,
}

/// Queue counters.
#[derive(Debug, Clone, Deserialize)]
pub struct QueueInfo {
    /// Name.
    pub name: String,
    /// Ready plus unacknowledged messages.
    #[serde(default)]
    pub messages: u64,
    /// Ready messages.
    #[serde(default)]
    pub messages_ready: u64,
    /// Unacknowledged messages.
    #[serde(default)]
    pub messages_unacknowledged: u64,
    /// Consumers.
    #[serde(default)]
    pub consumers: u64,
    /// Queue type (`quorum`, `classic`).
    #[serde(default, rename = "type")]
    pub queue_type: String,
    /// The node leading a quorum queue (the node of a classic one), e.g. `rabbit@host`.
    #[serde(default)]
    pub leader: Option<String>,
}

/// A queue with its counters and message rates (messages per second over the broker's
/// sampling window), as the ops console lists them.
#[derive(Debug, Clone, Deserialize)]
pub struct QueueRates {
    /// Name, depth, consumers, type.
    #[serde(flatten)]
    pub counters: QueueInfo,
    /// Publish, deliver and ack rates.
    #[serde(default)]
    pub message_stats: MessageStats,
}

/// The rates of a queue's message statistics.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MessageStats {
    /// Messages published into the queue.
    #[serde(default)]
    pub publish_details: Rate,
    /// Messages delivered to consumers (or fetched).
    #[serde(default)]
    pub deliver_get_details: Rate,
    /// Messages acknowledged.
    #[serde(default)]
    pub ack_details: Rate,
}

/// One rate.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Rate {
    /// Per second.
    #[serde(default)]
    pub rate: f64,
}

/// One broker connection.
#[derive(Debug, Clone, Deserialize)]
pub struct ConnectionInfo {
    /// The broker's name of the connection (used to close it).
    pub name: String,
    /// The vhost.
    #[serde(default)]
    pub vhost: String,
    /// The user.
    #[serde(default)]
    pub user: String,
    /// Client properties (holds `connection_name`).
    #[serde(default)]
    pub client_properties: serde_json::Value,
}

/// One node's resource use, from `/api/nodes`.
#[derive(Debug, Clone, Deserialize)]
pub struct NodeResources {
    /// Node name (`rabbit@host`).
    pub name: String,
    /// Memory in use, bytes.
    #[serde(default)]
    pub mem_used: u64,
    /// File descriptors open (sockets included).
    #[serde(default)]
    pub fd_used: u64,
    /// The node's file descriptor limit.
    #[serde(default)]
    pub fd_total: u64,
    /// Sockets open.
    #[serde(default)]
    pub sockets_used: u64,
    /// Erlang processes.
    #[serde(default)]
    pub proc_used: u64,
}

impl Management {
    /// A client for the API described by the AMQP settings. With several management URLs
    /// (a cluster), a request that reaches no node's API is sent to the next; a node that
    /// answers, even with an error status, is the answer.
    pub fn new(settings: &AmqpSettings) -> Management {
        let bases: Vec<String> = settings
            .management_bases()
            .iter()
            .map(|base| base.trim_end_matches('/').to_owned())
            .collect();
        Management {
            base: bases
                .first()
                .cloned()
                .unwrap_or_else(|| settings.management_url.trim_end_matches('/').to_owned()),
            bases,
            user: settings.management_user.clone(),
            password: settings.management_password.clone(),
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/{path}", self.base)
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> anyhow::Result<reqwest::Response> {
        self.send_expecting(request, what, |status| status.is_success())
            .await
    }

    /// Sends a DELETE of `path`; a resource that is already gone counts as deleted.
    async fn delete_if_present(&self, path: &str, what: &str) -> anyhow::Result<()> {
        self.send_expecting(self.http.delete(self.url(path)), what, |status| {
            status.is_success() || status == reqwest::StatusCode::NOT_FOUND
        })
        .await?;
        Ok(())
    }

    async fn send_expecting(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
        expected: impl Fn(reqwest::StatusCode) -> bool,
    ) -> anyhow::Result<reqwest::Response> {
        let request = request
            .basic_auth(&self.user, Some(self.password.expose_secret()))
            .build()
            .with_context(|| format!("{what}: building the request"))?;
        let response = self.send_to_any(request, what).await?;
        let status = response.status();
        if !expected(status) {
            let body = response.text().await.unwrap_or_default();
            bail!("{what}: management API answered {status}: {body}");
        }
        Ok(response)
    }

    /// Sends `request` (built on the first base) to each node's API in turn until one answers.
    async fn send_to_any(
        &self,
        request: reqwest::Request,
        what: &str,
    ) -> anyhow::Result<reqwest::Response> {
        let path = request
            .url()
            .as_str()
            .strip_prefix(&self.base)
            .unwrap_or_default()
            .to_owned();
        let mut unreachable = Vec::new();
        for base in &self.bases {
            let mut attempt = request
                .try_clone()
                .with_context(|| format!("{what}: the request cannot be sent twice"))?;
            *attempt.url_mut() = format!("{base}{path}")
                .parse()
                .with_context(|| format!("{what}: management URL {base} is not a URL"))?;
            match self.http.execute(attempt).await {
                Ok(response) => return Ok(response),
                Err(error) => unreachable.push(format!("{base}: {error}")),
            }
        }
        bail!(
            "{what}: management API unreachable ({})",
            unreachable.join("; ")
        )
    }

    /// Checks the API answers.
    pub async fn overview(&self) -> anyhow::Result<serde_json::Value> {
        let response = self
            .send(self.http.get(self.url("overview")), "overview")
            .await?;
        Ok(response.json().await?)
    }

    /// Creates a vhost (idempotent).
    pub async fn create_vhost(&self, vhost: &str) -> anyhow::Result<()> {
        let url = self.url(&format!("vhosts/{}", encode_segment(vhost)));
        self.send(self.http.put(url).json(&json!({})), "create vhost")
            .await?;
        Ok(())
    }

    /// Deletes a vhost and everything in it (missing is fine).
    pub async fn delete_vhost(&self, vhost: &str) -> anyhow::Result<()> {
        let path = format!("vhosts/{}", encode_segment(vhost));
        self.delete_if_present(&path, &format!("delete vhost {vhost}"))
            .await
    }

    /// Creates or updates a user with a password and no tags (no management access).
    pub async fn put_user(&self, user: &str, password: &SecretString) -> anyhow::Result<()> {
        let url = self.url(&format!("users/{}", encode_segment(user)));
        let body = json!({ "password": password.expose_secret(), "tags": "" });
        self.send(self.http.put(url).json(&body), "create user")
            .await?;
        Ok(())
    }

    /// Creates or updates a user that has no password (an empty hash: no password ever
    /// matches) and no tags; it can log in only by a mechanism without one, `EXTERNAL` with a
    /// client certificate.
    pub async fn put_user_without_password(&self, user: &str) -> anyhow::Result<()> {
        let url = self.url(&format!("users/{}", encode_segment(user)));
        let body = json!({ "password_hash": "", "tags": "" });
        self.send(self.http.put(url).json(&body), "create user")
            .await?;
        Ok(())
    }

    /// Deletes a user (missing is fine).
    pub async fn delete_user(&self, user: &str) -> anyhow::Result<()> {
        let path = format!("users/{}", encode_segment(user));
        self.delete_if_present(&path, &format!("delete user {user}"))
            .await
    }

    /// Sets a user's permissions in a vhost (regular expressions).
    pub async fn set_permissions(
        &self,
        vhost: &str,
        user: &str,
        configure: &str,
        write: &str,
        read: &str,
    ) -> anyhow::Result<()> {
        let url = self.url(&format!(
            "permissions/{}/{}",
            encode_segment(vhost),
            encode_segment(user)
        ));
        let body = json!({ "configure": configure, "write": write, "read": read });
        self.send(self.http.put(url).json(&body), "set permissions")
            .await?;
        Ok(())
    }

    /// Counters of one queue.
    pub async fn queue(&self, vhost: &str, queue: &str) -> anyhow::Result<QueueInfo> {
        let url = self.url(&format!(
            "queues/{}/{}",
            encode_segment(vhost),
            encode_segment(queue)
        ));
        let response = self.send(self.http.get(url), "queue info").await?;
        Ok(response.json().await?)
    }

    /// Every queue of a vhost with its counters and rates.
    pub async fn queues(&self, vhost: &str) -> anyhow::Result<Vec<QueueRates>> {
        let url = self.url(&format!("queues/{}", encode_segment(vhost)));
        let response = self.send(self.http.get(url), "list queues").await?;
        Ok(response.json().await?)
    }

    /// Connections in a vhost.
    pub async fn connections(&self, vhost: &str) -> anyhow::Result<Vec<ConnectionInfo>> {
        let url = self.url(&format!("vhosts/{}/connections", encode_segment(vhost)));
        let response = self.send(self.http.get(url), "list connections").await?;
        Ok(response.json().await?)
    }

    /// Resource use of every node of the cluster (`/api/nodes`): memory, file descriptors,
    /// sockets and Erlang processes, as the node last reported them (every 5 s by default).
    pub async fn nodes(&self) -> anyhow::Result<Vec<NodeResources>> {
        let response = self
            .send(self.http.get(self.url("nodes")), "list nodes")
            .await?;
        Ok(response.json().await?)
    }

    /// A node's memory by category in bytes (`/api/nodes/<node>/memory`), computed when asked:
    /// `queue_procs`, `connection_readers`, `mnesia`, `total` (`rss`, `allocated`, `erlang`)…
    pub async fn memory_breakdown(&self, node: &str) -> anyhow::Result<serde_json::Value> {
        let url = self.url(&format!("nodes/{}/memory", encode_segment(node)));
        let response = self.send(self.http.get(url), "node memory").await?;
        let mut body: serde_json::Value = response.json().await?;
        Ok(body["memory"].take())
    }

    /// Closes a connection by its broker name (the client sees a connection-forced close).
    pub async fn close_connection(&self, name: &str) -> anyhow::Result<()> {
        let url = self.url(&format!("connections/{}", encode_segment(name)));
        self.send(
            self.http.delete(url).header("X-Reason", "simflow test"),
            "close connection",
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::encode_segment;

    #[test]
    fn vhost_slash_and_spaces_are_encoded() {
        assert_eq!(encode_segment("/"), "%2F");
        assert_eq!(encode_segment("a b"), "a%20b");
        assert_eq!(encode_segment("simflow-test_1"), "simflow-test_1");
    }
}
