# shellcheck shell=bash
# One private RabbitMQ node, for scripts that start their own nodes: the chaos services
# (deploy/chaos/services.sh) and the 3-node cluster (deploy/cluster/rabbitmq.sh) source this
# file. Nothing from /etc/rabbitmq or /var/lib/rabbitmq is read or written: the node has its
# own name, ports, Erlang cookie, data, logs, configuration and plugin file under RABBIT_HOME,
# listens on 127.0.0.1 only, and shares the machine's epmd.
#
# The caller sets, before calling any function:
#   RABBIT_HOME              the node's directory (data, logs, configuration, pid file)
#   RABBIT_NODE              the node's name, e.g. simflow-c1@localhost
#   RABBIT_AMQP_PORT         AMQP listener on 127.0.0.1
#   RABBIT_MANAGEMENT_PORT   management API listener on 127.0.0.1
#   RABBIT_DIST_PORT         Erlang distribution port
#   RABBIT_PROMETHEUS_PORT   optional: enables rabbitmq_prometheus on this port
#   RABBIT_CTL_PORT_MIN      optional: first of ten ports rabbitmqctl's own distribution may
#                            use (default RABBIT_DIST_PORT + 100)
#   RABBIT_SAY               optional: the prefix of messages (default "rabbitmq-node")
#   RABBIT_TLS_DIR           optional: a directory with ca.pem, server.pem and server.key; the
#                            node then also listens for amqps on RABBIT_AMQPS_PORT, verifies
#                            client certificates and offers EXTERNAL (the certificate's common
#                            name is the user) before PLAIN
# and may call rabbit_init [COOKIE], rabbit_start, rabbit_stop [stop|kill], rabbit_ctl ARGS…,
# rabbit_running.

rabbit_sbin=$(ls -d /usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin 2>/dev/null | sort -V | tail -n 1)
[[ -x "$rabbit_sbin/rabbitmq-server" ]] || {
    echo "rabbitmq-node.sh: rabbitmq-server not found under /usr/lib/rabbitmq" >&2
    exit 1
}

# The open-file limit a node gets: 65,536 or the hard limit when that is lower. The default
# soft limit of 1,024 makes a node fail with emfile at ~500 non-empty queues.
RABBIT_OPEN_FILES=65536

rabbit_say() { echo "${RABBIT_SAY:-rabbitmq-node}: $*" >&2; }

# The node's environment (in a subshell of the caller).
rabbit_env() {
    export HOME="$RABBIT_HOME"
    export RABBITMQ_NODENAME="$RABBIT_NODE"
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT="$RABBIT_AMQP_PORT"
    export RABBITMQ_DIST_PORT="$RABBIT_DIST_PORT"
    export RABBITMQ_MNESIA_BASE="$RABBIT_HOME/mnesia"
    export RABBITMQ_LOG_BASE="$RABBIT_HOME/log"
    export RABBITMQ_CONFIG_FILE="$RABBIT_HOME/rabbitmq.conf"
    export RABBITMQ_ADVANCED_CONFIG_FILE="$RABBIT_HOME/advanced.config"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$RABBIT_HOME/enabled_plugins"
    export RABBITMQ_CONF_ENV_FILE="$RABBIT_HOME/rabbitmq-env.conf"
    export RABBITMQ_PID_FILE="$RABBIT_HOME/node.pid"
    # A node that fails to boot (a port taken by a node beside it) leaves its crash dump here,
    # not in the caller's working directory.
    export ERL_CRASH_DUMP="$RABBIT_HOME/log/erl_crash.dump"
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
    # rabbitmqctl's own distribution ports: clear of the machine node's (25672, 35672–35682).
    local ctl_min="${RABBIT_CTL_PORT_MIN:-$((RABBIT_DIST_PORT + 100))}"
    if ((ctl_min > 65000)); then ctl_min=$((RABBIT_DIST_PORT - 200)); fi
    export RABBITMQ_CTL_DIST_PORT_MIN=$ctl_min
    export RABBITMQ_CTL_DIST_PORT_MAX=$((ctl_min + 10))
}

rabbit_ctl() {
    (rabbit_env && "$rabbit_sbin/rabbitmqctl" -n "$RABBIT_NODE" "$@")
}

