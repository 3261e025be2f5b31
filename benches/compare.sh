#!/usr/bin/env bash
# compare.sh: runs the same loadgen scenarios against the upstream Pushgateway and pushgate, one server at
# a time on a free loopback port, and prints one markdown table with every figure and the
# pushgate/upstream ratios.
#
# Targets (TARGETS, space-separated, in this order by default):
#   upstream-on    upstream Pushgateway (Debian's /usr/bin/prometheus-pushgateway), consistency check on
#   upstream-off   the same with --push.disable-consistency-check
#   pushgate-on    target/release/pushgate, consistency check on
#   pushgate-off   the same with --push.disable-consistency-check
#   pushgate-cluster3     3 pushgate nodes on loopback, every push sent to node 1
#   pushgate-cluster3-lb  the same cluster with the connections spread over all three nodes, as
#                  behind a load balancer (every node forwards to the others while they forward to it)
#   pushgate-cluster3-lb-tls  the same with --cluster.tls-config and --cluster.gossip-key-file on
#                  every node (mutual TLS and sealed gossip; certificates and key made in OUT_DIR). Not in the default list:
#                  TARGETS="pushgate-cluster3-lb pushgate-cluster3-lb-tls" compares the two in one run
# Scenarios per target, on one server process (so the store grows from one to the next):
#   push-small  --warmup then DURATION s of pushes to SMALL_GROUPS groups (default 100)
#   push-big    --warmup then DURATION s of pushes to BIG_GROUPS groups (default 10000)
#   scrape      SCRAPES timed GET /metrics of the full store (BIG_GROUPS x SERIES series) and VmRSS
# Each push scenario also reports the CPU time (user + system, from /proc/<pid>/stat) the server and
# the load generator spent per successful push: on a shared, noisy 2-core host that figure moves far
# less than pushes/s. For the cluster target, CPU and memory are summed over the three nodes.
#
# Environment (defaults in brackets):
#   DURATION [10]  SMALL_GROUPS [100]  BIG_GROUPS [10000]  SERIES [20]  CONNECTIONS [32]  SCRAPES [5]
#   SMOKE=1        CI mode: DURATION=2, BIG_GROUPS=1000, SCRAPES=1 unless set explicitly
#   TARGETS        which targets to run, e.g. TARGETS="upstream-on upstream-off" (default: all six,
#                  the last two being a 3-node pushgate cluster on loopback)
#   SKIP_BUILD=1   do not run cargo build (use the binaries already built)
#   UPSTREAM_BIN [/usr/bin/prometheus-pushgateway]  PUSHGATE_BIN [target/release/pushgate]
#   LOADGEN_BIN [target/release/loadgen]  OUT_DIR [a new temp dir; keeps the JSON results and server logs]
#   START_TIMEOUT [15] seconds a server gets to listen   LOADGEN_TIMEOUT [900] hard limit per loadgen run
#   NODE_CPUS      e.g. 0.5: every server process (each node of the cluster too) starts in a cgroup of
#                  its own limited to that many cores (root; benches/lib/cpu-cap.sh), as on a machine or
#                  in a container of its own. Without it all servers share the host's cores, so a
#                  3-node cluster has a third of the CPU per node that a single node has.
#   WARMUP_LIMIT [120] seconds a warmup may take; upstream with the consistency check on checks the
#                  whole store on every push, so filling 10,000 groups takes far longer than that. A
#                  cut-short warmup shows in the "groups stored" and "series in scrape" rows.
#
# Servers run without persistence (--persistence.file= overrides Debian's default path) in a temp
# working directory, and are always stopped on exit. A server that does not start is reported in the
# table's "server" row and its log tail is printed; the other targets still run.
# Needs: bash, jq, awk.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

SMOKE=${SMOKE:-0}
if [[ $SMOKE == 1 ]]; then
    DURATION=${DURATION:-2}
    BIG_GROUPS=${BIG_GROUPS:-1000}
    SCRAPES=${SCRAPES:-1}
