#!/usr/bin/env bash
# Merged scrape against local scrape of the same data: starts a 3-node cluster (R=2) and a single
# node on loopback, pushes PUSH_GROUPS groups of 20 series to each (loadgen's warmup), then times
# SCRAPES scrapes of the single node's /metrics and of node 1's merged /metrics.
#   [PUSH_GROUPS=10000] [SCRAPES=7] scripts/merged-scrape.sh
# PUSHGATE_BIN and LOADGEN_BIN override the binaries (default target/release/...); BASE_PORT the
# first of the ports used (default random, below the kernel's ephemeral range). CLUSTER_TLS=1 runs
# the cluster with --cluster.tls-config (certificates made with openssl in a temp dir).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${PUSHGATE_BIN:-$ROOT/target/release/pushgate}
LOADGEN=${LOADGEN_BIN:-$ROOT/target/release/loadgen}
PUSH_GROUPS=${PUSH_GROUPS:-10000}
SCRAPES=${SCRAPES:-7}
B=${BASE_PORT:-$((12000 + RANDOM % 18000))}
LOG=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$LOG"' EXIT INT TERM
peers=()
for i in 1 2 3; do peers+=("--cluster.peer=127.0.0.1:$((B + 100 + i))"); done
if [[ ${CLUSTER_TLS:-0} == 1 ]]; then
    # shellcheck source=../benches/lib/cluster-tls.sh
    source "$ROOT/benches/lib/cluster-tls.sh"
    cluster_tls_files "$LOG/tls" 3
fi
for i in 1 2 3; do
    tls=()
    [[ ${CLUSTER_TLS:-0} == 1 ]] && tls=("--cluster.tls-config=$LOG/tls/node$i.yml")
    "$BIN" "--web.listen-address=127.0.0.1:$((B + i))" "--persistence.file=" \
        "--cluster.listen-address=127.0.0.1:$((B + 100 + i))" "${peers[@]}" "${tls[@]}" >"$LOG/node$i.log" 2>&1 &
    pids+=($!)
done
"$BIN" "--web.listen-address=127.0.0.1:$((B + 9))" "--persistence.file=" >"$LOG/single.log" 2>&1 &
pids+=($!)
formed=0
for _ in $(seq 200); do
    if curl -sf "http://127.0.0.1:$((B + 1))/metrics" 2>/dev/null |
        grep -q 'pushgate_cluster_members{state="active"} 3'; then
        formed=1
        break
    fi
    sleep 0.3
done
((formed)) || { echo "the cluster did not form" >&2; tail -n 5 "$LOG"/node*.log >&2; exit 1; }
for port in $((B + 1)) $((B + 9)); do
    "$LOADGEN" --url "http://127.0.0.1:$port" --groups "$PUSH_GROUPS" --warmup --scrape-only --scrapes 1 \
        --wait-ready 10 >/dev/null 2>&1
done
echo -n "single node, local scrape: "
"$LOADGEN" --url "http://127.0.0.1:$((B + 9))" --groups "$PUSH_GROUPS" --scrape-only --scrapes "$SCRAPES" 2>&1 | grep '^scrape:'
echo -n "3 nodes, merged scrape:    "
"$LOADGEN" --url "http://127.0.0.1:$((B + 1))" --groups "$PUSH_GROUPS" --scrape-only --scrapes "$SCRAPES" 2>&1 | grep '^scrape:'
