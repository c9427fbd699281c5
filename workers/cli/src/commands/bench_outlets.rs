//! `simflow bench outlets`: what outlets cost the broker, measured on the broker the settings
//! name (a private node or cluster with a raised open-file limit: `deploy/scale/outlets.sh`).
//!
//! Every outlet has its own durable queue, its own broker user with permissions on that queue
//! only, and, while its writer node runs, one idle connection consuming the queue. This
//! measures each part apart, reading the node's own accounting (`/api/nodes` and the memory
//! breakdown) before and after, so the figures are per queue, per user and per connection:
//!
//! 1. per queue variant (`--variants`): declare `--outlets` outlet queues as
//!    [`outlet_topology`] does (plus the variant's argument), read the node when they are idle
//!    and when each holds one script-sized message, then delete them;
//! 2. provision `--outlets` outlets as simflow does ([`simflow_runtime::outlet::provision`]:
//!    queue, user, permissions), timing it;
//! 3. open `--connections` idle node connections, each logged in as its outlet and consuming
//!    its queue, then close them.
//!
//! It ends with a sizing projection: the measured base plus the measured cost per outlet times
//! 1,000 / 10,000 / 100,000, linear (the node's own overhead does not grow with outlets).

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures_util::{StreamExt, TryStreamExt};
use secrecy::SecretString;
use simflow_runtime::Settings;
use simflow_runtime::management::Management;
use simflow_runtime::outlet_load::{IdleNodes, OutletLoad};
use simflow_schemas::topology::{ArgValue, Topology, outlet_topology};

use crate::world;

/// Arguments of `bench outlets`.
#[derive(Debug, Args)]
pub struct OutletsBenchArgs {
    /// Outlets (queues, users) to create.
    #[arg(long, default_value_t = 10_000)]
    pub outlets: usize,
    /// Idle node connections to open (each consumes its own outlet's queue); at most --outlets.
    #[arg(long, default_value_t = 1_000)]
    pub connections: usize,
    /// Declarations, provisionings or connections in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Queue variants to measure, comma separated: quorum (as provisioned), classic, lazy
    /// (classic, `x-queue-mode=lazy`), v2 (classic, `x-queue-version=2`).
    #[arg(long, value_delimiter = ',', default_value = "quorum,classic,lazy,v2")]
    pub variants: Vec<QueueVariant>,
    /// Seconds to wait before each reading: the node reports resources every 5 s and idle
    /// queue processes hibernate.
    #[arg(long, default_value_t = 12)]
    pub settle_seconds: u64,
    /// Size of the message each queue holds in the "one message" reading (a sealed script is
    /// about 2 KB).
    #[arg(long, default_value_t = 2048)]
    pub message_bytes: usize,
    /// Process ids of the broker's nodes on this machine, comma separated: file descriptors
    /// and sockets are then counted in `/proc/<pid>/fd` when read, rather than taken from the
    /// node's own report (refreshed only every few seconds).
    #[arg(long, value_delimiter = ',')]
    pub node_pids: Vec<u32>,
}

/// How an outlet queue is declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueueVariant {
    /// As simflow provisions it today: a quorum queue (one member per node, up to the
    /// cluster's initial group size), at-least-once dead-lettering of expired scripts.
    Quorum,
    /// A classic queue with the same TTL, single active consumer, overflow and dead-letter
    /// exchange (dead-lettering at most once: a classic queue has no at-least-once strategy).
    Classic,
    /// Classic with `x-queue-mode=lazy`: messages go to disk at once.
    Lazy,
    /// Classic with `x-queue-version=2` (the version 2 index of RabbitMQ 3.10).
    V2,
}

