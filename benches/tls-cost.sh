#!/usr/bin/env bash
# tls-cost.sh: what securing the cluster plane costs, measured side by side on a noisy host. Starts
# two 3-node clusters on loopback at once, one open and one with mutual TLS and a gossip key
# (benches/lib/cluster-tls.sh), fills both with the same groups, then alternates between them:
# ROUNDS short push runs each (connections spread over the three nodes, as behind a balancer) and
# SCRAPES merged scrapes of node 1 each. Alternating means a burst of noise from other processes
# hits both clusters alike, which back-to-back runs (benches/compare.sh) cannot promise. Prints the
# medians and the secured/open ratios.
#   [ROUNDS=5] [ROUND_S=4] [SCRAPES=9] [PUSH_GROUPS=10000] [NODE_CPUS=0.5] benches/tls-cost.sh
# PUSHGATE_BIN and LOADGEN_BIN override the binaries (default target/release/...). NODE_CPUS=""
# runs the nodes without a CPU cap.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${PUSHGATE_BIN:-$ROOT/target/release/pushgate}
LOADGEN=${LOADGEN_BIN:-$ROOT/target/release/loadgen}
ROUNDS=${ROUNDS:-5}
ROUND_S=${ROUND_S:-4}
SCRAPES=${SCRAPES:-9}
PUSH_GROUPS=${PUSH_GROUPS:-10000}
export NODE_CPUS=${NODE_CPUS-0.5}
LOG=$(mktemp -d)
# shellcheck source=lib/cpu-cap.sh
source "$ROOT/benches/lib/cpu-cap.sh"
# shellcheck source=lib/cluster.sh
source "$ROOT/benches/lib/cluster.sh"
# shellcheck source=lib/cluster-tls.sh
source "$ROOT/benches/lib/cluster-tls.sh"
trap 'kill "${CLUSTER_PIDS[@]}" 2>/dev/null; wait 2>/dev/null; cap_cpu_cleanup; rm -rf "$LOG"' EXIT INT TERM

open_base=$((12000 + RANDOM % 8000))
tls_base=$((open_base + 1000))
mkdir -p "$LOG/open" "$LOG/tls"
cluster_start "$BIN" "$open_base" 3 "$LOG/open"
cluster_tls_files "$LOG/tls/certs" 3
CLUSTER_TLS_DIR=$LOG/tls/certs cluster_start "$BIN" "$tls_base" 3 "$LOG/tls"
for base in "$open_base" "$tls_base"; do
    cluster_wait "$base" 3 || { echo "a cluster did not form" >&2; tail -n 5 "$LOG"/*/node*.log >&2; exit 1; }
done

urls() { echo "--url http://127.0.0.1:$(($1 + 1)) --also-url http://127.0.0.1:$(($1 + 2)) --also-url http://127.0.0.1:$(($1 + 3))"; }
# Fill both with the same groups (loadgen's warmup pushes every group once).
for base in "$open_base" "$tls_base"; do
    # shellcheck disable=SC2046
    "$LOADGEN" $(urls "$base") --groups "$PUSH_GROUPS" --duration 1 --warmup --scrapes 0 --json >/dev/null 2>&1
done

push_rate() {
    # shellcheck disable=SC2046
    "$LOADGEN" $(urls "$1") --groups "$PUSH_GROUPS" --duration "$ROUND_S" --scrapes 0 --json 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["push"]["pushes_per_s"])'
}
scrape_s() {
    curl -sf -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$(($1 + 1))/metrics"
}
# alternate N FN: N rounds of `FN BASE` on both clusters, which goes first alternating (so neither
# always runs right after the other's load); appends FN's output to $LOG/FN.open and $LOG/FN.tls.
alternate() {
    local n=$1 fn=$2 r which base order
    for r in $(seq "$n"); do
        if ((r % 2)); then order="open tls"; else order="tls open"; fi
        for which in $order; do
            base=$open_base
            [[ $which == tls ]] && base=$tls_base
            "$fn" "$base" >>"$LOG/$fn.$which"
        done
    done
}
alternate "$ROUNDS" push_rate
alternate "$SCRAPES" scrape_s
python3 - "$LOG" "$ROUNDS" "$ROUND_S" "$SCRAPES" "$PUSH_GROUPS" "${NODE_CPUS:-uncapped}" <<'EOF'
import statistics, sys
log, rounds, round_s, scrapes, groups, cpus = sys.argv[1:]
def vals(name):
    return [float(l) for l in open(f"{log}/{name}") if l.strip()]
po, pt = vals("push_rate.open"), vals("push_rate.tls")
so, st = vals("scrape_s.open"), vals("scrape_s.tls")
print(f"3 nodes, R=2, {groups} groups of 20 series, NODE_CPUS={cpus}; "
      f"{rounds} push runs of {round_s} s and {scrapes} merged scrapes per cluster, alternated")
print("| figure | open | mutual TLS + gossip key | secured / open |")
print("|---|---:|---:|---:|")
mp, mt = statistics.median(po), statistics.median(pt)
print(f"| pushes/s behind a balancer (median) | {mp:.0f} | {mt:.0f} | {mt / mp:.2f}x |")
mo, ms = statistics.median(so), statistics.median(st)
print(f"| merged scrape s (median) | {mo:.3f} | {ms:.3f} | {ms / mo:.2f}x |")
print("push runs, open:", " ".join(f"{v:.0f}" for v in po), "| secured:", " ".join(f"{v:.0f}" for v in pt))
print("scrapes, open:", " ".join(f"{v:.3f}" for v in so), "| secured:", " ".join(f"{v:.3f}" for v in st))
EOF
