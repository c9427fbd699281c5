//! The broker topology as plain data: exchanges, queues with their arguments, and bindings.
//!
//! The runtime declares exactly this on every (re)connect, `deploy/rabbitmq/definitions.json` is
//! generated from it, and the AsyncAPI document names the same objects; a test keeps the files in
//! step. Nothing here talks to a broker.
//!
//! Safety-critical settings (quorum type, delivery limit, dead-letter exchange, at-least-once
//! dead-lettering, reject-publish overflow) are queue *arguments*, so a queue can never exist
//! without them; policies in the definitions only add operator-tunable extras.

use std::collections::BTreeMap;
use std::time::Duration;

/// Jobs from upstream systems: direct, routing key = the job queue's key (`transfer`, …).
/// Only the queues upstream may feed are bound here ([`JobQueue::UPSTREAM`]).
pub const JOBS_EXCHANGE: &str = "simflow.jobs";
/// simflow's own way into every central queue (retries coming back, replays from the
/// dead-letter queues): direct, routing key = the queue's key. Only simflow's own broker user
/// may write to it, so a delivery that arrives through it carries headers simflow set.
pub const INTERNAL_EXCHANGE: &str = "simflow.internal";
/// Events no queue is bound for land here (the events exchange's alternate exchange), so an
/// outcome is never unroutable; a bounded queue keeps the newest of them for ops.
pub const UNROUTED_EVENTS: &str = "simflow.events.unrouted";
/// How many unrouted events the unrouted queue keeps (oldest dropped first).
pub const UNROUTED_EVENTS_KEPT: i64 = 10_000;
/// Outcome events: topic, routing key = `<kind>.<event>` (`transfer.approved_in`, …).
pub const EVENTS_EXCHANGE: &str = "simflow.events";
/// Work for outlet writer nodes: direct, routing key = outlet code.
pub const OUTLETS_EXCHANGE: &str = "simflow.outlets";
/// The only exchange outlet nodes may publish to: direct, routing key [`OUTLET_RESULTS_KEY`].
pub const RESULTS_EXCHANGE: &str = "simflow.results";
/// Where rejected, expired and over-delivered messages go: direct, routing key
/// `dead.<queue key>` (or [`OUTLET_EXPIRED_KEY`] for outlet queues).
pub const DEAD_LETTER_EXCHANGE: &str = "simflow.dlx";
/// Prefix of the per-delay retry exchanges and queues (`simflow.retry.5s`).
pub const RETRY_PREFIX: &str = "simflow.retry.";
/// Prefix of outlet queues (`simflow.outlet.<code>`).
pub const OUTLET_QUEUE_PREFIX: &str = "simflow.outlet.";
/// Routing key outlets publish their results with.
pub const OUTLET_RESULTS_KEY: &str = "outlet-results";
/// Dead-letter routing key of every outlet queue (expired scripts and read requests).
pub const OUTLET_EXPIRED_KEY: &str = "outlet-expired";

/// The largest message body the contract allows, in bytes (1 MiB): the default of the workers'
/// `[amqp] max_message_bytes` and the broker's `max_message_size`
/// (`deploy/rabbitmq/rabbitmq.conf.example`), which refuses a larger publish.
pub const MAX_MESSAGE_BYTES: u64 = 1_048_576;

/// The one `content_type` of the contract (a message without one is taken as JSON).
pub const CONTENT_TYPE: &str = "application/json";

/// The one `content_encoding` of the contract besides none: bodies are never compressed.
pub const CONTENT_ENCODING: &str = "identity";

/// A broker user's permissions in a vhost: regular expressions over resource names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    /// Declare and delete.
    pub configure: &'static str,
    /// Publish to an exchange; bind a queue (write on the queue).
    pub write: &'static str,
    /// Consume from a queue; bind to an exchange (read on the exchange).
    pub read: &'static str,
}

/// The broker user upstream systems (CRM, ESS, the counter app) connect as, in the definitions.
pub const UPSTREAM_USER: &str = "simflow-upstream";

/// What an upstream system may do: publish jobs to [`JOBS_EXCHANGE`] and nowhere else, and
/// keep queues of its own (named `upstream.*`, or server-named `amq.gen-*`) bound to
/// [`EVENTS_EXCHANGE`] to read its answers. It cannot reach [`INTERNAL_EXCHANGE`], the outlets',
/// results', retry or dead-letter exchanges, nor any `simflow.*` queue.
pub const UPSTREAM_PERMISSIONS: Permissions = Permissions {
    configure: "^(upstream\\..*|amq\\.gen-.*)$",
    write: "^(simflow\\.jobs|upstream\\..*|amq\\.gen-.*)$",
    read: "^(simflow\\.events|upstream\\..*|amq\\.gen-.*)$",
};

