#!/usr/bin/env bash
# A private RabbitMQ node and a private PostgreSQL cluster for fault injection (the chaos run,
# the memory-alarm test): everything lives under DIR, listens on 127.0.0.1 only, and is
# started, stopped, restarted and removed here. The machine's own broker (5672) and database
# (5432) are never touched: the node has its own name, ports, Erlang cookie, data, logs,
# configuration and plugin file; the cluster its own data directory, port and socket directory.
#
#   deploy/chaos/services.sh start DIR        # both, waits until each answers
#   deploy/chaos/services.sh stop DIR         # both, then removes DIR
#   deploy/chaos/services.sh restart-broker DIR [--kill]     # stop (or SIGKILL) and start the node
#   deploy/chaos/services.sh restart-db DIR [--immediate]    # fast (or immediate) stop and start
#   deploy/chaos/services.sh start-broker|stop-broker|start-db|stop-db DIR
#   deploy/chaos/services.sh ctl DIR ARGS…    # rabbitmqctl against the private node
#
# Ports come from the environment at `start` (defaults below) and are kept in DIR/ports.env,
# which later commands and the callers read:
#   CHAOS_AMQP_PORT=5682 CHAOS_MANAGEMENT_PORT=15682 CHAOS_DIST_PORT=25682 CHAOS_PG_PORT=5442
#   CHAOS_NODE=simflow-chaos
# With CHAOS_TLS_DIR (a directory holding ca.pem, server.pem and server.key) and
# CHAOS_AMQPS_PORT at `start`, the node also listens for `amqps` on 127.0.0.1:CHAOS_AMQPS_PORT,
# requires a client certificate signed by ca.pem there (verify_peer, fail_if_no_peer_cert),
# and logs clients in by the certificate's common name (EXTERNAL, rabbitmq_auth_mechanism_ssl);
# PLAIN stays for users with a password. The files are copied into DIR.
# Needs root (the cluster runs as the `postgres` user through runuser) or the postgres user.
set -euo pipefail

command="${1:?usage: services.sh start|stop|restart-broker|restart-db|… DIR}"
dir="${2:?usage: services.sh COMMAND DIR}"
shift 2

pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
# The node's functions (rabbit_init, rabbit_start, rabbit_stop, rabbit_ctl) are shared with
# the broker cluster's script.
# shellcheck source=../cluster/rabbitmq-node.sh
source "$(dirname "${BASH_SOURCE[0]}")/../cluster/rabbitmq-node.sh"
[[ -x "$pg_bin/pg_ctl" ]] || { echo "services.sh: pg_ctl not found under /usr/lib/postgresql" >&2; exit 1; }

say() { echo "services.sh: $*" >&2; }

load_ports() {
    if [[ -f "$dir/ports.env" ]]; then
        # shellcheck disable=SC1091
        source "$dir/ports.env"
    fi
    CHAOS_AMQP_PORT="${CHAOS_AMQP_PORT:-5682}"
    CHAOS_MANAGEMENT_PORT="${CHAOS_MANAGEMENT_PORT:-15682}"
    CHAOS_DIST_PORT="${CHAOS_DIST_PORT:-25682}"
    CHAOS_PG_PORT="${CHAOS_PG_PORT:-5442}"
    CHAOS_NODE="${CHAOS_NODE:-simflow-chaos}"
    CHAOS_AMQPS_PORT="${CHAOS_AMQPS_PORT:-}"
    CHAOS_TLS_DIR="${CHAOS_TLS_DIR:-}"
    for port in "$CHAOS_AMQP_PORT" "$CHAOS_MANAGEMENT_PORT" "$CHAOS_DIST_PORT" "$CHAOS_PG_PORT"; do
        if [[ "$port" == 5672 || "$port" == 15672 || "$port" == 5432 || "$port" == 25672 ]]; then
            say "port $port belongs to the machine's own services; choose another"
            exit 1
        fi
    done
    node="$CHAOS_NODE@localhost"
    RABBIT_HOME="$dir/rabbit"
    RABBIT_NODE="$node"
    RABBIT_AMQP_PORT="$CHAOS_AMQP_PORT"
    RABBIT_MANAGEMENT_PORT="$CHAOS_MANAGEMENT_PORT"
    RABBIT_DIST_PORT="$CHAOS_DIST_PORT"
    RABBIT_SAY=services.sh
    RABBIT_AMQPS_PORT="$CHAOS_AMQPS_PORT"
    RABBIT_TLS_DIR="$CHAOS_TLS_DIR"
}

as_postgres() {
    if [[ "$(id -u)" == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

ctl() { rabbit_ctl "$@"; }
init_broker() { rabbit_init; }
start_broker() { rabbit_start; }
stop_broker() { rabbit_stop "${1:-stop}"; }

init_db() {
    mkdir -p "$dir/pg"
    chmod 755 "$dir"
    if [[ "$(id -u)" == 0 ]]; then chown postgres:postgres "$dir/pg"; fi
    as_postgres "$pg_bin/initdb" -D "$dir/pg/data" -U postgres --auth=trust --no-sync -E UTF8 >/dev/null
}

start_db() {
    say "starting PostgreSQL on 127.0.0.1:$CHAOS_PG_PORT"
    as_postgres "$pg_bin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/server.log" -w -t 60 \
        -o "-p $CHAOS_PG_PORT -c listen_addresses=127.0.0.1 -k $dir/pg -c fsync=off -c max_connections=200" \
        start >/dev/null
}

stop_db() {
    local mode="${1:-fast}"
    [[ -f "$dir/pg/data/postmaster.pid" ]] || return 0
    say "stopping PostgreSQL ($mode)"
    as_postgres "$pg_bin/pg_ctl" -D "$dir/pg/data" -m "$mode" -w -t 60 stop >/dev/null || true
}

load_ports
case "$command" in
    start)
        mkdir -p "$dir"
        cat >"$dir/ports.env" <<EOF
CHAOS_AMQP_PORT=$CHAOS_AMQP_PORT
CHAOS_MANAGEMENT_PORT=$CHAOS_MANAGEMENT_PORT
CHAOS_DIST_PORT=$CHAOS_DIST_PORT
CHAOS_PG_PORT=$CHAOS_PG_PORT
CHAOS_NODE=$CHAOS_NODE
CHAOS_AMQPS_PORT=$CHAOS_AMQPS_PORT
EOF
        init_broker
        init_db
        start_db
        start_broker
        ;;
    stop)
        stop_broker stop
        stop_db fast
        rm -rf "$dir"
        ;;
    start-broker) start_broker ;;
    stop-broker) stop_broker "${1:-stop}" ;;
    restart-broker)
        if [[ "${1:-}" == --kill ]]; then stop_broker kill; else stop_broker stop; fi
        start_broker
        ;;
    start-db) start_db ;;
    stop-db) stop_db "${1:-fast}" ;;
    restart-db)
        if [[ "${1:-}" == --immediate ]]; then stop_db immediate; else stop_db fast; fi
        start_db
        ;;
    ctl) ctl "$@" ;;
    *)
        say "unknown command $command"
        exit 2
        ;;
esac