impl QueueVariant {
    fn name(self) -> &'static str {
        match self {
            QueueVariant::Quorum => "quorum",
            QueueVariant::Classic => "classic",
            QueueVariant::Lazy => "classic lazy",
            QueueVariant::V2 => "classic v2",
        }
    }

    fn topology(self, code: &str, settings: &Settings) -> Topology {
        let mut topology = outlet_topology(code, &settings.topology_params());
        let extra = match self {
            QueueVariant::Quorum | QueueVariant::Classic => None,
            QueueVariant::Lazy => Some(("x-queue-mode", ArgValue::Str("lazy".into()))),
            QueueVariant::V2 => Some(("x-queue-version", ArgValue::Int(2))),
        };
        for queue in &mut topology.queues {
            if self != QueueVariant::Quorum {
                queue.arguments.remove("x-queue-type");
                queue.arguments.remove("x-dead-letter-strategy");
            }
            if let Some((name, value)) = &extra {
                queue.arguments.insert((*name).to_owned(), value.clone());
            }
        }
        // Bindings need the outlets exchange, which a scratch vhost does not have; the cost
        // of one binding is part of the provisioning reading.
        topology.bindings.clear();
        topology
    }
}

/// The broker's resource use summed over its nodes.
#[derive(Debug, Clone, Default)]
struct Reading {
    /// Every category of the memory breakdown, bytes.
    categories: std::collections::BTreeMap<String, i64>,
    /// Bytes the Erlang VM uses (`total.erlang`).
    allocated: i64,
    /// Bytes of queue processes (classic, quorum and mirrors).
    queues: i64,
    /// Bytes of connection readers, writers, channels and the rest of a connection.
    connections: i64,
    /// Bytes of the metadata store and other ETS tables (users, permissions, bindings).
    tables: i64,
    fds: i64,
    sockets: i64,
    processes: i64,
    fd_limit: i64,
}

impl Reading {
    async fn take(
        management: &Management,
        settle: Duration,
        node_pids: &[u32],
    ) -> anyhow::Result<Reading> {
        tokio::time::sleep(settle).await;
        let mut reading = Reading::default();
        for node in management.nodes().await? {
            let memory = management.memory_breakdown(&node.name).await?;
            let bytes = |key: &str| memory[key].as_i64().unwrap_or(0);
            if let Some(categories) = memory.as_object() {
                for (name, value) in categories {
                    if let Some(value) = value.as_i64() {
                        *reading.categories.entry(name.clone()).or_default() += value;
                    }
                }
            }
            reading.allocated += memory["total"]["erlang"].as_i64().unwrap_or(0);
            reading.queues += bytes("queue_procs")
                + bytes("queue_slave_procs")
                + bytes("quorum_queue_procs")
                + bytes("quorum_ets");
            reading.connections += bytes("connection_readers")
                + bytes("connection_writers")
                + bytes("connection_channels")
                + bytes("connection_other");
            reading.tables += bytes("mnesia") + bytes("other_ets");
            reading.fds += i64::try_from(node.fd_used)?;
            reading.sockets += i64::try_from(node.sockets_used)?;
            reading.processes += i64::try_from(node.proc_used)?;
            reading.fd_limit += i64::try_from(node.fd_total)?;
        }
        if !node_pids.is_empty() {
            (reading.fds, reading.sockets) = (0, 0);
            for pid in node_pids {
                let (fds, sockets) = open_descriptors(*pid)?;
                reading.fds += fds;
                reading.sockets += sockets;
            }
        }
        Ok(reading)
    }

