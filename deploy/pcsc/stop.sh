#!/usr/bin/env bash
# Stop the pcscd that deploy/pcsc/setup.sh started (and only that one).
#
# Usage: deploy/pcsc/stop.sh [STATE_DIR]   (default: $SIMFLOW_PCSC_DIR or /var/lib/simflow/pcsc)
set -euo pipefail

state_dir="${1:-${SIMFLOW_PCSC_DIR:-/var/lib/simflow/pcsc}}"
pid_file="$state_dir/pcscd.pid"
conf_dir="$state_dir/reader.conf.d"

if [[ ! -f "$pid_file" ]]; then
    echo "stop.sh: no $pid_file; nothing of ours to stop" >&2
    exit 0
fi
pid=$(cat "$pid_file")
if [[ -r "/proc/$pid/cmdline" ]] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "pcscd .*-c $conf_dir"; then
    kill -TERM "$pid"
    for (( attempt = 0; attempt < 100; attempt++ )); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid"
    fi
    echo "stop.sh: stopped pcscd $pid" >&2
else
    echo "stop.sh: pid $pid is not our pcscd any more; leaving it alone" >&2
fi
rm -f "$pid_file"
