#!/usr/bin/env bash
# A PostgreSQL primary and a streaming replica managed by Patroni, with one etcd as Patroni's
# store: the database half of running simflow on more than one machine, on one machine.
# Everything listens on 127.0.0.1 only and lives under DIR; the machine's own PostgreSQL
# (5432) is never touched.
#
#   deploy/cluster/postgres.sh start     # etcd, then both nodes; waits for a leader and a sync standby
#   deploy/cluster/postgres.sh stop      # both nodes, then etcd; nothing of it keeps running
#   deploy/cluster/postgres.sh status    # patronictl list, and which port is the primary
#   deploy/cluster/postgres.sh primary   # prints the primary's PostgreSQL port (exit 1: none)
#   deploy/cluster/postgres.sh failover [--kill|--switchover]
#                                        # --kill (default): SIGKILL to the primary's postmaster;
#                                        # --switchover: patronictl switchover to the replica
#   deploy/cluster/postgres.sh purge     # stop, then remove DIR
#
# Every command is idempotent: `start` on a running cluster only waits for it to be healthy,
# `stop` on a stopped one does nothing.
#
# Layout: etcd client 127.0.0.1:2479, peer 2480; node pg1 on PostgreSQL 5461 / Patroni REST
# 8061, node pg2 on 5462 / 8062 (overridable: PG_CLUSTER_ETCD_PORT, PG_CLUSTER_ETCD_PEER_PORT,
# PG_CLUSTER_PG_PORTS="5461 5462", PG_CLUSTER_REST_PORTS="8061 8062"); data under
# PG_CLUSTER_DIR (default /var/lib/simflow/cluster/patroni). PostgreSQL, Patroni and etcd run
# as the `postgres` user (the script needs root or that user).
#
# Replication is synchronous (Patroni's synchronous_mode): a commit returns only once the
# standby has it, and Patroni promotes only the synchronous standby, so a failover loses no
# committed transaction. A crashed primary is failed over at once (primary_start_timeout 0)
# rather than restarted in place, and rejoins as a replica (pg_rewind). Authentication is
# trust on loopback; no password exists to be committed.
#
# Patroni timings (PG_CLUSTER_TTL=10, PG_CLUSTER_LOOP_WAIT=2, PG_CLUSTER_RETRY_TIMEOUT=4) are
# short so a failover takes seconds here; production keeps Patroni's defaults (30, 10, 10).
set -euo pipefail

command="${1:?usage: postgres.sh start|stop|status|primary|failover|purge}"
shift

dir="${PG_CLUSTER_DIR:-/var/lib/simflow/cluster/patroni}"
etcd_port="${PG_CLUSTER_ETCD_PORT:-2479}"
etcd_peer_port="${PG_CLUSTER_ETCD_PEER_PORT:-2480}"
read -r -a pg_ports <<<"${PG_CLUSTER_PG_PORTS:-5461 5462}"
read -r -a rest_ports <<<"${PG_CLUSTER_REST_PORTS:-8061 8062}"
ttl="${PG_CLUSTER_TTL:-10}"
loop_wait="${PG_CLUSTER_LOOP_WAIT:-2}"
retry_timeout="${PG_CLUSTER_RETRY_TIMEOUT:-4}"
scope=simflow
nodes=(pg1 pg2)

pg_bin=/usr/lib/postgresql/15/bin
for tool in patroni patronictl etcd; do
    command -v "$tool" >/dev/null || { echo "postgres.sh: $tool not found (apt-get install patroni etcd-server; see deploy/setup.sh)" >&2; exit 1; }
done
[[ -x "$pg_bin/postgres" ]] || { echo "postgres.sh: PostgreSQL 15 not found under $pg_bin" >&2; exit 1; }
for port in "$etcd_port" "$etcd_peer_port" "${pg_ports[@]}" "${rest_ports[@]}"; do
    if [[ "$port" == 5432 || "$port" == 2379 || "$port" == 2380 ]]; then
        echo "postgres.sh: port $port belongs to the machine's own services; choose another" >&2
        exit 1
    fi
done

say() { echo "postgres.sh: $*" >&2; }

# Runs a command as `postgres` (directly when we already are that user); setpriv and env exec
# the program, so a recorded pid is the program's own.
as_postgres_prefix=()
if [[ "$(id -u)" == 0 ]]; then
    as_postgres_prefix=(setpriv --reuid=postgres --regid=postgres --init-groups -- env HOME="$dir")
fi
as_postgres() { "${as_postgres_prefix[@]}" "$@"; }

alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

rest_get() {
    # The HTTP status of a Patroni REST path (000 when the node does not answer).
    curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$1$2" || true
}

# The index (0 or 1) of the node that answers GET /primary with 200; empty when none does.
leader_index() {
    local index
    for index in "${!nodes[@]}"; do
        if [[ "$(rest_get "${rest_ports[$index]}" /primary)" == 200 ]]; then
            echo "$index"
            return 0
        fi
    done
    return 1
}

write_etcd_and_node_configs() {
    mkdir -p "$dir"
    chmod 755 "$dir"
    local index node
    for index in "${!nodes[@]}"; do
        node="${nodes[$index]}"
        mkdir -p "$dir/$node"
        cat >"$dir/$node/patroni.yml" <<EOF
# Written by deploy/cluster/postgres.sh; edits are overwritten at the next start.
scope: $scope
name: $node
log:
  level: INFO
restapi:
  listen: 127.0.0.1:${rest_ports[$index]}
  connect_address: 127.0.0.1:${rest_ports[$index]}
etcd3:
  hosts: 127.0.0.1:$etcd_port
bootstrap:
  dcs:
    ttl: $ttl
    loop_wait: $loop_wait
    retry_timeout: $retry_timeout
    maximum_lag_on_failover: 1048576
    primary_start_timeout: 0
    synchronous_mode: true
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_level: replica
        hot_standby: "on"
        wal_log_hints: "on"
        max_wal_senders: 10
        max_replication_slots: 10
        max_connections: 200
        synchronous_commit: "on"
  initdb:
    - encoding: UTF8
    - locale: C.UTF-8
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:${pg_ports[$index]}
  connect_address: 127.0.0.1:${pg_ports[$index]}
  data_dir: $dir/$node/data
  bin_dir: $pg_bin
  pgpass: $dir/$node/pgpass
  remove_data_directory_on_rewind_failure: true
  remove_data_directory_on_diverged_timelines: true
  authentication:
    superuser:
      username: postgres
    replication:
      username: replicator
    rewind:
      username: postgres
  parameters:
    unix_socket_directories: $dir/$node
tags:
  nofailover: false
  noloadbalance: false
EOF
    done
    if [[ "$(id -u)" == 0 ]]; then chown -R postgres:postgres "$dir"; fi
}

start_etcd() {
    if alive "$dir/etcd.pid"; then return 0; fi
    say "starting etcd on 127.0.0.1:$etcd_port (peer $etcd_peer_port)"
    mkdir -p "$dir/etcd"
    if [[ "$(id -u)" == 0 ]]; then chown postgres:postgres "$dir/etcd"; fi
    local state=new
    if [[ -d "$dir/etcd/data/member" ]]; then state=existing; fi
    (
        exec setsid "${as_postgres_prefix[@]}" etcd \
            --name simflow-patroni --data-dir "$dir/etcd/data" \
            --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
            --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
            --initial-cluster "simflow-patroni=http://127.0.0.1:$etcd_peer_port" --initial-cluster-state "$state" \
            --log-level warn
    ) </dev/null >>"$dir/etcd/etcd.log" 2>&1 &
    echo $! >"$dir/etcd.pid"
    local waited=0
    until curl -fsS --max-time 1 "http://127.0.0.1:$etcd_port/health" >/dev/null 2>&1; do
        sleep 0.2
        waited=$((waited + 1))
        if ! alive "$dir/etcd.pid" || ((waited > 150)); then say "etcd did not come up (see $dir/etcd/etcd.log)"; exit 1; fi
    done
}

start_node() {
    local index="$1" node="${nodes[$1]}"
    if alive "$dir/$node/patroni.pid"; then return 0; fi
    say "starting Patroni node $node (PostgreSQL 127.0.0.1:${pg_ports[$index]}, REST ${rest_ports[$index]})"
    (
        exec setsid "${as_postgres_prefix[@]}" patroni "$dir/$node/patroni.yml"
    ) </dev/null >>"$dir/$node/patroni.log" 2>&1 &
    echo $! >"$dir/$node/patroni.pid"
}

# Waits until one node is the primary and the other streams from it as the synchronous standby.
wait_healthy() {
    local waited=0 leader other
    while true; do
        if leader=$(leader_index); then
            other=$((1 - leader))
            if [[ "$(rest_get "${rest_ports[$other]}" /sync)" == 200 ]]; then
                say "primary ${nodes[$leader]} (127.0.0.1:${pg_ports[$leader]}), synchronous standby ${nodes[$other]} (127.0.0.1:${pg_ports[$other]})"
                return 0
            fi
        fi
        sleep 0.5
        waited=$((waited + 1))
        if ((waited > 240)); then
            say "no primary with a synchronous standby after 120 s (see $dir/pg*/patroni.log)"
            exit 1
        fi
    done
}

