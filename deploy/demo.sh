#!/usr/bin/env bash
# The main job: set up the services, build, and run the demo pipeline on them
# (org data, blank cards, workers, a realistic set of jobs through the queues, what happened).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
deploy/setup.sh
cargo build --locked -p simflow-cli --bin simflow
exec target/debug/simflow demo "$@"
