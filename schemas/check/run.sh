#!/usr/bin/env bash
# The AsyncAPI check of the test command: installs the pinned @asyncapi/parser (npm ci, no
# install scripts) and runs it over schemas/asyncapi.json. Needs Node 20+ and the npm registry.
# Usage: schemas/check/run.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "asyncapi check: node and npm are needed (Node 20 or newer: apt-get install nodejs npm)" >&2
    exit 1
fi
node_major=$(node --version | sed -E 's/^v([0-9]+).*/\1/')
if (( node_major < 20 )); then
    echo "asyncapi check: node $(node --version) is too old: @asyncapi/parser needs Node 20 or newer" >&2
    exit 1
fi
# Install again only when the lock file changed since the last install.
if ! cmp -s package-lock.json node_modules/.simflow-installed-lock 2>/dev/null; then
    SCARF_ANALYTICS=false npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2
    cp package-lock.json node_modules/.simflow-installed-lock
fi
node check.mjs ../asyncapi.json
