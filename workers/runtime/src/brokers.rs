//! The broker addresses a process may connect to: one node, or every node of a cluster.
//!
//! Connecting tries the addresses in turn, starting after the one the previous connection
//! used, so a process whose node went away reconnects to another node first and only comes
//! back to the lost one after trying the rest.
//! Every node of a RabbitMQ cluster serves every queue (quorum queues have a member on each
//! node), so which node a process talks to changes nothing but the path its messages take.
//!
//! This module holds addresses and chooses among them; it does not retry with backoff (the
//! session loop in `session.rs` does) and does not parse settings (`settings.rs` does).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use lapin::Connection;
use secrecy::{ExposeSecret, SecretString};

/// A non-empty list of AMQP URIs and which one to try next. Clones share the cursor.
#[derive(Clone)]
pub struct BrokerAddresses {
    uris: Arc<[SecretString]>,
    next: Arc<AtomicUsize>,
}

impl std::fmt::Debug for BrokerAddresses {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "BrokerAddresses({} addresses)", self.uris.len())
    }
}

impl BrokerAddresses {
    /// The addresses in the order to try them first; an empty list is an error.
    pub fn new(uris: Vec<SecretString>) -> anyhow::Result<BrokerAddresses> {
        anyhow::ensure!(!uris.is_empty(), "no broker address given");
        Ok(BrokerAddresses {
            uris: uris.into(),
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// One address.
    pub fn single(uri: SecretString) -> BrokerAddresses {
        BrokerAddresses {
            uris: Arc::from(vec![uri]),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// How many addresses there are.
    pub fn len(&self) -> usize {
        self.uris.len()
    }

    /// Never true (the list is never empty); here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.uris.is_empty()
    }

    /// The address the next connection tries first.
    pub fn first_to_try(&self) -> &SecretString {
        &self.uris[self.next.load(Ordering::Relaxed) % self.uris.len()]
    }

    /// The addresses in the order the next connection tries them.
    pub fn in_turn(&self) -> Vec<&SecretString> {
        let start = self.next.load(Ordering::Relaxed);
        (0..self.uris.len())
            .map(|offset| &self.uris[(start + offset) % self.uris.len()])
            .collect()
    }

    /// Opens a connection to the first address that accepts one, trying each once in turn;
    /// the next call starts after the address that answered. With every address failing, the
    /// last failure (the caller's retry loop backs off and calls again).
    pub async fn connect(&self, name: &str) -> Result<Connection, lapin::Error> {
        self.connect_with(name, None).await
    }

    /// [`Self::connect`], over TLS with a client certificate when `tls` is given (an outlet
    /// node logging in by `EXTERNAL`, see [`crate::outlet_tls`]).
    pub async fn connect_with(
        &self,
        name: &str,
        tls: Option<&crate::outlet_tls::LoadedTls>,
    ) -> Result<Connection, lapin::Error> {
        let start = self.next.load(Ordering::Relaxed);
        let mut offset = 0;
        loop {
            let index = (start + offset) % self.uris.len();
            let attempt = match tls {
                Some(tls) => crate::amqp::connect_tls(&self.uris[index], name, tls).await,
                None => crate::amqp::connect(&self.uris[index], name).await,
            };
            match attempt {
                Ok(connection) => {
                    self.next.store(index + 1, Ordering::Relaxed);
                    if offset > 0 {
                        tracing::info!(
                            connection = name,
                            node = %host_of(&self.uris[index]),
                            "connected to another broker node"
                        );
                    }
                    return Ok(connection);
                }
                Err(error) if offset + 1 >= self.uris.len() => {
                    // The next round starts after the first address of this one.
                    self.next.store(start + 1, Ordering::Relaxed);
                    return Err(error);
                }
                Err(error) => {
                    tracing::debug!(
                        connection = name,
                        node = %host_of(&self.uris[index]),
                        %error,
                        "broker node did not accept a connection; trying the next"
                    );
                    offset += 1;
                }
            }
        }
    }
}

/// `host:port` of a URI, for logs: never the user or password.
pub fn host_of(uri: &SecretString) -> String {
    match uri.expose_secret().parse::<lapin::uri::AMQPUri>() {
        Ok(parsed) => format!("{}:{}", parsed.authority.host, parsed.authority.port),
        Err(_) => "<unparsable address>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(uris: &[&str]) -> BrokerAddresses {
        BrokerAddresses::new(uris.iter().map(|uri| SecretString::from(*uri)).collect())
            .expect("not empty")
    }

    #[test]
    fn an_empty_list_is_refused() {
        assert!(BrokerAddresses::new(Vec::new()).is_err());
    }

    #[test]
    fn the_turn_starts_at_the_cursor_and_wraps() {
        let list = addresses(&["amqp://a", "amqp://b", "amqp://c"]);
        list.next.store(2, Ordering::Relaxed);
        let order: Vec<&str> = list
            .in_turn()
            .iter()
            .map(|uri| uri.expose_secret())
            .collect();
        assert_eq!(order, ["amqp://c", "amqp://a", "amqp://b"]);
        assert_eq!(list.first_to_try().expose_secret(), "amqp://c");
    }

    #[test]
    fn a_log_line_names_the_node_without_the_password() {
        let uri = SecretString::from("amqp://outlet:hunter2@10.0.0.7:5701/%2f");
        assert_eq!(host_of(&uri), "10.0.0.7:5701");
    }

    #[test]
    fn debug_output_counts_addresses_and_shows_none() {
        let list = addresses(&["amqp://guest:hunter2@127.0.0.1:5701/%2f"]);
        let printed = format!("{list:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
    }

    /// Nothing listens on these ports (the kernel's reserved port 1 and 9, the discard port):
    /// a round over addresses that all refuse ends in an error and moves the cursor on by one.
    #[tokio::test]
    async fn a_round_where_every_node_refuses_moves_the_first_try_on() {
        let list = addresses(&[
            "amqp://guest:guest@127.0.0.1:1/%2f",
            "amqp://guest:guest@127.0.0.1:9/%2f",
        ]);
        assert!(list.connect("test").await.is_err());
        assert_eq!(
            list.first_to_try().expose_secret(),
            "amqp://guest:guest@127.0.0.1:9/%2f"
        );
    }
}