/// A central queue that a worker consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobQueue {
    /// Warehouse transfers.
    Transfer,
    /// Batch issue to agents.
    Issue,
    /// Batch return from agents.
    Return,
    /// Card data file imports.
    CardFile,
    /// Write requests and the order lifecycle.
    WriteCard,
    /// Read answers and write results from outlet nodes.
    OutletResults,
    /// Outlet work that expired before a writer took it.
    OutletExpired,
}

impl JobQueue {
    /// Every central queue.
    pub const ALL: [JobQueue; 7] = [
        JobQueue::Transfer,
        JobQueue::Issue,
        JobQueue::Return,
        JobQueue::CardFile,
        JobQueue::WriteCard,
        JobQueue::OutletResults,
        JobQueue::OutletExpired,
    ];

    /// The short key: routing key on the jobs and dead-letter exchanges, and the event prefix.
    pub fn key(self) -> &'static str {
        match self {
            JobQueue::Transfer => "transfer",
            JobQueue::Issue => "issue",
            JobQueue::Return => "return",
            JobQueue::CardFile => "cardfile",
            JobQueue::WriteCard => "writecard",
            JobQueue::OutletResults => OUTLET_RESULTS_KEY,
            JobQueue::OutletExpired => OUTLET_EXPIRED_KEY,
        }
    }

    /// The queue's name, e.g. `simflow.transfer`.
    pub fn queue_name(self) -> String {
        format!("simflow.{}", self.key())
    }

    /// The queue's dead-letter queue, e.g. `simflow.transfer.dlq`.
    pub fn dead_letter_queue(self) -> String {
        format!("simflow.{}.dlq", self.key())
    }

    /// The routing key its dead letters carry on the dead-letter exchange, e.g. `dead.transfer`.
    /// Distinct from every other routing key on that exchange, so no dead letter loops back.
    pub fn dead_letter_key(self) -> String {
        format!("dead.{}", self.key())
    }

    /// The queues upstream systems feed through [`JOBS_EXCHANGE`]; the others are fed by
    /// outlet nodes (results) or by the broker's dead-lettering (expired outlet work).
    pub const UPSTREAM: [JobQueue; 5] = [
        JobQueue::Transfer,
        JobQueue::Issue,
        JobQueue::Return,
        JobQueue::CardFile,
        JobQueue::WriteCard,
    ];

    /// Whether upstream systems may publish to this queue.
    pub fn is_upstream(self) -> bool {
        JobQueue::UPSTREAM.contains(&self)
    }

    /// Looks a queue up by its key.
    pub fn from_key(key: &str) -> Option<JobQueue> {
        JobQueue::ALL.into_iter().find(|queue| queue.key() == key)
    }
}

/// The tunable numbers of the topology. Changing one changes queue arguments, which the broker
/// refuses for an existing queue: such a change is a migration (new queue names or a drain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyParams {
    /// Deliveries of one message before the broker dead-letters it (`delivery_limit`).
    pub delivery_limit: u32,
    /// The retry levels, shortest first; one TTL queue per level.
    pub retry_delays: Vec<Duration>,
    /// How long work waits in an outlet queue before it expires.
    pub outlet_message_ttl: Duration,
}

impl Default for TopologyParams {
    fn default() -> Self {
        Self {
            delivery_limit: 5,
            retry_delays: vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(30),
                Duration::from_secs(120),
            ],
            outlet_message_ttl: Duration::from_secs(120),
        }
    }
}

/// An exchange argument: the alternate exchange that takes what no binding routes.
pub const ALTERNATE_EXCHANGE_ARGUMENT: &str = "alternate-exchange";

/// An exchange's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    /// Exact routing key match.
    Direct,
    /// Pattern routing key match.
    Topic,
    /// Every bound queue.
    Fanout,
}

impl ExchangeKind {
    /// The AMQP name of the type.
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Fanout => "fanout",
        }
    }
}

/// A queue argument's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgValue {
    /// A string argument.
    Str(String),
    /// An integer argument.
    Int(i64),
    /// A boolean argument.
    Bool(bool),
}

