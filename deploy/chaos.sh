#!/usr/bin/env bash
# The chaos run: jobs (with duplicates and malformed messages) through real worker processes
# while they are SIGKILLed and a private broker node and a private database cluster restart
# under them; then checks that every job has exactly one outcome, nothing was done twice, the
# ledger reconciles and the dead-letter queues hold exactly the malformed messages, once each.
#
#   deploy/chaos.sh            # full: 2,000 jobs, 10 worker kills, 3 broker and 3 database restarts
#   deploy/chaos.sh --short    # short (the test command): 300 jobs, 3 kills, 1 + 1 restarts
#   deploy/chaos.sh [--short] -- ARGS…   # more `simflow chaos` arguments (e.g. --seed N)
#
# The broker node and the cluster are the run's own (deploy/chaos/services.sh: 127.0.0.1 only,
# ports CHAOS_AMQP_PORT=5682, CHAOS_MANAGEMENT_PORT=15682, CHAOS_PG_PORT=5442 unless set), started
# here and stopped and removed on exit, also on failure or timeout; the machine's own RabbitMQ
# and PostgreSQL are never touched. The whole run is bounded (SIMFLOW_CHAOS_TIMEOUT seconds;
# default 300 short, 1200 full).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

mode=full
extra=()
while (($#)); do
    case "$1" in
        --short) mode=short ;;
        --) shift; extra=("$@"); break ;;
        *) echo "chaos.sh: unknown argument $1 (use --short, or -- ARGS for simflow chaos)" >&2; exit 2 ;;
    esac
    shift
done
if [[ "$mode" == short ]]; then
    limit="${SIMFLOW_CHAOS_TIMEOUT:-300}"
    extra=(--short "${extra[@]}")
else
    limit="${SIMFLOW_CHAOS_TIMEOUT:-1200}"
fi

cargo build --locked --quiet -p simflow-cli --bin simflow
simflow="${CARGO_TARGET_DIR:-target}/debug/simflow"

dir=$(mktemp -d /tmp/simflow-chaos.XXXXXX)
cleanup() {
    local status=$?
    # Worker processes of a driver that was itself killed (timeout) are found by their pid files.
    for pid_file in "$dir"/workers/worker-*.pid; do
        [[ -f "$pid_file" ]] || continue
        kill -KILL "$(cat "$pid_file")" 2>/dev/null || true
    done
    if ((status != 0)) && [[ -d "$dir/workers" ]]; then
        echo "chaos.sh: last worker log lines:" >&2
        tail -n 15 "$dir"/workers/worker-*.log >&2 || true
    fi
    deploy/chaos/services.sh stop "$dir" || true
    rm -rf "$dir"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

started=$(date +%s)
deploy/chaos/services.sh start "$dir"
status=0
timeout --kill-after=20 "$limit" "$simflow" chaos --services "$dir" "${extra[@]}" || status=$?
if ((status == 124 || status == 137)); then
    echo "chaos.sh: the run did not finish within $limit s" >&2
fi
echo "chaos.sh: $mode run finished in $(($(date +%s) - started)) s (services included), status $status" >&2
exit "$status"
