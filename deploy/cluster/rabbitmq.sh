#!/usr/bin/env bash
# A 3-node RabbitMQ cluster on this machine, for failover tests and the cluster benchmark:
# Debian's rabbitmq-server run three times as simflow-c1@localhost … simflow-c3@localhost,
# each with its own data and logs under SIMFLOW_RABBIT_CLUSTER_DIR (default
# /var/lib/simflow/cluster/rabbitmq/cN), the same Erlang cookie, 127.0.0.1 only, and the
# machine's epmd. The machine's own broker (5672) is never touched.
#
#   deploy/cluster/rabbitmq.sh start          # start what is not running, join, apply definitions
#   deploy/cluster/rabbitmq.sh stop           # stop all three and remove their data
#   deploy/cluster/rabbitmq.sh stop --keep-data
#   deploy/cluster/rabbitmq.sh status         # nodes, cluster members, quorum queue members
#   deploy/cluster/rabbitmq.sh kill cN        # SIGKILL one node (tests); `start` brings it back
#   deploy/cluster/rabbitmq.sh env            # the SIMFLOW__AMQP__… lines that point at the cluster
#   deploy/cluster/rabbitmq.sh ctl cN ARGS…   # rabbitmqctl against one node
#
# Node N (1–3) listens on AMQP 570N, management 1570N, Erlang distribution 2570N, Prometheus
# 1571N; rabbitmqctl's own distribution uses 35701–35711. `start` is idempotent: nodes already
# running are left alone, a node that was stopped or killed starts again and rejoins (its data
# says which cluster it belongs to). Quorum queues declared once all three nodes run get a
# member on each (x-quorum-initial-group-size defaults to the cluster size), so `start` applies
# the topology (deploy/rabbitmq/definitions.json) only after the join; workers declare the
# same topology on every connect.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

base="${SIMFLOW_RABBIT_CLUSTER_DIR:-/var/lib/simflow/cluster/rabbitmq}"
nodes=(c1 c2 c3)
# shellcheck source=rabbitmq-node.sh
source deploy/cluster/rabbitmq-node.sh

say() { echo "rabbitmq.sh: $*" >&2; }

# Selects node cN for the rabbit_* functions.
use_node() {
    local name="$1"
    local number="${name#c}"
    [[ "$name" =~ ^c[123]$ ]] || { say "no node $name (use c1, c2 or c3)"; exit 2; }
    RABBIT_HOME="$base/$name"
    RABBIT_NODE="simflow-$name@localhost"
    RABBIT_AMQP_PORT=$((5700 + number))
    RABBIT_MANAGEMENT_PORT=$((15700 + number))
    RABBIT_DIST_PORT=$((25700 + number))
    RABBIT_PROMETHEUS_PORT=$((15710 + number))
    RABBIT_CTL_PORT_MIN=35701
    RABBIT_SAY=rabbitmq.sh
}

cookie() {
    if [[ ! -s "$base/.erlang.cookie" ]]; then
        mkdir -p "$base"
        chmod 700 "$base"
        head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$base/.erlang.cookie"
        chmod 400 "$base/.erlang.cookie"
    fi
    cat "$base/.erlang.cookie"
}

start() {
    local shared launched=()
    shared=$(cookie)
    # Launch every node that is not running at once: a node of an existing cluster waits for
    # its peers' tables while it boots, and three boots in a row take three times as long.
    for name in "${nodes[@]}"; do
        use_node "$name"
        if rabbit_running; then continue; fi
        if [[ ! -d "$RABBIT_HOME/mnesia" ]]; then rabbit_init "$shared"; fi
        rabbit_launch
        launched+=("$name")
    done
    for name in "${launched[@]}"; do
        use_node "$name"
        rabbit_wait
    done
    if [[ ! -f "$base/joined" ]]; then
        for name in c2 c3; do
            use_node "$name"
            say "joining simflow-$name@localhost to simflow-c1@localhost"
            rabbit_ctl stop_app >/dev/null
            rabbit_ctl join_cluster simflow-c1@localhost >/dev/null
            rabbit_ctl start_app >/dev/null
        done
        use_node c1
        rabbit_ctl await_online_nodes 3 --timeout 120 >/dev/null 2>&1 || true
        say "applying deploy/rabbitmq/definitions.json"
        rabbit_ctl import_definitions "$PWD/deploy/rabbitmq/definitions.json" >/dev/null
        touch "$base/joined"
    fi
    local running
    use_node c1
    running=$(running_nodes)
    if [[ "$running" != 3 ]]; then
        say "the cluster has $running running nodes, not 3 (see $base/cN/log)"
        exit 1
    fi
    say "3 nodes running: AMQP 127.0.0.1:5701-5703, management 15701-15703"
}

# How many nodes the cluster reports running (asked of any running node).
running_nodes() {
    local name count
    for name in "${nodes[@]}"; do
        use_node "$name"
        rabbit_running || continue
        if count=$(curl -fsS -u guest:guest "http://127.0.0.1:$RABBIT_MANAGEMENT_PORT/api/nodes?columns=name,running" 2>/dev/null |
            grep -o '"running":true' | wc -l); then
            echo "$count"
            return 0
        fi
    done
    echo 0
}

stop() {
    local keep="${1:-}" name pids=()
    # Stop in parallel: each graceful stop waits for its own node only.
    for name in "${nodes[@]}"; do
        use_node "$name"
        rabbit_stop stop &
        pids+=($!)
    done
    local failed=0
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    for name in "${nodes[@]}"; do
        use_node "$name"
        if rabbit_running; then
            say "simflow-$name@localhost is still running"
            failed=1
        fi
    done
    if ((failed == 0)) && [[ "$keep" != --keep-data ]]; then
        rm -rf "$base"
    fi
    return "$failed"
}

status() {
    local name
    for name in "${nodes[@]}"; do
        use_node "$name"
        if rabbit_running; then
            echo "simflow-$name@localhost running (pid $(cat "$RABBIT_HOME/node.pid"), AMQP $RABBIT_AMQP_PORT, management $RABBIT_MANAGEMENT_PORT)"
        else
            echo "simflow-$name@localhost not running"
        fi
    done
    for name in "${nodes[@]}"; do
        use_node "$name"
        rabbit_running || continue
        rabbit_ctl list_queues -p / --quiet --formatter pretty_table \
            name type leader members online messages
        return 0
    done
    return 3
}

command="${1:-}"
shift || true
case "$command" in
    start) start ;;
    stop) stop "${1:-}" ;;
    status) status ;;
    kill)
        use_node "${1:?usage: rabbitmq.sh kill cN}"
        rabbit_stop kill
        ;;
    env)
        echo "SIMFLOW__AMQP__URIS=amqp://guest:guest@127.0.0.1:5701/%2f,amqp://guest:guest@127.0.0.1:5702/%2f,amqp://guest:guest@127.0.0.1:5703/%2f"
        echo "SIMFLOW__AMQP__MANAGEMENT_URLS=http://127.0.0.1:15701,http://127.0.0.1:15702,http://127.0.0.1:15703"
        ;;
    ctl)
        use_node "${1:?usage: rabbitmq.sh ctl cN ARGS…}"
        shift
        rabbit_ctl "$@"
        ;;
    *)
        say "usage: rabbitmq.sh start|stop [--keep-data]|status|kill cN|env|ctl cN ARGS…"
        exit 2
        ;;
esac
