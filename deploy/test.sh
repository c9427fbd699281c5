#!/usr/bin/env bash
# The whole test suite on this machine: set up the services, build, run every test.
# Unit tests (pure logic) and the one end-to-end binary (tests/e2e) against the real RabbitMQ,
# PostgreSQL and pcscd + vsmartcard-vpcd with the project's software SIM.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# The suite stops the pcscd it started (and leaves one that was already running alone).
pcsc_dir="${SIMFLOW_PCSC_DIR:-/var/lib/simflow/pcsc}"
pcscd_was_running=no
if [[ -f "$pcsc_dir/pcscd.pid" ]] && kill -0 "$(cat "$pcsc_dir/pcscd.pid")" 2>/dev/null; then
    pcscd_was_running=yes
fi
deploy/setup.sh
if [[ "$pcscd_was_running" == no ]]; then
    trap 'deploy/pcsc/stop.sh "$pcsc_dir" || true' EXIT
fi
cargo build --locked --workspace --all-targets
# The e2e tests wait on the network more than on the CPU: run more of them at once than cores.
cargo test --locked --workspace -- --test-threads "${SIMFLOW_TEST_THREADS:-6}"
