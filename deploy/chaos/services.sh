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

rabbit_sbin=$(ls -d /usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin 2>/dev/null | sort -V | tail -n 1)
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[[ -x "$rabbit_sbin/rabbitmq-server" ]] || { echo "services.sh: rabbitmq-server not found under /usr/lib/rabbitmq" >&2; exit 1; }
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
}

as_postgres() {
    if [[ "$(id -u)" == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# The node's environment: nothing from /etc/rabbitmq or /var/lib/rabbitmq is read.
rabbit_env() {
    export HOME="$dir/rabbit"
    export RABBITMQ_NODENAME="$node"
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT="$CHAOS_AMQP_PORT"
    export RABBITMQ_DIST_PORT="$CHAOS_DIST_PORT"
    export RABBITMQ_MNESIA_BASE="$dir/rabbit/mnesia"
    export RABBITMQ_LOG_BASE="$dir/rabbit/log"
    export RABBITMQ_CONFIG_FILE="$dir/rabbit/rabbitmq.conf"
    export RABBITMQ_ADVANCED_CONFIG_FILE="$dir/rabbit/advanced.config"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/rabbit/enabled_plugins"
    export RABBITMQ_CONF_ENV_FILE="$dir/rabbit/rabbitmq-env.conf"
    export RABBITMQ_PID_FILE="$dir/rabbit/node.pid"
    # A node that fails to boot (a port taken by a node beside it) leaves its crash dump here,
    # not in the caller's working directory.
    export ERL_CRASH_DUMP="$dir/rabbit/log/erl_crash.dump"
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
    # rabbitmqctl's own distribution ports: beside the node's, clear of the machine node's
    # (25672 and 35672–35682).
    local ctl_min=$((CHAOS_DIST_PORT + 100))
    if ((ctl_min > 65000)); then ctl_min=$((CHAOS_DIST_PORT - 200)); fi
    export RABBITMQ_CTL_DIST_PORT_MIN=$ctl_min
    export RABBITMQ_CTL_DIST_PORT_MAX=$((ctl_min + 10))
}

ctl() {
    (rabbit_env && "$rabbit_sbin/rabbitmqctl" -n "$node" "$@")
}

init_broker() {
    mkdir -p "$dir/rabbit/mnesia" "$dir/rabbit/log"
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/rabbit/.erlang.cookie"
    chmod 400 "$dir/rabbit/.erlang.cookie"
    : >"$dir/rabbit/rabbitmq-env.conf"
    echo '[].' >"$dir/rabbit/advanced.config"
    echo '[rabbitmq_management].' >"$dir/rabbit/enabled_plugins"
    cat >"$dir/rabbit/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$CHAOS_AMQP_PORT
management.tcp.ip = 127.0.0.1
management.tcp.port = $CHAOS_MANAGEMENT_PORT
max_message_size = 1048576
EOF
    if [[ -n "$CHAOS_TLS_DIR" ]]; then
        [[ -n "$CHAOS_AMQPS_PORT" ]] || { say "CHAOS_TLS_DIR needs CHAOS_AMQPS_PORT"; exit 1; }
        mkdir -p "$dir/rabbit/tls"
        cp "$CHAOS_TLS_DIR/ca.pem" "$CHAOS_TLS_DIR/server.pem" "$CHAOS_TLS_DIR/server.key" "$dir/rabbit/tls/"
        chmod 600 "$dir/rabbit/tls/server.key"
        echo '[rabbitmq_management,rabbitmq_auth_mechanism_ssl].' >"$dir/rabbit/enabled_plugins"
        cat >>"$dir/rabbit/rabbitmq.conf" <<EOF
listeners.ssl.1 = 127.0.0.1:$CHAOS_AMQPS_PORT
ssl_options.cacertfile = $dir/rabbit/tls/ca.pem
ssl_options.certfile = $dir/rabbit/tls/server.pem
ssl_options.keyfile = $dir/rabbit/tls/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = true
auth_mechanisms.1 = EXTERNAL
auth_mechanisms.2 = PLAIN
ssl_cert_login_from = common_name
EOF
    fi
}

start_broker() {
    say "starting RabbitMQ node $node on 127.0.0.1:$CHAOS_AMQP_PORT (management $CHAOS_MANAGEMENT_PORT)"
    # Detached, and holding none of the caller's descriptors (a caller reading our output
    # until its end would otherwise wait for the node to stop).
    (
        rabbit_env
        exec setsid "$rabbit_sbin/rabbitmq-server"
    ) </dev/null >>"$dir/rabbit/log/console.log" 2>&1 &
    local waited=0
    until [[ -s "$dir/rabbit/node.pid" ]]; do
        sleep 0.2
        waited=$((waited + 1))
        if ((waited > 300)); then say "the node wrote no pid file in 60 s (see $dir/rabbit/log)"; exit 1; fi
    done
    ctl wait --timeout 90 "$dir/rabbit/node.pid" >/dev/null
    # The management listener comes up with the plugins; the callers use it.
    waited=0
    until curl -fsS -o /dev/null -u guest:guest "http://127.0.0.1:$CHAOS_MANAGEMENT_PORT/api/overview"; do
        sleep 0.2
        waited=$((waited + 1))
        if ((waited > 300)); then say "management API not up in 60 s"; exit 1; fi
    done
}

stop_broker() {
    local how="${1:-stop}"
    local pid_file="$dir/rabbit/node.pid"
    [[ -s "$pid_file" ]] || return 0
    local pid
    pid=$(cat "$pid_file")
    if kill -0 "$pid" 2>/dev/null; then
        if [[ "$how" == kill ]]; then
            say "SIGKILL to RabbitMQ node $node (pid $pid)"
            kill -KILL "$pid"
        else
            say "stopping RabbitMQ node $node"
            ctl stop "$pid_file" >/dev/null 2>&1 || kill -KILL "$pid" 2>/dev/null || true
        fi
        local waited=0
        while kill -0 "$pid" 2>/dev/null; do
            sleep 0.1
            waited=$((waited + 1))
            if ((waited > 600)); then kill -KILL "$pid" 2>/dev/null || true; fi
        done
    fi
    # epmd forgets a node when its connection closes; wait for that before a restart.
    local waited=0
    while epmd -names 2>/dev/null | grep -q "^name $CHAOS_NODE "; do
        sleep 0.1
        waited=$((waited + 1))
        if ((waited > 100)); then break; fi
    done
    rm -f "$pid_file"
}

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
