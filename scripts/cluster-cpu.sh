#!/usr/bin/env bash
# CPU cost of a push: starts NODES pushgate nodes on loopback (1 = a single node, 3 = a cluster
# with the default replication factor), pushes with loadgen to node 1 and prints the user+system
# CPU microseconds all nodes spent per push (warmup and measured pushes), from /proc/<pid>/stat.
#   [DURATION=8] scripts/cluster-cpu.sh [NODES] [extra loadgen flags...]
# PUSHGATE_BIN and LOADGEN_BIN override the binaries (default target/release/...). PUSH_GROUPS sets
# how many groups the pushes spread over (default 10,000).
# NODE_CPUS=0.5 starts every node in a cgroup of its own limited to that many cores (root): each
# node then has the budget a node on a machine of its own would have, instead of all nodes sharing
# this host's cores. TLS=1 runs the nodes with mutual TLS and a gossip key (benches/lib/cluster-tls.sh).
# IDLE=<seconds> measures instead the CPU the nodes spend between pushes: PUSH_GROUPS groups
# (default 50,000) are pushed through node 1, and after 12 s for the copies to settle it prints the
# CPU milliseconds all nodes spent over IDLE seconds without pushes or scrapes (gossip and the
# reconciliation rounds, the part that grows with the store; PUSH_GROUPS=1 gives gossip's floor).
set -euo pipefail
NODES=${1:-3}
shift || true
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${PUSHGATE_BIN:-$ROOT/target/release/pushgate}
LOADGEN=${LOADGEN_BIN:-$ROOT/target/release/loadgen}
BASE=${BASE_PORT:-$((12000 + RANDOM % 18000))}
TICK=$(getconf CLK_TCK)
LOG=$(mktemp -d)
# shellcheck source=../benches/lib/cpu-cap.sh
source "$ROOT/benches/lib/cpu-cap.sh"
# shellcheck source=../benches/lib/cluster.sh
source "$ROOT/benches/lib/cluster.sh"
trap 'kill "${CLUSTER_PIDS[@]}" 2>/dev/null; wait 2>/dev/null; cap_cpu_cleanup; rm -rf "$LOG"' EXIT INT TERM
if [[ ${TLS:-0} == 1 ]]; then
    # shellcheck source=../benches/lib/cluster-tls.sh
    source "$ROOT/benches/lib/cluster-tls.sh"
    cluster_tls_files "$LOG/tls" "$NODES"
    CLUSTER_TLS_DIR=$LOG/tls
fi
cluster_start "$BIN" "$BASE" "$NODES" "$LOG"
pids=("${CLUSTER_PIDS[@]}")
cluster_wait "$BASE" "$NODES" || { echo "nodes did not become ready" >&2; tail -n 5 "$LOG"/node*.log >&2; exit 1; }
ticks() {
  local t=0 p
  for p in "${pids[@]}"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$t"
}
node_ticks() {
  local p
  for p in "${pids[@]}"; do awk '{printf "%d ", $14 + $15}' "/proc/$p/stat"; done
}
if [[ -n ${IDLE:-} ]]; then
    "$LOADGEN" --url "http://127.0.0.1:$((BASE + 1))" --groups "${PUSH_GROUPS:-50000}" --duration 0.1 \
        --warmup --scrapes 0 >/dev/null 2>&1
    sleep 12
    before=$(ticks)
    sleep "$IDLE"
    after=$(ticks)
    echo "nodes=$NODES groups=${PUSH_GROUPS:-50000} idle=${IDLE}s cpu_ms_all_nodes=$(((after - before) * 1000 / TICK))"
    exit 0
fi
before=$(ticks)
nodes_before=$(node_ticks)
json=$("$LOADGEN" --url "http://127.0.0.1:$((BASE + 1))" --groups "${PUSH_GROUPS:-10000}" --duration "${DURATION:-8}" --warmup \
  --scrapes 0 --json "$@" 2>/dev/null)
after=$(ticks)
nodes_after=$(node_ticks)
echo "$json" | python3 -c "
import json, sys
r = json.loads(sys.stdin.read())
ticks, tick, nodes = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
w, p = r.get('warmup') or {}, r.get('push') or {}
pushes = w.get('pushes_ok', 0) + p.get('pushes_ok', 0)
errors = w.get('errors', 0) + p.get('errors', 0)
rate = p.get('pushes_per_s', 0)
p50 = p.get('latency', {}).get('p50_ms', 0)
cpu = ticks / tick
per_node = [(int(a) - int(b)) / tick * 1e6 / max(pushes, 1)
            for b, a in zip(sys.argv[4].split(), sys.argv[5].split())]
print(f'nodes={nodes} pushes={pushes} errors={errors} push/s={rate:.0f} p50={p50:.2f}ms '
      f'cpu={cpu:.2f}s cpu_us_per_push={cpu * 1e6 / max(pushes, 1):.1f} '
      f'per_node=' + '/'.join(f'{c:.1f}' for c in per_node))
" "$((after - before))" "$TICK" "$NODES" "$nodes_before" "$nodes_after"
