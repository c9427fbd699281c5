#!/usr/bin/env bash
# Make this Debian machine ready for simflow: PostgreSQL, RabbitMQ (with the management and
# Prometheus plugins), pcscd with virtual readers, and the build dependencies. Idempotent:
# whatever already runs is reused, whatever is missing is installed (apt) and started.
#
# Usage: deploy/setup.sh            (as root, or as a user with sudo)
#
# The project's machines already run RabbitMQ on 127.0.0.1:5672 (guest/guest) and PostgreSQL on
# 127.0.0.1:5432 with trust authentication; on those this script only enables the RabbitMQ
# plugins and starts pcscd.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { echo "setup: $*" >&2; }

if [[ $EUID -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo --preserve-env=PATH,HOME,CARGO_HOME,RUSTUP_HOME "$0" "$@"
    fi
    log "run as root (apt-get and the services need it)"
    exit 1
fi

apt_updated=0
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    if (( apt_updated == 0 )); then
        apt-get update -qq >&2 || true
        apt_updated=1
    fi
    apt-get install -y -qq "$@" >&2
}
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
    local seconds=$1 what=$2; shift 2
    for (( i = 0; i < seconds * 4; i++ )); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.25
    done
    log "timed out waiting for $what"
    return 1
}

# --- Build dependencies -------------------------------------------------------------------------
for package in pkg-config libpcsclite-dev build-essential curl; do
    installed "$package" || apt_install "$package"
done
# Browser tests (the console and the outlet's counter page): Debian's chromium under its
# chromedriver, and a CJK font so the counter page's Chinese shows in screenshots.
for package in chromium chromium-driver fonts-wqy-zenhei; do
    installed "$package" || apt_install "$package"
done
if ! command -v cargo >/dev/null 2>&1; then
    log "cargo is missing: install the Rust toolchain (1.94 or newer) with rustup, then run this again"
    exit 1
fi
rust_minor=$(rustc --version | sed -E 's/^rustc 1\.([0-9]+).*/\1/')
if (( rust_minor < 94 )); then
    log "rustc $(rustc --version) is too old: sqlx 0.9 needs Rust 1.94 or newer"
    exit 1
fi

# The AsyncAPI check of the test command runs @asyncapi/parser on Node.js 20 or newer
# (schemas/check/run.sh installs the parser itself with npm ci).
node_major=$( (node --version 2>/dev/null || echo v0) | sed -E 's/^v([0-9]+).*/\1/')
if (( node_major < 20 )) || ! command -v npm >/dev/null 2>&1; then
    installed nodejs || apt_install nodejs
    installed npm || command -v npm >/dev/null 2>&1 || apt_install npm
    node_major=$( (node --version 2>/dev/null || echo v0) | sed -E 's/^v([0-9]+).*/\1/')
    if (( node_major < 20 )); then
        log "Node.js $(node --version 2>/dev/null || echo missing) is too old for @asyncapi/parser: install Node.js 20 or newer"
        exit 1
    fi
fi

# The gates of the test command: cargo-deny (licences, bans, sources, advisories). Built from
# crates.io once (a few minutes); rustfmt and clippy come with the toolchain.
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
if ! command -v cargo-deny >/dev/null 2>&1 && [[ ! -x "$cargo_home/bin/cargo-deny" ]]; then
    log "installing cargo-deny (cargo install, a few minutes)"
    cargo install --locked --quiet cargo-deny >&2
fi
# The Debian package (deploy/package.sh, and the packaging tests): cargo-deb, pinned; its
# systemd units are checked with systemd-analyze (Debian's systemd package).
if ! command -v cargo-deb >/dev/null 2>&1 && [[ ! -x "$cargo_home/bin/cargo-deb" ]]; then
    log "installing cargo-deb (cargo install, a few minutes)"
    cargo install --locked --quiet cargo-deb --version 3.8.0 >&2
fi
command -v systemd-analyze >/dev/null 2>&1 || apt_install systemd
for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
        rustup component add "$component" >&2 || true
    fi
done