fi
DURATION=${DURATION:-10}
SMALL_GROUPS=${SMALL_GROUPS:-100}
BIG_GROUPS=${BIG_GROUPS:-10000}
SERIES=${SERIES:-20}
CONNECTIONS=${CONNECTIONS:-32}
SCRAPES=${SCRAPES:-5}
START_TIMEOUT=${START_TIMEOUT:-15}
LOADGEN_TIMEOUT=${LOADGEN_TIMEOUT:-900}
WARMUP_LIMIT=${WARMUP_LIMIT:-120}
TARGETS=${TARGETS:-upstream-on upstream-off pushgate-on pushgate-off pushgate-cluster3 pushgate-cluster3-lb}
# More URLs the pushes are spread over besides SERVER_URL (the other nodes, for pushgate-cluster3-lb).
ALSO_URLS=()
UPSTREAM_BIN=${UPSTREAM_BIN:-/usr/bin/prometheus-pushgateway}
PUSHGATE_BIN=${PUSHGATE_BIN:-$TARGET_DIR/release/pushgate}
LOADGEN_BIN=${LOADGEN_BIN:-$TARGET_DIR/release/loadgen}
SKIP_BUILD=${SKIP_BUILD:-0}
NODE_CPUS=${NODE_CPUS:-}
OUT_DIR=${OUT_DIR:-$(mktemp -d -t pushgate-compare.XXXXXX)}
mkdir -p "$OUT_DIR"

log() { echo "compare: $*" >&2; }
die() { log "$*"; exit 1; }

command -v jq >/dev/null || die "jq is required (apt-get install -y jq)"

SERVER_PID=""
SERVER_PIDS=()
# shellcheck source=lib/cpu-cap.sh
source "$ROOT/benches/lib/cpu-cap.sh"
# shellcheck source=lib/stop.sh
source "$ROOT/benches/lib/stop.sh"
# in_budget CMD...: runs CMD (exec, same process) inside a new NODE_CPUS cgroup when one is set.
# Call it in the background subshell that starts a server.
in_budget() {
    [[ -z $NODE_CPUS ]] || cap_cpu_enter
    exec "$@"
}
# new_budget: creates the cgroup the next in_budget enters (in the parent shell, so that the
# cleanup knows it).
new_budget() {
    [[ -z $NODE_CPUS ]] || cap_cpu_group "$NODE_CPUS" || die "NODE_CPUS=$NODE_CPUS: cannot set up a cgroup"
}
# Upstream shuts down gracefully on SIGTERM and can take a while with pushes queued; stop_server
# escalates to SIGKILL after 5 s.
cleanup() { stop_server; cap_cpu_cleanup; }
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ $SKIP_BUILD != 1 ]]; then
    log "building pushgate and loadgen (release)"
    (cd "$ROOT" && cargo build --release -p pushgate -p pushgate-benches)
fi
[[ -x $LOADGEN_BIN ]] || die "loadgen not found at $LOADGEN_BIN (build it or set LOADGEN_BIN)"

# shellcheck source=lib/port.sh
source "$ROOT/benches/lib/port.sh"

# start_server NAME BIN [FLAGS...]: starts the server and waits until its port accepts connections.
# Sets SERVER_PID and SERVER_URL; on failure prints why, writes it to $OUT_DIR/NAME/status, returns 1.
start_server() {
    local name=$1 bin=$2
    shift 2
    local dir="$OUT_DIR/$name" port
    mkdir -p "$dir/work"
    if [[ ! -x $bin ]]; then
        echo "binary not found: $bin" >"$dir/status"
        log "$name: binary not found: $bin"
        return 1
    fi
    port=$(free_port) || die "no free loopback port found"
    new_budget
    (cd "$dir/work" && in_budget "$bin" "--web.listen-address=127.0.0.1:$port" "--persistence.file=" "$@") \
        >"$dir/server.log" 2>&1 &
    SERVER_PID=$!
    SERVER_URL="http://127.0.0.1:$port"
    local deadline=$((SECONDS + START_TIMEOUT)) rc
    while ((SECONDS < deadline)); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            rc=0
            wait "$SERVER_PID" || rc=$?
            SERVER_PID=""
            echo "exited with code $rc before listening" >"$dir/status"
            log "$name: server exited with code $rc before listening on 127.0.0.1:$port; log tail:"
            tail -n 20 "$dir/server.log" | sed 's/^/    /' >&2
            return 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "ok" >"$dir/status"
            log "$name: listening on 127.0.0.1:$port (pid $SERVER_PID)"
            return 0
        fi
        sleep 0.1
    done
    echo "not listening after ${START_TIMEOUT}s" >"$dir/status"
    log "$name: not listening on 127.0.0.1:$port after ${START_TIMEOUT}s; log tail:"
    tail -n 20 "$dir/server.log" | sed 's/^/    /' >&2
    stop_server
    return 1
}

