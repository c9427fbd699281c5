//! Broker load shaped like many outlets, for `simflow bench outlets`: declare, fill and delete
//! outlet queues a few channels at a time, and hold idle node connections (each logged in as
//! its outlet and consuming its queue). Measurement and printing stay in the CLI; the broker
//! calls live here, where `lapin` is.

use anyhow::Context;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, Consumer};
use secrecy::SecretString;
use simflow_schemas::topology::{Topology, outlet_queue_name};

/// One connection the load's steps run over.
pub struct OutletLoad {
    connection: Connection,
    concurrency: usize,
}

impl std::fmt::Debug for OutletLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutletLoad")
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

impl OutletLoad {
    /// Connects; every step runs `concurrency` channels at once.
    pub async fn connect(uri: &SecretString, concurrency: usize) -> anyhow::Result<OutletLoad> {
        anyhow::ensure!(concurrency > 0, "concurrency must be at least 1");
        let connection = crate::amqp::connect(uri, "simflow-bench-outlets")
            .await
            .context("connecting to the broker")?;
        Ok(OutletLoad {
            connection,
            concurrency,
        })
    }

    /// Declares every topology (one per outlet).
    pub async fn declare(&self, topologies: &[Topology]) -> anyhow::Result<()> {
        self.on_channels(topologies, false, |channel, topology| async move {
            crate::amqp::declare(&channel, topology)
                .await
                .with_context(|| {
                    format!(
                        "declaring {}",
                        topology
                            .queues
                            .first()
                            .map_or("", |queue| queue.name.as_str())
                    )
                })
        })
        .await
    }

    /// Puts one persistent message of `bytes` bytes in each outlet's queue (confirmed).
    pub async fn fill(&self, codes: &[String], bytes: usize) -> anyhow::Result<()> {
        let body = vec![b'x'; bytes];
        let body = &body;
        self.on_channels(codes, true, |channel, code| async move {
            channel
                .basic_publish(
                    "".into(),
                    outlet_queue_name(code).as_str().into(),
                    BasicPublishOptions::default(),
                    body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?
                .await?;
            Ok(())
        })
        .await
    }

    /// Deletes each outlet's queue.
    pub async fn delete(&self, codes: &[String]) -> anyhow::Result<()> {
        self.on_channels(codes, false, |channel, code| async move {
            channel
                .queue_delete(
                    outlet_queue_name(code).as_str().into(),
                    lapin::options::QueueDeleteOptions::default(),
                )
                .await?;
            Ok(())
        })
        .await
    }

    /// Runs `step` for every item, `concurrency` channels at once, one item at a time per
    /// channel (AMQP methods on one channel are answered in order); with `confirms`, in
    /// confirm mode.
    async fn on_channels<'a, T, F, Fut>(
        &self,
        items: &'a [T],
        confirms: bool,
        step: F,
    ) -> anyhow::Result<()>
    where
        F: Fn(Channel, &'a T) -> Fut + Copy,
        Fut: std::future::Future<Output = anyhow::Result<()>>,
    {
        let lanes = (0..self.concurrency).map(|lane| async move {
            let channel = self.connection.create_channel().await?;
            if confirms {
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await?;
            }
            for item in items.iter().skip(lane).step_by(self.concurrency) {
                step(channel.clone(), item).await?;
            }
            let _ = channel.close(200, "done".into()).await;
            anyhow::Ok(())
        });
        futures_util::future::try_join_all(lanes).await?;
        Ok(())
    }

    /// Closes the connection.
    pub async fn close(self) {
        let _ = self.connection.close(200, "bench done".into()).await;
    }
}

/// Idle node connections: each logged in as its outlet and consuming its queue, as a writer
/// node waiting for work.
pub struct IdleNodes {
    nodes: Vec<(Connection, Consumer)>,
}

impl std::fmt::Debug for IdleNodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleNodes")
            .field("connections", &self.nodes.len())
            .finish()
    }
}

impl IdleNodes {
    /// Opens one connection per `(outlet code, its broker URI)`, `concurrency` at a time.
    pub async fn open(
        outlets: Vec<(String, SecretString)>,
        concurrency: usize,
    ) -> anyhow::Result<IdleNodes> {
        use futures_util::{StreamExt, TryStreamExt};
        let nodes = futures_util::stream::iter(outlets)
            .map(|(code, uri)| async move {
                let connection = crate::amqp::connect(&uri, &format!("bench-node-{code}"))
                    .await
                    .with_context(|| format!("outlet {code} connecting"))?;
                let channel = connection.create_channel().await?;
                let consumer = channel
                    .basic_consume(
                        outlet_queue_name(&code).as_str().into(),
                        "bench-node".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .with_context(|| format!("outlet {code} consuming its queue"))?;
                anyhow::Ok((connection, consumer))
            })
            .buffer_unordered(concurrency.max(1))
            .try_collect()
            .await?;
        Ok(IdleNodes { nodes })
    }

    /// How many are open.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Closes them all.
    pub async fn close(self) {
        for (connection, consumer) in self.nodes {
            drop(consumer);
            let _ = connection.close(200, "bench done".into()).await;
        }
    }
}
