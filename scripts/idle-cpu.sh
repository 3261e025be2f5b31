#!/usr/bin/env bash
# CPU a cluster spends between pushes: starts NODES nodes on loopback (default R), pushes
# PUSH_GROUPS groups of 20 series through node 1 (loadgen's warmup), waits for the copies to
# settle, then prints the user+system CPU milliseconds all nodes spent over IDLE seconds without
# pushes or scrapes: gossip and the reconciliation rounds (anti-entropy every 10 s + jitter), the
# part that grows with the store. PUSH_GROUPS=1 gives the floor (gossip alone).
#   [NODES=3] [PUSH_GROUPS=50000] [IDLE=30] scripts/idle-cpu.sh
# PUSHGATE_BIN and LOADGEN_BIN override the binaries (default target/release/...); BASE_PORT the
# first port (the nodes take BASE_PORT+1..+NODES and +101..+100+NODES).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${PUSHGATE_BIN:-$ROOT/target/release/pushgate}
LOADGEN=${LOADGEN_BIN:-$ROOT/target/release/loadgen}
NODES=${NODES:-3}
PUSH_GROUPS=${PUSH_GROUPS:-50000}
IDLE=${IDLE:-30}
BASE=${BASE_PORT:-$((12000 + RANDOM % 18000))}
TICK=$(getconf CLK_TCK)
LOG=$(mktemp -d)
# shellcheck source=../benches/lib/cpu-cap.sh
source "$ROOT/benches/lib/cpu-cap.sh"
# shellcheck source=../benches/lib/cluster.sh
source "$ROOT/benches/lib/cluster.sh"
trap 'kill "${CLUSTER_PIDS[@]}" 2>/dev/null; wait 2>/dev/null; cap_cpu_cleanup; rm -rf "$LOG"' EXIT INT TERM
cluster_start "$BIN" "$BASE" "$NODES" "$LOG"
cluster_wait "$BASE" "$NODES" || { echo "nodes did not become ready" >&2; exit 1; }
"$LOADGEN" --url "http://127.0.0.1:$((BASE + 1))" --groups "$PUSH_GROUPS" --duration 0.1 --warmup \
    --scrapes 0 >/dev/null 2>&1
# The replicas' queues drain and a first round after the pushes has run.
sleep 12
ticks() {
    local t=0 p
    for p in "${CLUSTER_PIDS[@]}"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
    echo "$t"
}
before=$(ticks)
sleep "$IDLE"
after=$(ticks)
echo "nodes=$NODES groups=$PUSH_GROUPS idle=${IDLE}s cpu_ms_all_nodes=$(((after - before) * 1000 / TICK))"
