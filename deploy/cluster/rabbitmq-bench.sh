#!/usr/bin/env bash
# `simflow bench transfer` on one node (the machine's broker, 127.0.0.1:5672) and on the 3-node
# cluster of deploy/cluster/rabbitmq.sh, in the same run, with the same arguments; prints both
# tables and, per (prefetch, batch), the cluster's throughput as a share of the single node's.
#
#   deploy/cluster/rabbitmq-bench.sh                      # --jobs 3000 --prefetch 50 --batch 32
#   deploy/cluster/rabbitmq-bench.sh --jobs 2000 --prefetch 1,50 --batch 1,32
#
# A release build (cargo build --release -p simflow-cli). The cluster is started when it is not
# running and then stopped again at the end; a cluster that was already running is left as it is.
# Each bench works in a vhost and database of its own and removes them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

args=("$@")
if ((${#args[@]} == 0)); then args=(--jobs 3000 --prefetch 50 --batch 32); fi

# BENCH_PROFILE=debug uses the debug build (the ratio compares one binary on both brokers).
profile="${BENCH_PROFILE:-release}"
if [[ "$profile" == release ]]; then
    cargo build --locked --quiet --release -p simflow-cli --bin simflow
else
    cargo build --locked --quiet -p simflow-cli --bin simflow
fi
simflow="${CARGO_TARGET_DIR:-target}/$profile/simflow"

started_here=0
if ! deploy/cluster/rabbitmq.sh status 2>/dev/null | grep -q "^simflow-c3@localhost running" ||
    ! deploy/cluster/rabbitmq.sh status 2>/dev/null | grep -q "^simflow-c1@localhost running" ||
    ! deploy/cluster/rabbitmq.sh status 2>/dev/null | grep -q "^simflow-c2@localhost running"; then
    deploy/cluster/rabbitmq.sh start
    started_here=1
fi
cleanup() {
    local status=$?
    if ((started_here)); then deploy/cluster/rabbitmq.sh stop || true; fi
    exit "$status"
}
trap cleanup EXIT

single=$(mktemp)
cluster=$(mktemp)
echo "== single node (127.0.0.1:5672)"
env -u SIMFLOW__AMQP__URIS -u SIMFLOW__AMQP__MANAGEMENT_URLS \
    "$simflow" bench transfer "${args[@]}" | tee "$single"
echo
echo "== 3-node cluster (127.0.0.1:5701-5703)"
# shellcheck disable=SC2046
env $(deploy/cluster/rabbitmq.sh env) "$simflow" bench transfer "${args[@]}" | tee "$cluster"
echo
# The bench's rows: prefetch, batch, raw msg/s, raw+reply, jobs/s, …
rows() { awk '$1 ~ /^[0-9]+$/ && $2 ~ /^[0-9]+$/ { print $1, $2, $3, $4, $5 }' "$1"; }
printf '%8s %6s %14s %14s %8s %14s %14s %8s\n' prefetch batch "single jobs/s" "cluster jobs/s" ratio \
    "single raw/s" "cluster raw/s" ratio
join -j 1 <(rows "$single" | awk '{ print $1 "/" $2, $3, $5 }' | sort) \
    <(rows "$cluster" | awk '{ print $1 "/" $2, $3, $5 }' | sort) |
    awk '{ split($1, key, "/");
           printf "%8s %6s %14.0f %14.0f %8.2f %14.0f %14.0f %8.2f\n",
                  key[1], key[2], $3, $5, ($3 > 0 ? $5 / $3 : 0), $2, $4, ($2 > 0 ? $4 / $2 : 0) }'
rm -f "$single" "$cluster"