# --- PostgreSQL -----------------------------------------------------------------------------------
if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    log "PostgreSQL is running on 127.0.0.1:5432: reusing it"
else
    installed postgresql || apt_install postgresql
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    hba="/etc/postgresql/$version/main/pg_hba.conf"
    # Local development only: trust TCP connections from this machine, as the project's machines do.
    if ! grep -q "simflow: local trust" "$hba"; then
        sed -i '1i # simflow: local trust (development machines only)\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    fi
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || pg_ctlcluster "$version" main start
    wait_for 60 "PostgreSQL" pg_isready -q -h 127.0.0.1 -p 5432
    log "PostgreSQL $version started"
fi

# The failover cluster (deploy/cluster/postgres.sh): Patroni with etcd over PostgreSQL 15's
# binaries. It runs its own etcd on 2479, so the Debian unit the package enables is not needed
# (a machine without systemd never starts it).
installed postgresql-15 || apt_install postgresql-15
for package in patroni etcd-server etcd-client; do
    if ! installed "$package"; then
        apt_install "$package"
        if [[ "$package" == etcd-server ]] && command -v systemctl >/dev/null 2>&1; then
            systemctl disable --now etcd >/dev/null 2>&1 || true
        fi
    fi
done

# --- RabbitMQ -----------------------------------------------------------------------------------
if port_open 5672; then
    log "RabbitMQ is running on 127.0.0.1:5672: reusing it"
else
    installed rabbitmq-server || apt_install rabbitmq-server
    # Every classic queue holding messages keeps file descriptors open; the default soft limit of
    # 1024 runs out under load (see shared/broker-notes.md). Raise it before the broker starts.
    ulimit -n 65536 || ulimit -n "$(ulimit -Hn)"
    rabbitmq-server -detached
    wait_for 120 "RabbitMQ" rabbitmq-diagnostics -q ping
    log "RabbitMQ started"
fi
# A running broker keeps the open-file limit it started with; raising it needs a restart, which is
# the operator's call (docs/deployment.md, "Outlet scale"). Say so when it is low.
broker_pid=$(pgrep -f 'beam.smp.* rabbit@' | head -n 1 || true)
if [[ -n "$broker_pid" ]]; then
    broker_nofile=$(awk '/^Max open files/ { print $4 }' "/proc/$broker_pid/limits" 2>/dev/null || true)
    if [[ "$broker_nofile" =~ ^[0-9]+$ ]] && (( broker_nofile < 65536 )); then
        log "note: the running RabbitMQ may open only $broker_nofile files; for many outlets raise it (LimitNOFILE=65536) and restart it (docs/deployment.md)"
    fi
fi
wanted_plugins=(rabbitmq_management rabbitmq_prometheus)
enabled=$(rabbitmq-plugins list -e -m 2>/dev/null || true)
missing_plugins=()
for plugin in "${wanted_plugins[@]}"; do
    grep -qx "$plugin" <<<"$enabled" || missing_plugins+=("$plugin")
done
if (( ${#missing_plugins[@]} > 0 )); then
    log "enabling ${missing_plugins[*]}"
    rabbitmq-plugins enable "${missing_plugins[@]}" >&2
fi
wait_for 60 "the RabbitMQ management API" curl -sf -u guest:guest http://127.0.0.1:15672/api/overview

# --- Prometheus ---------------------------------------------------------------------------------
# Debian's prometheus package brings promtool (the alert unit tests of the test command) and the
# server the end-to-end test starts on a free port with a data directory of its own. The
# package's own service must not run: it would scrape this machine on :9090 for nothing.
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
    no_start_policy=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        no_start_policy=yes
    fi
    apt_install --no-install-recommends prometheus
    [[ -n "$no_start_policy" ]] && rm -f /usr/sbin/policy-rc.d
fi
if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled prometheus >/dev/null 2>&1; then
    systemctl disable --now prometheus >&2 || true
fi

# --- pcscd with virtual readers ------------------------------------------------------------------
set +e
"$here/pcsc/setup.sh" >&2
status=$?
set -e
case $status in
    0) ;;
    3) log "a pcscd that deploy/pcsc did not start is running; card tests will use it as it is" ;;
    *) log "deploy/pcsc/setup.sh failed ($status)"; exit "$status" ;;
esac

log "ready"
