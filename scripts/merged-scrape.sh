#!/usr/bin/env bash
# Merged scrape against local scrape of the same data: starts a cluster of NODES nodes (default
# R) and a single node on loopback, pushes PUSH_GROUPS groups of 20 series (22 with the push time
# families) to each (loadgen's warmup), then times SCRAPES scrapes of the single node's /metrics
# and of node 1's merged /metrics (curl, text format, uncompressed), with the bytes each sends
# and, for node 1, how far its resident memory rose during each scrape (the peak, VmHWM after
# resetting it through /proc/<pid>/clear_refs, less VmRSS before), then the CPU time each process
# spent per scrape (the single node during its scrapes, every cluster node during the merged
# ones: the scraped node's own work and its peers' answers) and every node's VmRSS.
# Prints the median of each. NODE_CPUS (e.g. 0.25) runs every node, the single one included, in a
# cgroup of its own with that many cores (benches/lib/cpu-cap.sh, root needed), as
# benches/scaling.sh does; loadgen and curl stay outside.
#   [NODES=3] [PUSH_GROUPS=10000] [SCRAPES=7] [NODE_CPUS=] scripts/merged-scrape.sh
# PUSHGATE_BIN and LOADGEN_BIN override the binaries (default target/release/...); BASE_PORT the
# first of the ports used (default random, below the kernel's ephemeral range; the cluster takes
# BASE_PORT+1..+NODES and +101..+100+NODES, the single node BASE_PORT+99). CLUSTER_TLS=1 runs the
# cluster with --cluster.tls-config (certificates made with openssl in a temp dir).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${PUSHGATE_BIN:-$ROOT/target/release/pushgate}
LOADGEN=${LOADGEN_BIN:-$ROOT/target/release/loadgen}
NODES=${NODES:-3}
PUSH_GROUPS=${PUSH_GROUPS:-10000}
SCRAPES=${SCRAPES:-7}
B=${BASE_PORT:-$((12000 + RANDOM % 18000))}
NODE_CPUS=${NODE_CPUS:-}
LOG=$(mktemp -d)
pids=()
# shellcheck source=../benches/lib/cpu-cap.sh
source "$ROOT/benches/lib/cpu-cap.sh"
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; cap_cpu_cleanup; rm -rf "$LOG"' EXIT INT TERM
# start LOGFILE ARGS...: a pushgate node in the background (in a cgroup of NODE_CPUS when set).
start() {
    local log=$1
    shift
    [[ -z $NODE_CPUS ]] || cap_cpu_group "$NODE_CPUS"
    (
        [[ -z $NODE_CPUS ]] || cap_cpu_enter
        exec "$BIN" "$@"
    ) >"$log" 2>&1 &
    pids+=($!)
}
peers=()
for i in $(seq "$NODES"); do peers+=("--cluster.peer=127.0.0.1:$((B + 100 + i))"); done
if [[ ${CLUSTER_TLS:-0} == 1 ]]; then
    # shellcheck source=../benches/lib/cluster-tls.sh
    source "$ROOT/benches/lib/cluster-tls.sh"
    cluster_tls_files "$LOG/tls" "$NODES"
fi
for i in $(seq "$NODES"); do
    tls=()
    [[ ${CLUSTER_TLS:-0} == 1 ]] && tls=("--cluster.tls-config=$LOG/tls/node$i.yml")
    start "$LOG/node$i.log" "--web.listen-address=127.0.0.1:$((B + i))" "--persistence.file=" \
        "--cluster.listen-address=127.0.0.1:$((B + 100 + i))" "${peers[@]}" "${tls[@]}"
done
start "$LOG/single.log" "--web.listen-address=127.0.0.1:$((B + 99))" "--persistence.file="
single=${pids[-1]}
formed=0
for _ in $(seq 200); do
    if curl -sf "http://127.0.0.1:$((B + 1))/metrics" 2>/dev/null |
        grep -q "pushgate_cluster_members{state=\"active\"} $NODES"; then
        formed=1
        break
    fi
    sleep 0.3
done
((formed)) || { echo "the cluster did not form" >&2; tail -n 5 "$LOG"/node*.log >&2; exit 1; }
for port in $((B + 1)) $((B + 99)); do
    "$LOADGEN" --url "http://127.0.0.1:$port" --groups "$PUSH_GROUPS" --warmup --scrape-only --scrapes 1 \
        --wait-ready 10 >/dev/null 2>&1
done
kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
# scrapes PORT PID: one line per scrape: seconds, bytes, RSS rise in kB.
scrapes() {
    local port=$1 pid=$2 before
    for _ in $(seq "$SCRAPES"); do
        before=$(kb "$pid" VmRSS)
        echo 5 >"/proc/$pid/clear_refs"
        curl -sf -o /dev/null -w '%{time_total} %{size_download} ' "http://127.0.0.1:$port/metrics"
        echo $(($(kb "$pid" VmHWM) - before))
    done
}
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
report() {
    local what=$1 file=$2
    printf '%-28s %s s, %s bytes, RSS rise %s MB (medians of %s)\n' "$what" \
        "$(cut -d' ' -f1 "$file" | median)" "$(cut -d' ' -f2 "$file" | median)" \
        "$(cut -d' ' -f3 "$file" | median | awk '{ printf "%.1f", $1 / 1024 }')" "$SCRAPES"
}
# ticks PID: the user and system CPU time the process has spent, in clock ticks.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
tick_ms=$((1000 / $(getconf CLK_TCK)))
single_before=$(ticks "$single")
scrapes $((B + 99)) "$single" >"$LOG/single.scrapes"
single_ms=$((($(ticks "$single") - single_before) * tick_ms / SCRAPES))
nodes_before=()
for i in $(seq 0 $((NODES - 1))); do nodes_before+=("$(ticks "${pids[$i]}")"); done
scrapes $((B + 1)) "${pids[0]}" >"$LOG/merged.scrapes"
nodes_ms=()
for i in $(seq 0 $((NODES - 1))); do
    nodes_ms+=($((($(ticks "${pids[$i]}") - nodes_before[i]) * tick_ms / SCRAPES)))
done
report "single node, local scrape:" "$LOG/single.scrapes"
report "$NODES nodes, merged scrape:" "$LOG/merged.scrapes"
echo "CPU ms per scrape: single node $single_ms; node 1..$NODES during the merged ones: ${nodes_ms[*]}"
echo -n "VmRSS MB after, node 1..$NODES:"
for i in $(seq 0 $((NODES - 1))); do echo -n " $(($(kb "${pids[$i]}" VmRSS) / 1024))"; done
echo