    /// The memory categories that changed most from `before`, per one of `count` things.
    fn largest_changes(&self, before: &Reading, count: usize) -> String {
        let mut changes: Vec<(&String, f64)> = self
            .categories
            .iter()
            .map(|(name, after)| {
                let before = before.categories.get(name).copied().unwrap_or(0);
                (name, (after - before) as f64 / count.max(1) as f64)
            })
            .collect();
        changes.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        changes
            .iter()
            .take(5)
            .map(|(name, bytes)| format!("{name} {bytes:+.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The change from `before`, per one of `count` things.
    fn per(&self, before: &Reading, count: usize) -> PerUnit {
        let count = count.max(1) as f64;
        let per = |after: i64, before: i64| (after - before) as f64 / count;
        PerUnit {
            allocated: per(self.allocated, before.allocated),
            queues: per(self.queues, before.queues),
            connections: per(self.connections, before.connections),
            tables: per(self.tables, before.tables),
            fds: per(self.fds, before.fds),
            sockets: per(self.sockets, before.sockets),
            processes: per(self.processes, before.processes),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct PerUnit {
    allocated: f64,
    queues: f64,
    connections: f64,
    tables: f64,
    fds: f64,
    sockets: f64,
    processes: f64,
}

impl PerUnit {
    fn print(&self, label: &str) {
        println!(
            "{label:<44} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>7.3} {:>7.3} {:>7.2}",
            self.allocated,
            self.queues,
            self.connections,
            self.tables,
            self.fds,
            self.sockets,
            self.processes
        );
    }
}

fn print_header(what: &str) {
    println!(
        "{what:<44} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7} {:>7}",
        "B total", "B queue", "B conn", "B tables", "fds", "sockets", "procs"
    );
}

/// Descriptors and, of those, sockets a local process holds open.
fn open_descriptors(pid: u32) -> anyhow::Result<(i64, i64)> {
    let dir = format!("/proc/{pid}/fd");
    let (mut fds, mut sockets) = (0, 0);
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        fds += 1;
        if let Ok(target) = std::fs::read_link(entry?.path())
            && target.to_string_lossy().starts_with("socket:")
        {
            sockets += 1;
        }
    }
    Ok((fds, sockets))
}

/// Runs the measurement in a scratch vhost; every user it made is deleted at the end.
pub async fn run(settings: Settings, args: OutletsBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.outlets > 0, "--outlets must be at least 1");
    anyhow::ensure!(
        args.connections <= args.outlets,
        "--connections ({}) cannot exceed --outlets ({}): each connection is one outlet's",
        args.connections,
        args.outlets
    );
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    let scratch = crate::scratch::Scratch::for_bench(&settings).await?;
    let management = Management::new(&scratch.settings.amqp);
    let codes: Vec<String> = (0..args.outlets)
        .map(|index| format!("SC{index:06}"))
        .collect();
    let users_made = std::sync::atomic::AtomicBool::new(false);
    let result = measure(&scratch.settings, &management, &args, &codes, &users_made).await;
    let vhost = simflow_runtime::amqp::vhost_of(&scratch.settings.amqp.uri)?;
    let made = if users_made.load(std::sync::atomic::Ordering::SeqCst) {
        &codes[..]
    } else {
        &[]
    };
    let removed = futures_util::stream::iter(made.iter())
        .map(|code| {
            let user = simflow_runtime::outlet::outlet_user(&vhost, code);
            let management = &management;
            async move { management.delete_user(&user).await }
        })
        .buffer_unordered(args.concurrency * 2)
        .try_collect::<Vec<()>>()
        .await;
    scratch.remove().await;
    removed.context("deleting the outlet users the bench made")?;
    result
}

async fn measure(
    settings: &Settings,
    management: &Management,
    args: &OutletsBenchArgs,
    codes: &[String],
    users_made: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<()> {
    let settle = Duration::from_secs(args.settle_seconds);
    let overview = management.overview().await?;
    let base = Reading::take(management, settle, &args.node_pids).await?;
    println!(
        "bench outlets: RabbitMQ {} ({} node(s)), {} outlets, {} idle connections; node file descriptor limit {} in all; base {:.1} MiB in use, {} fds",
        overview["rabbitmq_version"].as_str().unwrap_or("?"),
        management.nodes().await?.len(),
        codes.len(),
        args.connections,
        base.fd_limit,
        base.allocated as f64 / 1_048_576.0,
        base.fds
    );
    let load = OutletLoad::connect(&settings.amqp.uri, args.concurrency).await?;

    println!();
    print_header("per outlet queue (variant, state)");
    let mut per_queue = None;
    let mut declare_rates = Vec::new();
    for variant in &args.variants {
        let before = Reading::take(management, settle, &args.node_pids).await?;
        let started = Instant::now();
        let topologies: Vec<Topology> = codes
            .iter()
            .map(|code| variant.topology(code, settings))
            .collect();
        load.declare(&topologies).await?;
        declare_rates.push((
            variant.name(),
            codes.len() as f64 / started.elapsed().as_secs_f64(),
        ));
        let idle = Reading::take(management, settle, &args.node_pids).await?;
        let idle_per = idle.per(&before, codes.len());
        idle_per.print(&format!("{} queue, empty", variant.name()));
        load.fill(codes, args.message_bytes).await?;
        let full = Reading::take(management, settle, &args.node_pids).await?;
        full.per(&before, codes.len()).print(&format!(
            "{} queue, one {} B message",
            variant.name(),
            args.message_bytes
        ));
        load.delete(codes).await?;
        if *variant == QueueVariant::Quorum {
            per_queue = Some(idle_per);
        }
    }
    println!();
    for (variant, rate) in &declare_rates {
        println!("declare rate, {variant} queues: {rate:.0} queues/s");
    }

    // Provisioning as simflow does it: queue + binding, user, permissions.
    let client = world::central_client(settings, "simflow-bench-outlets-provision").await?;
    client
        .declare(&simflow_schemas::topology::central_topology(
            &settings.topology_params(),
        ))
        .await?;
    let before = Reading::take(management, settle, &args.node_pids).await?;
    let vhost = simflow_runtime::amqp::vhost_of(&settings.amqp.uri)?;
    let passwords: Vec<SecretString> = codes
        .iter()
        .map(|_| SecretString::from(uuid::Uuid::new_v4().simple().to_string()))
        .collect();
    let started = Instant::now();
    users_made.store(true, std::sync::atomic::Ordering::SeqCst);
    futures_util::stream::iter(codes.iter().zip(&passwords))
        .map(|(code, password)| {
            let client = &client;
            let params = settings.topology_params();
            let vhost = &vhost;
            async move {
                simflow_runtime::outlet::provision(
                    client, management, vhost, code, password, &params,
                )
                .await
                .with_context(|| format!("provisioning outlet {code}"))
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    let provision_rate = codes.len() as f64 / started.elapsed().as_secs_f64();
    let provisioned = Reading::take(management, settle, &args.node_pids).await?;
    let per_outlet = provisioned.per(&before, codes.len());
    println!();
    print_header("per provisioned outlet (queue, binding, user)");
    per_outlet.print("provisioned, no node connected");
    println!(
        "  largest changes per outlet (bytes): {}",
        provisioned.largest_changes(&before, codes.len())
    );
    println!(
        "provisioning rate: {provision_rate:.0} outlets/s ({} at once)",
        args.concurrency
    );

    // Idle node connections: each logs in as its outlet and consumes its queue.
    let mut per_connection = None;
    if args.connections > 0 {
        let started = Instant::now();
        let outlets = codes
            .iter()
            .zip(&passwords)
            .take(args.connections)
            .map(|(code, password)| {
                Ok((code.clone(), world::outlet_uri(settings, code, password)?))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let nodes = IdleNodes::open(outlets, args.concurrency).await?;
        let connect_rate = nodes.len() as f64 / started.elapsed().as_secs_f64();
        let connected = Reading::take(management, settle, &args.node_pids).await?;
        let per = connected.per(&provisioned, nodes.len());
        per.print("idle node connection (1 channel, 1 consumer)");
        println!(
            "  largest changes per connection (bytes): {}",
            connected.largest_changes(&provisioned, nodes.len())
        );
        println!("connection rate: {connect_rate:.0} node logins/s");
        per_connection = Some(per);
        nodes.close().await;
    }

    println!();
    println!(
        "sizing (linear: base + outlets x measured per-outlet cost; connections: all outlets online)"
    );
    println!(
        "{:>9} {:>14} {:>14} {:>12} {:>12}",
        "outlets", "MiB offline", "MiB online", "fds offline", "fds online"
    );
    let per_queue = per_queue.unwrap_or(per_outlet);
    let per_connection = per_connection.unwrap_or_default();
    for outlets in [1_000_f64, 10_000.0, 100_000.0] {
        let offline =
            base.allocated as f64 + outlets * per_outlet.allocated.max(per_queue.allocated);
        let online = offline + outlets * per_connection.allocated;
        println!(
            "{:>9} {:>14.0} {:>14.0} {:>12.0} {:>12.0}",
            outlets,
            offline / 1_048_576.0,
            online / 1_048_576.0,
            base.fds as f64 + outlets * per_outlet.fds.max(0.0),
            base.fds as f64 + outlets * (per_outlet.fds.max(0.0) + per_connection.fds)
        );
    }
    Ok(())
}
