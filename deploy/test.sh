#!/usr/bin/env bash
# The whole test suite on this machine: set up the services, build, run every test.
# Unit tests (pure logic) and the one end-to-end binary (tests/e2e) against the real RabbitMQ,
# PostgreSQL and pcscd + vsmartcard-vpcd with the project's software SIM.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
deploy/setup.sh
cargo build --locked --workspace --all-targets
# The e2e tests wait on the network more than on the CPU: run more of them at once than cores.
cargo test --locked --workspace -- --test-threads "${SIMFLOW_TEST_THREADS:-6}"