stop_server() {
    stop_process "$SERVER_PID"
    SERVER_PID=""
}

# loadgen NAME SCENARIO [FLAGS...]: runs loadgen against the current server, JSON to NAME/SCENARIO.json.
loadgen() {
    local name=$1 scenario=$2
    shift 2
    local out="$OUT_DIR/$name/$scenario.json" pids=() pid url
    # Memory and CPU are summed over every server process (all nodes of a cluster).
    for pid in "${SERVER_PIDS[@]:-$SERVER_PID}"; do pids+=(--pid "$pid"); done
    for url in "${ALSO_URLS[@]}"; do pids+=(--also-url "$url"); done
    log "$name: $scenario: loadgen $*"
    if ! "$LOADGEN_BIN" --url "$SERVER_URL" "${pids[@]}" --json --timeout "$LOADGEN_TIMEOUT" \
        --series "$SERIES" --connections "$CONNECTIONS" "$@" >"$out" 2>"$OUT_DIR/$name/$scenario.log"; then
        log "$name: $scenario: loadgen failed; its output:"
        sed 's/^/    /' "$OUT_DIR/$name/$scenario.log" >&2
        rm -f "$out"
        return 1
    fi
    sed 's/^/    /' "$OUT_DIR/$name/$scenario.log" >&2
}

run_scenarios() {
    local name=$1
    local warmup=(--warmup --warmup-limit "$WARMUP_LIMIT")
    loadgen "$name" push-small --groups "$SMALL_GROUPS" --duration "$DURATION" "${warmup[@]}" --scrapes 0 || true
    loadgen "$name" push-big --groups "$BIG_GROUPS" --duration "$DURATION" "${warmup[@]}" --scrapes 0 || true
    loadgen "$name" scrape --groups "$BIG_GROUPS" --scrape-only --scrapes "$SCRAPES" || true
}

# --- 3-node cluster target ---------------------------------------------------------------------------
# Three pushgate nodes on loopback (replication factor 2), every one on its own free ports. For
# pushgate-cluster3 the load goes to node 1, so a third of the groups have node 1 as primary and the
# rest take one gRPC hop to their primary plus a replication; for pushgate-cluster3-lb loadgen spreads
# its connections over the three nodes (--also-url), so every node receives, forwards and is forwarded
# to. The scrape is node 1's merged view of the whole cluster. All three share this host's cores with
# each other and with the load generator, unless NODE_CPUS gives each node a budget of its own.
CLUSTER_PIDS=()
stop_cluster() {
    local pid
    # All asked at once, so they stop side by side.
    for pid in "${CLUSTER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${CLUSTER_PIDS[@]}"; do stop_process "$pid"; done
    CLUSTER_PIDS=()
}
cleanup() { stop_server; stop_cluster; cap_cpu_cleanup; }

