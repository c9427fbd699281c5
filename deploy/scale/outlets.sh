#!/usr/bin/env bash
# What outlets cost the broker: starts a private RabbitMQ node (127.0.0.1:5721, management
# 15721; never the machine's own) with its open-file limit raised, runs `simflow bench outlets`
# against it, and stops and removes the node.
#
#   deploy/scale/outlets.sh [--release] [bench outlets options…]
#   deploy/scale/outlets.sh --release --outlets 10000 --connections 1000
#
# SCALE_SIMFLOW=/path/to/simflow uses that binary instead of building one.
# SCALE_TCP_BUFFER=32768 gives the node's AMQP listener socket buffers of that size.
# SCALE_NOFILE sets the node's (and the bench's) open-file limit (default 65536, or the hard
# limit if that is lower). Set
# SIMFLOW__AMQP__URI and SIMFLOW__AMQP__MANAGEMENT_URL and pass --no-node to measure a broker
# that is already running instead (a cluster: deploy/cluster/rabbitmq.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

profile=debug
own_node=yes
args=()
for argument in "$@"; do
    case "$argument" in
        --release) profile=release ;;
        --no-node) own_node=no ;;
        *) args+=("$argument") ;;
    esac
done

# At most the hard limit this shell may reach (20000 in this project's containers).
nofile="${SCALE_NOFILE:-65536}"
hard=$(ulimit -Hn)
if [[ "$hard" != unlimited ]] && (( hard < nofile )); then nofile=$hard; fi
ulimit -n "$nofile" || { echo "outlets.sh: cannot raise the open-file limit to $nofile" >&2; exit 1; }
echo "outlets.sh: open-file limit $nofile for the node and the bench" >&2

if [[ -n "${SCALE_SIMFLOW:-}" ]]; then
    simflow="$SCALE_SIMFLOW"
else
    if [[ "$profile" == release ]]; then
        cargo build --locked --release -p simflow-cli >&2
    else
        cargo build --locked -p simflow-cli >&2
    fi
    simflow="${CARGO_TARGET_DIR:-target}/$profile/simflow"
fi

if [[ "$own_node" == yes ]]; then
    dir="${SCALE_DIR:-/tmp/simflow-scale}"
    export CHAOS_AMQP_PORT=5721 CHAOS_MANAGEMENT_PORT=15721 CHAOS_DIST_PORT=25721 CHAOS_PG_PORT=5443 CHAOS_NODE=simflow-scale
    deploy/chaos/services.sh stop "$dir" 2>/dev/null || true
    trap 'deploy/chaos/services.sh stop "$dir"' EXIT
    deploy/chaos/services.sh start "$dir"
    if [[ -n "${SCALE_TCP_BUFFER:-}" ]]; then
        # Smaller socket buffers per connection (RabbitMQ's networking guide, "Tuning for a large
        # number of connections"): the node restarts with them.
        printf 'tcp_listen_options.sndbuf = %s\ntcp_listen_options.recbuf = %s\n' \
            "$SCALE_TCP_BUFFER" "$SCALE_TCP_BUFFER" >>"$dir/rabbit/rabbitmq.conf"
        deploy/chaos/services.sh stop-broker "$dir"
        deploy/chaos/services.sh start-broker "$dir"
    fi
    export SIMFLOW__AMQP__URI="amqp://guest:guest@127.0.0.1:5721/%2f"
    export SIMFLOW__AMQP__MANAGEMENT_URL="http://127.0.0.1:15721"
fi
if [[ "$own_node" == yes ]]; then
    args+=(--node-pids "$(cat "$dir/rabbit/node.pid")")
fi
"$simflow" bench outlets "${args[@]}"
