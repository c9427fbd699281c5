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

# The gates: formatting, lints, docs, dependencies. Each stops the run with its own message.
echo "test.sh: gate: cargo fmt --check" >&2
cargo fmt --all --check
echo "test.sh: gate: cargo clippy -D warnings" >&2
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "test.sh: gate: cargo doc with warnings denied" >&2
RUSTDOCFLAGS="-D warnings" cargo doc --locked --workspace --no-deps --quiet
echo "test.sh: gate: cargo deny" >&2
PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
cargo deny --locked check licenses bans sources
# The advisory database comes from GitHub; where GitHub is unreachable (this project's CI
# machines reach only the package registries) the advisories are checked where it is.
if timeout 10 git ls-remote https://github.com/rustsec/advisory-db HEAD >/dev/null 2>&1; then
    cargo deny --locked check advisories
else
    echo "test.sh: gate: cargo deny check advisories skipped: github.com (the RustSec advisory database) is unreachable from this machine" >&2
fi

# The AsyncAPI document as AsyncAPI's own parser reads it (schemas/check/: pinned with npm's
# lock file): no errors and no warnings; it prints the parser's summary.
echo "test.sh: gate: AsyncAPI document (@asyncapi/parser)" >&2
schemas/check/run.sh

# The scrape configuration and alert rules as Debian's promtool reads them, and a unit test of
# every alert (deploy/prometheus/tests); it prints promtool's results.
echo "test.sh: gate: Prometheus rules (promtool check + test rules)" >&2
deploy/prometheus/check.sh

cargo build --locked --workspace --all-targets
# The fast tier first: every business rule against PostgreSQL, no broker, seconds.
cargo test --locked -p simflow-tests --test rules
# Then everything (the e2e tests wait on the network more than on the CPU: run more of them at
# once than cores).
cargo test --locked --workspace -- --test-threads "${SIMFLOW_TEST_THREADS:-6}"
# The chaos run, short: jobs with duplicates and malformed messages while worker processes are
# SIGKILLed and a private broker node and database cluster restart (never the machine's own);
# it checks every job has one outcome, nothing was done twice, the ledger reconciles and the
# DLQs hold exactly the malformed messages.
echo "test.sh: chaos run (deploy/chaos.sh --short)" >&2
deploy/chaos.sh --short