# run_cluster_target NAME [spread] [tls]
run_cluster_target() {
    local name=$1 spread=${2:-} tls=${3:-} dir="$OUT_DIR/$1" i peers=() http=() gossip=() extra=()
    mkdir -p "$dir"
    if [[ $tls == tls ]]; then
        # shellcheck source=lib/cluster-tls.sh
        source "$ROOT/benches/lib/cluster-tls.sh"
        cluster_tls_files "$dir/tls" 3
    fi
    for i in 1 2 3; do
        http+=("$(free_port)")
        gossip+=("$(free_port)")
    done
    for i in 0 1 2; do peers+=("--cluster.peer=127.0.0.1:${gossip[$i]}"); done
    for i in 0 1 2; do
        new_budget
        extra=()
        [[ $tls == tls ]] && extra=("--cluster.tls-config=$dir/tls/node$((i + 1)).yml"
            "--cluster.gossip-key-file=$dir/tls/gossip.keys")
        (in_budget "$PUSHGATE_BIN" "--web.listen-address=127.0.0.1:${http[$i]}" \
            "--cluster.listen-address=127.0.0.1:${gossip[$i]}" "${peers[@]}" "${extra[@]}") \
            >"$dir/node$((i + 1)).log" 2>&1 &
        CLUSTER_PIDS+=($!)
    done
    SERVER_URL="http://127.0.0.1:${http[0]}"
    SERVER_PID=${CLUSTER_PIDS[0]}
    SERVER_PIDS=("${CLUSTER_PIDS[@]}")
    local deadline=$((SECONDS + START_TIMEOUT))
    cluster_ready() {
        local p
        for p in "${http[@]}"; do
            curl -sf "http://127.0.0.1:$p/-/ready" >/dev/null 2>&1 || return 1
            curl -sf "http://127.0.0.1:$p/metrics" 2>/dev/null \
                | grep -q 'pushgate_cluster_members{state="active"} 3' || return 1
        done
    }
    until cluster_ready; do
        if ((SECONDS >= deadline)); then
            echo "cluster did not form in ${START_TIMEOUT}s" >"$dir/status"
            log "$name: cluster did not form; node 1 log tail:"
            tail -n 20 "$dir/node1.log" | sed 's/^/    /' >&2
            SERVER_PID=""
            SERVER_PIDS=()
            stop_cluster
            return 1
        fi
        sleep 0.2
    done
    echo "ok" >"$dir/status"
    if [[ $spread == spread ]]; then
        ALSO_URLS=("http://127.0.0.1:${http[1]}" "http://127.0.0.1:${http[2]}")
        log "$name: 3 nodes formed a cluster; load spread over $SERVER_URL ${ALSO_URLS[*]}"
    else
        log "$name: 3 nodes formed a cluster; load goes to $SERVER_URL"
    fi
    run_scenarios "$name"
    ALSO_URLS=()
    SERVER_PID=""
    SERVER_PIDS=()
    stop_cluster
}
# ------------------------------------------------------------------------------------------------------

for target in $TARGETS; do
    case $target in
        upstream-on) start_server "$target" "$UPSTREAM_BIN" && run_scenarios "$target" || true ;;
        upstream-off)
            start_server "$target" "$UPSTREAM_BIN" --push.disable-consistency-check \
                && run_scenarios "$target" || true
            ;;
        pushgate-on) start_server "$target" "$PUSHGATE_BIN" && run_scenarios "$target" || true ;;
        pushgate-off)
            start_server "$target" "$PUSHGATE_BIN" --push.disable-consistency-check \
                && run_scenarios "$target" || true
            ;;
        pushgate-cluster3) run_cluster_target "$target" ;;
        pushgate-cluster3-lb) run_cluster_target "$target" spread ;;
        pushgate-cluster3-lb-tls) run_cluster_target "$target" spread tls ;;
        *) die "unknown target $target (known: upstream-on upstream-off pushgate-on pushgate-off pushgate-cluster3 pushgate-cluster3-lb pushgate-cluster3-lb-tls)" ;;
    esac
    stop_server
done

# field TARGET SCENARIO JQ-EXPR: one figure, or empty when the run is missing or the field is null.
field() {
    local file="$OUT_DIR/$1/$2.json"
    [[ -s $file ]] || return 0
    jq -r "($3) // empty" "$file"
}

# fmt DECIMALS VALUE: rounds; empty stays empty.
fmt() { [[ -n $2 ]] && awk -v d="$1" -v v="$2" 'BEGIN { printf "%.*f", d, v }' || true; }

# ratio A B: A/B with two decimals and an "x", or "-" when either is missing or B is zero.
ratio() {
    if [[ -n $1 && -n $2 ]]; then
        awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2fx", a / b }'
    else
        echo "-"
    fi
}