/// Arguments as the JSON object the broker's definitions and the AsyncAPI bindings write.
pub fn arguments_json(arguments: &BTreeMap<String, ArgValue>) -> serde_json::Value {
    arguments
        .iter()
        .map(|(name, value)| {
            let value = match value {
                ArgValue::Str(text) => serde_json::Value::from(text.as_str()),
                ArgValue::Int(number) => serde_json::Value::from(*number),
                ArgValue::Bool(flag) => serde_json::Value::from(*flag),
            };
            (name.clone(), value)
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// A durable exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeSpec {
    /// Name.
    pub name: String,
    /// Type.
    pub kind: ExchangeKind,
    /// Arguments (the alternate exchange).
    pub arguments: BTreeMap<String, ArgValue>,
}

impl ExchangeSpec {
    /// An exchange without arguments.
    pub fn new(name: &str, kind: ExchangeKind) -> ExchangeSpec {
        ExchangeSpec {
            name: name.to_owned(),
            kind,
            arguments: BTreeMap::new(),
        }
    }
}

/// A durable queue with its declare arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    /// Name.
    pub name: String,
    /// `x-…` arguments.
    pub arguments: BTreeMap<String, ArgValue>,
}

/// A queue bound to an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingSpec {
    /// The exchange.
    pub exchange: String,
    /// The queue.
    pub queue: String,
    /// The binding key.
    pub routing_key: String,
}

/// A set of broker objects to declare together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    /// Exchanges, declared first.
    pub exchanges: Vec<ExchangeSpec>,
    /// Queues.
    pub queues: Vec<QueueSpec>,
    /// Bindings, declared last.
    pub bindings: Vec<BindingSpec>,
}

/// The name of the retry exchange and queue for one delay, e.g. `simflow.retry.5s`.
pub fn retry_name(delay: Duration) -> String {
    if delay.subsec_millis() == 0 {
        format!("{RETRY_PREFIX}{}s", delay.as_secs())
    } else {
        format!("{RETRY_PREFIX}{}ms", delay.as_millis())
    }
}

/// The name of an outlet's queue, e.g. `simflow.outlet.HX0001`.
pub fn outlet_queue_name(outlet_code: &str) -> String {
    format!("{OUTLET_QUEUE_PREFIX}{outlet_code}")
}

fn quorum_arguments() -> BTreeMap<String, ArgValue> {
    BTreeMap::from([(
        "x-queue-type".to_owned(),
        ArgValue::Str("quorum".to_owned()),
    )])
}

fn dead_lettering_arguments(
    exchange: &str,
    routing_key: Option<&str>,
) -> BTreeMap<String, ArgValue> {
    let mut arguments = quorum_arguments();
    arguments.insert(
        "x-dead-letter-exchange".to_owned(),
        ArgValue::Str(exchange.to_owned()),
    );
    if let Some(routing_key) = routing_key {
        arguments.insert(
            "x-dead-letter-routing-key".to_owned(),
            ArgValue::Str(routing_key.to_owned()),
        );
    }
    arguments.insert(
        "x-dead-letter-strategy".to_owned(),
        ArgValue::Str("at-least-once".to_owned()),
    );
    arguments.insert(
        "x-overflow".to_owned(),
        ArgValue::Str("reject-publish".to_owned()),
    );
    arguments
}