# Whether the node's process (by its pid file) is alive.
rabbit_running() {
    local pid_file="$RABBIT_HOME/node.pid"
    [[ -s "$pid_file" ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null
}

# A fresh node directory; COOKIE (optional) is the Erlang cookie, shared by a cluster's nodes.
rabbit_init() {
    local cookie="${1:-}"
    mkdir -p "$RABBIT_HOME/mnesia" "$RABBIT_HOME/log"
    if [[ -z "$cookie" ]]; then
        cookie=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    fi
    rm -f "$RABBIT_HOME/.erlang.cookie"
    printf '%s' "$cookie" >"$RABBIT_HOME/.erlang.cookie"
    chmod 400 "$RABBIT_HOME/.erlang.cookie"
    : >"$RABBIT_HOME/rabbitmq-env.conf"
    echo '[].' >"$RABBIT_HOME/advanced.config"
    if [[ -n "${RABBIT_PROMETHEUS_PORT:-}" ]]; then
        echo '[rabbitmq_management,rabbitmq_prometheus].' >"$RABBIT_HOME/enabled_plugins"
    else
        echo '[rabbitmq_management].' >"$RABBIT_HOME/enabled_plugins"
    fi
    cat >"$RABBIT_HOME/rabbitmq.conf" <<CONF
listeners.tcp.1 = 127.0.0.1:$RABBIT_AMQP_PORT
management.tcp.ip = 127.0.0.1
management.tcp.port = $RABBIT_MANAGEMENT_PORT
max_message_size = 1048576
CONF
    if [[ -n "${RABBIT_PROMETHEUS_PORT:-}" ]]; then
        cat >>"$RABBIT_HOME/rabbitmq.conf" <<CONF
prometheus.tcp.ip = 127.0.0.1
prometheus.tcp.port = $RABBIT_PROMETHEUS_PORT
CONF
    fi
    if [[ -n "${RABBIT_TLS_DIR:-}" ]]; then
        [[ -n "${RABBIT_AMQPS_PORT:-}" ]] || { rabbit_say "RABBIT_TLS_DIR needs RABBIT_AMQPS_PORT"; return 1; }
        mkdir -p "$RABBIT_HOME/tls"
        cp "$RABBIT_TLS_DIR/ca.pem" "$RABBIT_TLS_DIR/server.pem" "$RABBIT_TLS_DIR/server.key" "$RABBIT_HOME/tls/"
        chmod 600 "$RABBIT_HOME/tls/server.key"
        if [[ -n "${RABBIT_PROMETHEUS_PORT:-}" ]]; then
            echo '[rabbitmq_management,rabbitmq_prometheus,rabbitmq_auth_mechanism_ssl].' >"$RABBIT_HOME/enabled_plugins"
        else
            echo '[rabbitmq_management,rabbitmq_auth_mechanism_ssl].' >"$RABBIT_HOME/enabled_plugins"
        fi
        cat >>"$RABBIT_HOME/rabbitmq.conf" <<CONF
listeners.ssl.1 = 127.0.0.1:$RABBIT_AMQPS_PORT
ssl_options.cacertfile = $RABBIT_HOME/tls/ca.pem
ssl_options.certfile = $RABBIT_HOME/tls/server.pem
ssl_options.keyfile = $RABBIT_HOME/tls/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = true
auth_mechanisms.1 = EXTERNAL
auth_mechanisms.2 = PLAIN
ssl_cert_login_from = common_name
CONF
    fi
}

# Starts the node detached and returns at once; rabbit_wait waits for it.
rabbit_launch() {
    rabbit_say "starting RabbitMQ node $RABBIT_NODE on 127.0.0.1:$RABBIT_AMQP_PORT (management $RABBIT_MANAGEMENT_PORT)"
    rm -f "$RABBIT_HOME/node.pid"
    # Detached, and holding none of the caller's descriptors (a caller reading our output
    # until its end would otherwise wait for the node to stop).
    (
        rabbit_env
        local hard
        hard=$(ulimit -Hn)
        if [[ "$hard" == unlimited ]] || ((hard >= RABBIT_OPEN_FILES)); then
            ulimit -n "$RABBIT_OPEN_FILES"
        else
            ulimit -n "$hard"
        fi
        exec setsid "$rabbit_sbin/rabbitmq-server"
    ) </dev/null >>"$RABBIT_HOME/log/console.log" 2>&1 &
}

# Waits (bounded) until the launched node runs its applications and answers on the
# management API.
rabbit_wait() {
    local waited=0
    until [[ -s "$RABBIT_HOME/node.pid" ]]; do
        sleep 0.2
        waited=$((waited + 1))
        if ((waited > 300)); then rabbit_say "$RABBIT_NODE wrote no pid file in 60 s (see $RABBIT_HOME/log)"; return 1; fi
    done
    rabbit_ctl wait --timeout 120 "$RABBIT_HOME/node.pid" >/dev/null
    # The management listener comes up with the plugins; the callers use it.
    waited=0
    until curl -fsS -o /dev/null -u guest:guest "http://127.0.0.1:$RABBIT_MANAGEMENT_PORT/api/overview"; do
        sleep 0.2
        waited=$((waited + 1))
        if ((waited > 300)); then rabbit_say "$RABBIT_NODE: management API not up in 60 s"; return 1; fi
    done
}

rabbit_start() {
    rabbit_launch
    rabbit_wait
}

# Stops the node gracefully (or with SIGKILL: `rabbit_stop kill`) and waits until it and its
# epmd registration are gone.
rabbit_stop() {
    local how="${1:-stop}"
    local pid_file="$RABBIT_HOME/node.pid"
    [[ -s "$pid_file" ]] || return 0
    local pid
    pid=$(cat "$pid_file")
    if kill -0 "$pid" 2>/dev/null; then
        if [[ "$how" == kill ]]; then
            rabbit_say "SIGKILL to RabbitMQ node $RABBIT_NODE (pid $pid)"
            kill -KILL "$pid"
        else
            rabbit_say "stopping RabbitMQ node $RABBIT_NODE"
            rabbit_ctl stop "$pid_file" >/dev/null 2>&1 || kill -KILL "$pid" 2>/dev/null || true
        fi
        local waited=0
        while kill -0 "$pid" 2>/dev/null; do
            sleep 0.1
            waited=$((waited + 1))
            if ((waited > 600)); then kill -KILL "$pid" 2>/dev/null || true; fi
        done
    fi
    # epmd forgets a node when its connection closes; wait for that before a restart.
    local short="${RABBIT_NODE%@*}" waited=0
    while epmd -names 2>/dev/null | grep -q "^name $short "; do
        sleep 0.1
        waited=$((waited + 1))
        if ((waited > 100)); then break; fi
    done
    rm -f "$pid_file"
}