# The rows: label, scenario, jq expression, decimals.
ROWS=(
    "pushes/s, $SMALL_GROUPS groups|push-small|.push.pushes_per_s|0"
    "p50 ms, $SMALL_GROUPS groups|push-small|.push.latency.p50_ms|2"
    "p99 ms, $SMALL_GROUPS groups|push-small|.push.latency.p99_ms|2"
    "server CPU µs/push, $SMALL_GROUPS groups|push-small|.push.server_cpu_us_per_push|1"
    "loadgen CPU µs/push, $SMALL_GROUPS groups|push-small|.push.client_cpu_us_per_push|1"
    "errors, $SMALL_GROUPS groups|push-small|.push.errors|0"
    "groups stored by warmup, of $BIG_GROUPS|push-big|.warmup.pushes_ok|0"
    "pushes/s, $BIG_GROUPS groups|push-big|.push.pushes_per_s|0"
    "p50 ms, $BIG_GROUPS groups|push-big|.push.latency.p50_ms|2"
    "p99 ms, $BIG_GROUPS groups|push-big|.push.latency.p99_ms|2"
    "server CPU µs/push, $BIG_GROUPS groups|push-big|.push.server_cpu_us_per_push|1"
    "loadgen CPU µs/push, $BIG_GROUPS groups|push-big|.push.client_cpu_us_per_push|1"
    "errors, $BIG_GROUPS groups|push-big|.push.errors|0"
    "warmup s, $BIG_GROUPS groups|push-big|.warmup.seconds|1"
    "scrape s (median of $SCRAPES)|scrape|.scrape.median_s|3"
    "scrape MB|scrape|.scrape.bytes / 1e6|1"
    "series in scrape|scrape|.scrape.series|0"
    "RSS MB (full store)|scrape|.rss_bytes / 1e6|0"
)

# Columns that compare pushgate with upstream; the last one is the design target's pairing.
RATIOS=(
    "pushgate-on|upstream-on|pg on / up on"
    "pushgate-off|upstream-off|pg off / up off"
    "pushgate-on|upstream-off|pg on / up off"
    "pushgate-cluster3|pushgate-on|cluster3 / pg on"
    "pushgate-cluster3-lb|pushgate-on|cluster3-lb / pg on"
    "pushgate-cluster3-lb-tls|pushgate-cluster3-lb|lb tls / lb"
)

print_table() {
    local upstream_version
    upstream_version=$("$UPSTREAM_BIN" --version 2>&1 | head -n 1 || echo "upstream")
    echo
    echo "Upstream: $upstream_version. Load: $CONNECTIONS connections, $SERIES series/push, PUT," \
        "${DURATION}s per push scenario, warmed up; host: $(nproc) cores;" \
        "$([[ -n $NODE_CPUS ]] && echo "every server process limited to $NODE_CPUS cores" || echo "servers share the host's cores")."
    echo "Ratios are pushgate / upstream: above 1 is better for pushes/s, below 1 is better for times and sizes."
    echo
    local header="| figure |" rule="|---|" target pair a b title
    for target in $TARGETS; do
        header+=" $target |"
        rule+="---:|"
    done
    for pair in "${RATIOS[@]}"; do
        IFS='|' read -r a b title <<<"$pair"
        header+=" $title |"
        rule+="---:|"
    done
    echo "$header"
    echo "$rule"

    local line="| server |" status
    for target in $TARGETS; do
        status=$(cat "$OUT_DIR/$target/status" 2>/dev/null || echo "not run")
        line+=" $status |"
    done
    for _ in "${RATIOS[@]}"; do line+=" |"; done
    echo "$line"

    local row label scenario expr decimals value
    for row in "${ROWS[@]}"; do
        IFS='|' read -r label scenario expr decimals <<<"$row"
        line="| $label |"
        for target in $TARGETS; do
            value=$(fmt "$decimals" "$(field "$target" "$scenario" "$expr")")
            line+=" ${value:--} |"
        done
        for pair in "${RATIOS[@]}"; do
            IFS='|' read -r a b title <<<"$pair"
            line+=" $(ratio "$(field "$a" "$scenario" "$expr")" "$(field "$b" "$scenario" "$expr")") |"
        done
        echo "$line"
    done
}

print_table | tee "$OUT_DIR/table.md"
log "results, JSON and server logs are in $OUT_DIR"