fn work_queue_arguments(queue: JobQueue, params: &TopologyParams) -> BTreeMap<String, ArgValue> {
    let mut arguments =
        dead_lettering_arguments(DEAD_LETTER_EXCHANGE, Some(&queue.dead_letter_key()));
    arguments.insert(
        "x-delivery-limit".to_owned(),
        ArgValue::Int(i64::from(params.delivery_limit)),
    );
    arguments
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Everything the central side owns: exchanges, work queues, dead-letter and retry queues.
pub fn central_topology(params: &TopologyParams) -> Topology {
    let mut events = ExchangeSpec::new(EVENTS_EXCHANGE, ExchangeKind::Topic);
    events.arguments.insert(
        ALTERNATE_EXCHANGE_ARGUMENT.to_owned(),
        ArgValue::Str(UNROUTED_EVENTS.to_owned()),
    );
    let mut topology = Topology {
        exchanges: vec![
            // The alternate exchange first: it must exist when the events exchange names it.
            ExchangeSpec::new(UNROUTED_EVENTS, ExchangeKind::Fanout),
            ExchangeSpec::new(JOBS_EXCHANGE, ExchangeKind::Direct),
            ExchangeSpec::new(INTERNAL_EXCHANGE, ExchangeKind::Direct),
            events,
            ExchangeSpec::new(OUTLETS_EXCHANGE, ExchangeKind::Direct),
            ExchangeSpec::new(RESULTS_EXCHANGE, ExchangeKind::Direct),
            ExchangeSpec::new(DEAD_LETTER_EXCHANGE, ExchangeKind::Direct),
        ],
        ..Topology::default()
    };
    let mut unrouted = quorum_arguments();
    unrouted.insert(
        "x-max-length".to_owned(),
        ArgValue::Int(UNROUTED_EVENTS_KEPT),
    );
    unrouted.insert(
        "x-overflow".to_owned(),
        ArgValue::Str("drop-head".to_owned()),
    );
    topology.queues.push(QueueSpec {
        name: UNROUTED_EVENTS.to_owned(),
        arguments: unrouted,
    });
    topology.bindings.push(BindingSpec {
        exchange: UNROUTED_EVENTS.to_owned(),
        queue: UNROUTED_EVENTS.to_owned(),
        routing_key: String::new(),
    });
    for queue in JobQueue::ALL {
        topology.queues.push(QueueSpec {
            name: queue.queue_name(),
            arguments: work_queue_arguments(queue, params),
        });
        topology.queues.push(QueueSpec {
            name: queue.dead_letter_queue(),
            arguments: quorum_arguments(),
        });
        if queue.is_upstream() {
            topology.bindings.push(BindingSpec {
                exchange: JOBS_EXCHANGE.to_owned(),
                queue: queue.queue_name(),
                routing_key: queue.key().to_owned(),
            });
        }
        topology.bindings.push(BindingSpec {
            exchange: INTERNAL_EXCHANGE.to_owned(),
            queue: queue.queue_name(),
            routing_key: queue.key().to_owned(),
        });
        topology.bindings.push(BindingSpec {
            exchange: DEAD_LETTER_EXCHANGE.to_owned(),
            queue: queue.dead_letter_queue(),
            routing_key: queue.dead_letter_key(),
        });
    }
    topology.bindings.push(BindingSpec {
        exchange: RESULTS_EXCHANGE.to_owned(),
        queue: JobQueue::OutletResults.queue_name(),
        routing_key: OUTLET_RESULTS_KEY.to_owned(),
    });
    topology.bindings.push(BindingSpec {
        exchange: DEAD_LETTER_EXCHANGE.to_owned(),
        queue: JobQueue::OutletExpired.queue_name(),
        routing_key: OUTLET_EXPIRED_KEY.to_owned(),
    });
    for delay in &params.retry_delays {
        let name = retry_name(*delay);
        topology
            .exchanges
            .push(ExchangeSpec::new(&name, ExchangeKind::Fanout));
        // No dead-letter routing key: an expired retry keeps the routing key it was published
        // with, which is the key of the work queue it came from; it comes back through the
        // internal exchange, which upstream cannot write to.
        let mut arguments = dead_lettering_arguments(INTERNAL_EXCHANGE, None);
        arguments.insert("x-message-ttl".to_owned(), ArgValue::Int(millis(*delay)));
        topology.queues.push(QueueSpec {
            name: name.clone(),
            arguments,
        });
        topology.bindings.push(BindingSpec {
            exchange: name.clone(),
            queue: name,
            routing_key: String::new(),
        });
    }
    topology
}

/// One outlet's queue: single active consumer, expiring work, dead-lettered as expired.
pub fn outlet_topology(outlet_code: &str, params: &TopologyParams) -> Topology {
    let name = outlet_queue_name(outlet_code);
    let mut arguments = dead_lettering_arguments(DEAD_LETTER_EXCHANGE, Some(OUTLET_EXPIRED_KEY));
    arguments.insert("x-single-active-consumer".to_owned(), ArgValue::Bool(true));
    arguments.insert(
        "x-message-ttl".to_owned(),
        ArgValue::Int(millis(params.outlet_message_ttl)),
    );
    Topology {
        exchanges: Vec::new(),
        queues: vec![QueueSpec {
            name: name.clone(),
            arguments,
        }],
        bindings: vec![BindingSpec {
            exchange: OUTLETS_EXCHANGE.to_owned(),
            queue: name,
            routing_key: outlet_code.to_owned(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_work_queue_has_a_delivery_limit_and_at_least_once_dead_lettering() {
        let topology = central_topology(&TopologyParams::default());
        for queue in JobQueue::ALL {
            let spec = topology
                .queues
                .iter()
                .find(|spec| spec.name == queue.queue_name())
                .expect("work queue declared");
            assert_eq!(spec.arguments["x-delivery-limit"], ArgValue::Int(5));
            assert_eq!(
                spec.arguments["x-dead-letter-strategy"],
                ArgValue::Str("at-least-once".into())
            );
            assert_eq!(
                spec.arguments["x-overflow"],
                ArgValue::Str("reject-publish".into())
            );
            assert!(
                topology
                    .bindings
                    .iter()
                    .any(|binding| binding.queue == queue.dead_letter_queue()
                        && binding.exchange == DEAD_LETTER_EXCHANGE
                        && binding.routing_key == queue.dead_letter_key()),
                "{queue:?} has a dead-letter queue bound by its key"
            );
        }
    }

    #[test]
    fn retry_queues_return_to_the_jobs_exchange_after_their_delay() {
        let topology = central_topology(&TopologyParams::default());
        let retry = topology
            .queues
            .iter()
            .find(|spec| spec.name == "simflow.retry.5s")
            .expect("5 s retry queue");
        assert_eq!(retry.arguments["x-message-ttl"], ArgValue::Int(5000));
        assert_eq!(
            retry.arguments["x-dead-letter-exchange"],
            ArgValue::Str(INTERNAL_EXCHANGE.into())
        );
        assert!(!retry.arguments.contains_key("x-dead-letter-routing-key"));
    }

    #[test]
    fn no_dead_letter_routes_back_into_the_queue_it_left() {
        let topology = central_topology(&TopologyParams::default());
        for queue in &topology.queues {
            let Some(ArgValue::Str(key)) = queue.arguments.get("x-dead-letter-routing-key") else {
                continue;
            };
            let Some(ArgValue::Str(exchange)) = queue.arguments.get("x-dead-letter-exchange")
            else {
                panic!("{} has a dead-letter key but no exchange", queue.name);
            };
            assert!(
                !topology
                    .bindings
                    .iter()
                    .any(|binding| &binding.exchange == exchange
                        && &binding.routing_key == key
                        && binding.queue == queue.name),
                "{} dead-letters into itself",
                queue.name
            );
        }
    }

    #[test]
    fn upstream_reaches_only_the_upstream_queues_and_simflow_reaches_every_queue() {
        let topology = central_topology(&TopologyParams::default());
        let reached = |exchange: &str| -> Vec<String> {
            topology
                .bindings
                .iter()
                .filter(|binding| binding.exchange == exchange)
                .map(|binding| binding.queue.clone())
                .collect()
        };
        let upstream: Vec<String> = JobQueue::UPSTREAM.iter().map(|q| q.queue_name()).collect();
        assert_eq!(reached(JOBS_EXCHANGE), upstream);
        let every: Vec<String> = JobQueue::ALL.iter().map(|q| q.queue_name()).collect();
        assert_eq!(reached(INTERNAL_EXCHANGE), every);
        assert!(!reached(JOBS_EXCHANGE).contains(&JobQueue::OutletExpired.queue_name()));
        assert!(!reached(JOBS_EXCHANGE).contains(&JobQueue::OutletResults.queue_name()));
    }

    #[test]
    fn unrouted_events_land_in_a_bounded_queue() {
        let topology = central_topology(&TopologyParams::default());
        let events = topology
            .exchanges
            .iter()
            .position(|exchange| exchange.name == EVENTS_EXCHANGE)
            .expect("events exchange");
        let alternate = topology
            .exchanges
            .iter()
            .position(|exchange| exchange.name == UNROUTED_EVENTS)
            .expect("alternate exchange");
        assert!(alternate < events, "declared before the exchange naming it");
        assert_eq!(
            topology.exchanges[events].arguments[ALTERNATE_EXCHANGE_ARGUMENT],
            ArgValue::Str(UNROUTED_EVENTS.into())
        );
        let queue = topology
            .queues
            .iter()
            .find(|queue| queue.name == UNROUTED_EVENTS)
            .expect("unrouted queue");
        assert_eq!(
            queue.arguments["x-max-length"],
            ArgValue::Int(UNROUTED_EVENTS_KEPT)
        );
    }

    #[test]
    fn retry_names_keep_sub_second_delays_distinct() {
        assert_eq!(
            retry_name(Duration::from_millis(250)),
            "simflow.retry.250ms"
        );
        assert_eq!(retry_name(Duration::from_secs(30)), "simflow.retry.30s");
    }
}
