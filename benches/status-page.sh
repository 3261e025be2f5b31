#!/usr/bin/env bash
# status-page.sh: how long the status page takes to render with many groups, pushgate against
# the upstream Pushgateway holding the same groups, in the same run.
#
#   benches/status-page.sh [NGROUPS]        (default 100000)
#
# Env: PUSHGATE_BIN (default target/release/pushgate), UPSTREAM_BIN (default
# /usr/bin/prometheus-pushgateway), RUNS (requests per pushgate page, default 5), UPSTREAM_RUNS
# (requests of upstream's page, default 3: it renders every group each time).
#
# Both servers are started (upstream with --push.disable-consistency-check, see below) on free loopback ports and filled by the same loader
# (benches/status_page_load.py: NGROUPS groups of 3 series, jobs job-0..job-99, one instance
# each); then each page is fetched RUNS times. Printed per page: the median wall time of the
# request (curl's time_total), the server's CPU time per request (user+system from /proc, robust
# to other load on the machine) and the size of the answer. pushgate's pages: `/` (page 1 of 50
# groups) and `/?q=job%3Djob-42` (the 1,000 groups of one job, page 1); upstream's page has
# neither paging nor a filter and always renders every group.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib/port.sh
source benches/lib/stop.sh

NGROUPS=${1:-100000}
RUNS=${RUNS:-5}
UPSTREAM_RUNS=${UPSTREAM_RUNS:-3}
PUSHGATE_BIN=${PUSHGATE_BIN:-target/release/pushgate}
UPSTREAM_BIN=${UPSTREAM_BIN:-/usr/bin/prometheus-pushgateway}
TMP=$(mktemp -d /tmp/status-page.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do stop_process "$p"; done
    rm -rf "$TMP"
}
trap cleanup EXIT

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

start() { # NAME BIN [FLAGS...] -> sets PORT and PID
    local name=$1 bin=$2
    shift 2
    PORT=$(free_port)
    "$bin" --web.listen-address="127.0.0.1:$PORT" --persistence.file="$TMP/$name.data" "$@" \
        >"$TMP/$name.log" 2>&1 &
    PID=$!
    PIDS+=("$PID")
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$PORT/-/ready" >/dev/null && return 0
        sleep 0.1
    done
    echo "$name did not start:" >&2
    cat "$TMP/$name.log" >&2
    exit 1
}

measure() { # NAME PID RUNS URL
    local name=$1 pid=$2 runs=$3 url=$4 times=() size before after
    before=$(cpu_ticks "$pid")
    for _ in $(seq "$runs"); do
        read -r t size < <(curl -s --max-time 900 -o /dev/null -w '%{time_total} %{size_download}\n' "$url")
        times+=("$t")
    done
    after=$(cpu_ticks "$pid")
    local median
    median=$(printf '%s\n' "${times[@]}" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
    printf '| %s | `%s` | %.0f ms | %.0f ms | %s KiB |\n' "$name" "/${url#http://127.0.0.1:*/}" \
        "$(echo "$median * 1000" | bc -l)" \
        "$(echo "($after - $before) * 1000 / $hz / $runs" | bc -l)" \
        "$((size / 1024))"
}

# Upstream re-checks the whole store on every push (100,000 groups would take hours to load):
# it is loaded with its check off, which changes nothing in what its page renders.
start upstream "$UPSTREAM_BIN" --push.disable-consistency-check
UP_PORT=$PORT UP_PID=$PID
start pushgate "$PUSHGATE_BIN"
PG_PORT=$PORT PG_PID=$PID
echo "loading $NGROUPS groups into each..." >&2
python3 benches/status_page_load.py "127.0.0.1:$UP_PORT" "$NGROUPS" >&2
python3 benches/status_page_load.py "127.0.0.1:$PG_PORT" "$NGROUPS" >&2

echo "$NGROUPS groups, $RUNS requests per pushgate page, $UPSTREAM_RUNS of upstream's; $(nproc) cores; $("$PUSHGATE_BIN" --version 2>&1 | head -1)"
echo
echo "| server | page | median time | server CPU per request | size |"
echo "|---|---|---|---|---|"
measure upstream "$UP_PID" "$UPSTREAM_RUNS" "http://127.0.0.1:$UP_PORT/"
measure pushgate "$PG_PID" "$RUNS" "http://127.0.0.1:$PG_PORT/"
measure pushgate "$PG_PID" "$RUNS" "http://127.0.0.1:$PG_PORT/?q=job%3Djob-42"
measure pushgate "$PG_PID" "$RUNS" "http://127.0.0.1:$PG_PORT/?sort=push_old&page=1000"
