#!/usr/bin/env bash
# The Prometheus checks of the test command: the scrape configuration and the alert rules as
# Debian's promtool reads them, and every alert's unit test (tests/simflow.test.yml).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
promtool --version 2>&1 | head -n 1
promtool check config prometheus.yml
promtool check rules rules/simflow.rules.yml
promtool test rules tests/simflow.test.yml
