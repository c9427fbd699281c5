#!/usr/bin/env bash
# Builds the Debian package of simflow (release build): target/debian/simflow_<version>_amd64.deb
# with /usr/bin/simflow, the systemd units of the central workers, the console and the outlet
# node (deploy/debian/), the service user (sysusers.d) and the polkit rule that lets the
# outlet node's user reach pcscd. docs/deployment.md says how to install and upgrade it.
#
# Usage: deploy/package.sh [extra cargo-deb arguments, e.g. --deb-version 1.2.0-1]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if ! command -v cargo-deb >/dev/null 2>&1; then
    echo "package.sh: cargo-deb is missing: run deploy/setup.sh (or cargo install --locked cargo-deb --version 3.8.0)" >&2
    exit 1
fi
exec cargo deb --locked -p simflow-cli "$@"
