#!/usr/bin/env bash
# Install pcscd + vsmartcard-vpcd and run one pcscd with N virtual readers, idempotently.
#
# Usage: deploy/pcsc/setup.sh [--readers N] [STATE_DIR]
#   N          number of virtual readers (default 8; rounded up to even, at most 16)
#   STATE_DIR  where the reader config, driver copies, PID file and log live
#              (default: $SIMFLOW_PCSC_DIR or /var/lib/simflow/pcsc)
#
# Prints one line per reader to STATE_DIR/readers.tsv ("<reader name>\t<vpcd port>") and, as the
# last line on stdout, "started <pid>" or "reused <pid>".
# See deploy/pcsc/README.md for what we found out about vpcd's ports and reader names.
set -euo pipefail

readers=8
state_dir="${SIMFLOW_PCSC_DIR:-/var/lib/simflow/pcsc}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --readers) readers="$2"; shift 2 ;;
        --readers=*) readers="${1#*=}"; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) state_dir="$1"; shift ;;
    esac
done

if ! [[ "$readers" =~ ^[0-9]+$ ]] || (( readers < 1 || readers > 16 )); then
    echo "setup.sh: --readers must be 1..16 (pcsc-lite serves at most 16 readers)" >&2
    exit 2
fi
entries=$(( (readers + 1) / 2 ))   # every vpcd entry is one driver instance with two slots
base_port=35963
driver=/usr/lib/pcsc/drivers/serial/libifdvpcd.so

log() { echo "setup.sh: $*" >&2; }

# 1. Packages: pcscd and the vpcd driver to run, libpcsclite-dev and pkg-config to build pcsc-sys.
packages=(pcscd vsmartcard-vpcd libpcsclite-dev pkg-config)
missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
if (( ${#missing[@]} > 0 )); then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq "${missing[@]}" >&2; then
        log "package lists look stale; running apt-get update"
        apt-get update -qq >&2
        apt-get install -y -qq "${missing[@]}" >&2
    fi
fi

# 2. Reader config. Each entry loads its OWN copy of the vpcd driver: the Debian driver keeps its
#    sockets in static variables, so entries sharing one .so would all poll the last entry's port.
#    Each entry gets its own FRIENDLYNAME too: pcscd numbers reader.conf readers "00" whatever
#    their count, so identical names would repeat.
mkdir -p "$state_dir/reader.conf.d" "$state_dir/drivers"
config_changed=0
want_files=()
: > "$state_dir/readers.tsv.new"
for (( entry = 0; entry < entries; entry++ )); do
    port=$(( base_port + 2 * entry ))
    copy="$state_dir/drivers/libifdvpcd-$entry.so"
    if ! cmp -s "$driver" "$copy"; then
        cp "$driver" "$copy.tmp" && mv "$copy.tmp" "$copy"
        config_changed=1
    fi
    file="$state_dir/reader.conf.d/vpcd-$entry"
    want_files+=("$file")
    content=$(printf 'FRIENDLYNAME "simflow vpcd %d"\nDEVICENAME   /dev/null:0x%X\nLIBPATH      %s\nCHANNELID    0x%X\n' \
        "$entry" "$port" "$copy" "$port")
    if [[ ! -f "$file" ]] || [[ "$(cat "$file")" != "$content" ]]; then
        printf '%s\n' "$content" > "$file"
        config_changed=1
    fi
    printf 'simflow vpcd %d 00 00\t%d\n' "$entry" "$port" >> "$state_dir/readers.tsv.new"
    if (( 2 * entry + 1 < readers )); then
        printf 'simflow vpcd %d 00 01\t%d\n' "$entry" "$(( port + 1 ))" >> "$state_dir/readers.tsv.new"
    fi
done
for file in "$state_dir"/reader.conf.d/*; do
    [[ -e "$file" ]] || continue
    if [[ ! " ${want_files[*]} " == *" $file "* ]]; then
        rm -f "$file"
        config_changed=1
    fi
done
mv "$state_dir/readers.tsv.new" "$state_dir/readers.tsv"

# 3. pcscd: reuse ours if it runs with this config, start it otherwise.
pid_file="$state_dir/pcscd.pid"
conf_dir="$state_dir/reader.conf.d"
our_pcscd() {
    local pid="$1"
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "pcscd .*-c $conf_dir"
}
running=""
if [[ -f "$pid_file" ]] && our_pcscd "$(cat "$pid_file")"; then
    running=$(cat "$pid_file")
fi

listening() {
    # Is TCP port $1 in LISTEN state? (/proc/net/tcp: local address field, state 0A)
    local hex
    hex=$(printf '%04X' "$1")
    awk -v port=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == port { found = 1 } END { exit !found }' /proc/net/tcp /proc/net/tcp6
}

if [[ -n "$running" && "$config_changed" == 1 ]]; then
    log "reader config changed; restarting our pcscd ($running)"
    "$(dirname "$0")/stop.sh" "$state_dir" >&2
    running=""
fi

if [[ -z "$running" ]]; then
    for pid in $(pgrep -x pcscd || true); do
        if ! our_pcscd "$pid"; then
            log "another pcscd (pid $pid) is running without our reader config; only one pcscd can serve"
            log "the PC/SC socket. Stop it (e.g. systemctl stop pcscd.socket pcscd) and run this again."
            exit 3
        fi
    done
    setsid pcscd --foreground --info -c "$conf_dir" > "$state_dir/pcscd.log" 2>&1 < /dev/null &
    running=$!
    # setsid forks when it is a process group leader: then $! is not pcscd. Find ours.
    for (( attempt = 0; attempt < 40; attempt++ )); do
        our_pcscd "$running" && break
        for pid in $(pgrep -x pcscd || true); do
            if our_pcscd "$pid"; then running=$pid; break; fi
        done
        our_pcscd "$running" && break
        sleep 0.05
    done
    echo "$running" > "$pid_file"
    outcome=started
else
    outcome=reused
fi

# 4. Ready means: the client socket exists and every vpcd port listens.
socket="${PCSCLITE_CSOCK_NAME:-/run/pcscd/pcscd.comm}"
for (( attempt = 0; attempt < 200; attempt++ )); do
    ready=1
    [[ -S "$socket" ]] || ready=0
    while IFS=$'\t' read -r _ port; do
        listening "$port" || { ready=0; break; }
    done < "$state_dir/readers.tsv"
    (( ready )) && break
    if ! kill -0 "$running" 2>/dev/null; then
        log "pcscd exited; its log follows"
        cat "$state_dir/pcscd.log" >&2
        exit 4
    fi
    sleep 0.05
done
if (( ! ready )); then
    log "pcscd did not open its socket and vpcd ports in 10 s; see $state_dir/pcscd.log"
    exit 4
fi
log "$readers virtual readers ready (state in $state_dir)"
echo "$outcome $running"