stop_pid() {
    local pid_file="$1" name="$2"
    if alive "$pid_file"; then
        local pid
        pid=$(cat "$pid_file")
        say "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        local waited=0
        while kill -0 "$pid" 2>/dev/null; do
            sleep 0.2
            waited=$((waited + 1))
            if ((waited == 150)); then say "$name still running after 30 s; SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
            if ((waited > 200)); then break; fi
        done
    fi
    rm -f "$pid_file"
}

# A postmaster left behind by a Patroni that was killed: stop it by its own pid file.
stop_orphan_postgres() {
    local node="$1"
    local data="$dir/$node/data"
    [[ -s "$data/postmaster.pid" ]] || return 0
    local pid
    pid=$(head -n 1 "$data/postmaster.pid")
    if kill -0 "$pid" 2>/dev/null; then
        say "stopping the PostgreSQL of $node that outlived its Patroni"
        as_postgres "$pg_bin/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null 2>&1 || kill -KILL "$pid" 2>/dev/null || true
    fi
}

stop_all() {
    # Replicas first, so the leader's going does not promote a node that is about to stop.
    local leader order=()
    if leader=$(leader_index); then
        order=("$((1 - leader))" "$leader")
    else
        order=(0 1)
    fi
    local index
    for index in "${order[@]}"; do
        stop_pid "$dir/${nodes[$index]}/patroni.pid" "Patroni ${nodes[$index]}"
        stop_orphan_postgres "${nodes[$index]}"
    done
    stop_pid "$dir/etcd.pid" etcd
}

case "$command" in
    start)
        write_etcd_and_node_configs
        start_etcd
        start_node 0
        # The first node bootstraps the cluster; the second clones it once it is up.
        until leader_index >/dev/null; do
            sleep 0.5
            if ! alive "$dir/pg1/patroni.pid" && ! alive "$dir/pg2/patroni.pid"; then
                say "Patroni exited (see $dir/pg1/patroni.log)"
                exit 1
            fi
        done
        start_node 1
        wait_healthy
        ;;
    stop)
        [[ -d "$dir" ]] || exit 0
        stop_all
        ;;
    purge)
        if [[ -d "$dir" ]]; then
            stop_all
            rm -rf "$dir"
        fi
        ;;
    status)
        if ! alive "$dir/etcd.pid"; then echo "etcd: stopped"; else echo "etcd: running on 127.0.0.1:$etcd_port"; fi
        for node in "${nodes[@]}"; do
            if alive "$dir/$node/patroni.pid"; then echo "$node: Patroni running"; else echo "$node: Patroni stopped"; fi
        done
        if alive "$dir/pg1/patroni.pid" || alive "$dir/pg2/patroni.pid"; then
            as_postgres patronictl -c "$dir/pg1/patroni.yml" list || true
        fi
        if leader=$(leader_index); then
            echo "primary: ${nodes[$leader]} on 127.0.0.1:${pg_ports[$leader]}"
        else
            echo "primary: none"
        fi
        ;;
    primary)
        leader=$(leader_index) || { say "no node answers GET /primary"; exit 1; }
        echo "${pg_ports[$leader]}"
        ;;
    failover)
        how="${1:---kill}"
        leader=$(leader_index) || { say "no primary to fail over"; exit 1; }
        other=$((1 - leader))
        case "$how" in
            --kill)
                data="$dir/${nodes[$leader]}/data"
                pid=$(head -n 1 "$data/postmaster.pid")
                say "SIGKILL to the postmaster of ${nodes[$leader]} (pid $pid, 127.0.0.1:${pg_ports[$leader]})"
                kill -KILL "$pid"
                ;;
            --switchover)
                say "switchover from ${nodes[$leader]} to ${nodes[$other]}"
                as_postgres patronictl -c "$dir/${nodes[$leader]}/patroni.yml" switchover \
                    --leader "${nodes[$leader]}" --candidate "${nodes[$other]}" --force >/dev/null
                ;;
            *)
                say "unknown failover mode $how (--kill or --switchover)"
                exit 2
                ;;
        esac
        ;;
    *)
        say "unknown command $command"
        exit 2
        ;;
esac
