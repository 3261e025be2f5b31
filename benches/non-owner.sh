#!/usr/bin/env bash
# non-owner.sh: a push through a node that owns no copy of its group, against the same push sent
# to the group's primary, on one 3-node pushgate cluster on loopback (R = 2).
#
# loadgen pushes only groups whose owners are node 2 (primary) and node 3 (loadgen --owned-by),
# so node 1 owns none of them. Runs alternate, on the same cluster and the same groups:
#   non-owner   every push sent to node 1, which forwards it to node 2 (node 2 replicates to 3)
#   primary     every push sent to node 2, which applies it and replicates it to node 3
#   owner2      every push sent to node 3 (the second owner), which forwards it to node 2
# Each run: loadgen --warmup (every group once, not measured), then DURATION s of pushes with 32
# connections and 20-series PUT bodies; CPU per push per node from /proc/<pid>/stat around the
# measured window. Prints one line per run, then per path the median pushes/s and the
# non-owner / primary ratio of each round and their median.
#
# Usage: benches/non-owner.sh
# Environment: ROUNDS [3]  GROUP_COUNT [2000]  DURATION [8] seconds  CONNECTIONS [32]
#              NODE_CPUS [0.5] cores per node (every node in a cgroup of its own, as on a machine
#                of its own; root; "" to share the host's cores)
#              BASE_PORT [a random one]  PUSHGATE_BIN, LOADGEN_BIN [target/release/...]
# Needs: awk, jq, curl; Linux /proc.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
ROUNDS=${ROUNDS:-3}
GROUPS_N=${GROUP_COUNT:-2000}
DURATION=${DURATION:-8}
CONNECTIONS=${CONNECTIONS:-32}
NODE_CPUS=${NODE_CPUS-0.5}
BASE=${BASE_PORT:-$((12000 + RANDOM % 18000))}
BIN=${PUSHGATE_BIN:-$TARGET_DIR/release/pushgate}
LOADGEN=${LOADGEN_BIN:-$TARGET_DIR/release/loadgen}
for b in "$BIN" "$LOADGEN"; do
    [[ -x $b ]] || { echo "non-owner.sh: no executable at $b (cargo build --release)" >&2; exit 1; }
done
command -v jq >/dev/null || { echo "non-owner.sh: jq is required" >&2; exit 1; }

# shellcheck source=lib/stop.sh
source "$ROOT/benches/lib/stop.sh"
# shellcheck source=lib/cpu-cap.sh
source "$ROOT/benches/lib/cpu-cap.sh"
# shellcheck source=lib/cluster.sh
source "$ROOT/benches/lib/cluster.sh"
LOG=$(mktemp -d -t pushgate-non-owner.XXXXXX)
cleanup() {
    local p
    for p in "${CLUSTER_PIDS[@]}"; do stop_process "$p"; done
    cap_cpu_cleanup
    rm -rf "$LOG"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export NODE_CPUS
cluster_start "$BIN" "$BASE" 3 "$LOG"
pids=("${CLUSTER_PIDS[@]}")
cluster_wait "$BASE" 3 || { echo "non-owner.sh: the cluster did not form" >&2; tail -n 5 "$LOG"/node*.log >&2; exit 1; }
ids=()
for i in 1 2 3; do ids+=("127.0.0.1:$((BASE + 100 + i))"); done

TICKS=$(getconf CLK_TCK)
node_ticks() {
    local p
    for p in "${pids[@]}"; do awk '{printf "%d ", $14 + $15}' "/proc/$p/stat"; done
}
owned=(--job non-owner --groups "$GROUPS_N" --connections "$CONNECTIONS" --scrapes 0 --timeout 300
    --cluster-member "${ids[0]}" --cluster-member "${ids[1]}" --cluster-member "${ids[2]}"
    --owned-by "${ids[1]}" --owned-by "${ids[2]}")

# run PATH NODE: one warmed-up measured run through node NODE (1-3); prints the result line.
run() {
    local path=$1 node=$2 url before after out
    url="http://127.0.0.1:$((BASE + node))"
    "$LOADGEN" --url "$url" "${owned[@]}" --warmup --duration 1 >/dev/null 2>&1
    before=$(node_ticks)
    out=$("$LOADGEN" --url "$url" "${owned[@]}" --duration "$DURATION" --json 2>/dev/null)
    after=$(node_ticks)
    jq -r --arg path "$path" --arg b "$before" --arg a "$after" --argjson t "$TICKS" '
        .push as $p
        | ($b | split(" ") | map(select(. != "") | tonumber)) as $x
        | ($a | split(" ") | map(select(. != "") | tonumber)) as $y
        | [range(0; 3) | ($y[.] - $x[.]) / $t * 1e6 / ([$p.pushes_ok, 1] | max)] as $cpu
        | "\($path) \($p.pushes_per_s | floor) \($p.latency.p50_ms) \($p.latency.p99_ms) \($p.errors) "
          + ($cpu | map(. * 10 | floor / 10 | tostring) | join(" "))' <<<"$out"
}

echo "groups owned by node 2 (primary) and node 3; ${NODE_CPUS:-shared} cores per node; $CONNECTIONS connections; ${DURATION}s per run"
printf '%-6s %-10s %9s %8s %8s %7s %18s\n' round path pushes/s "p50 ms" "p99 ms" errors "CPU µs/push n1/n2/n3"
results=()
for round in $(seq "$ROUNDS"); do
    for pair in "non-owner 1" "primary 2" "owner2 3"; do
        read -r path node <<<"$pair"
        read -r p rate p50 p99 errors c1 c2 c3 < <(run "$path" "$node")
        printf '%-6s %-10s %9s %8s %8s %7s %18s\n' "$round" "$p" "$rate" "$p50" "$p99" "$errors" "$c1/$c2/$c3"
        results+=("$round $p $rate")
    done
done
echo
printf '%s\n' "${results[@]}" | awk '
    function median(arr, n,   i, j, t) {
        for (i = 2; i <= n; i++) { t = arr[i]; for (j = i - 1; j >= 1 && arr[j] > t; j--) arr[j + 1] = arr[j]; arr[j + 1] = t }
        return (n % 2) ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
    }
    { rate[$2, ++n[$2]] = $3; by[$1, $2] = $3 }
    END {
        for (p in n) { k = 0; for (i = 1; i <= n[p]; i++) v[++k] = rate[p, i]; med[p] = median(v, k) }
        printf "median pushes/s: non-owner %.0f, primary %.0f, second owner %.0f\n", med["non-owner"], med["primary"], med["owner2"]
        for (r = 1; (r, "primary") in by; r++) {
            q[r] = by[r, "non-owner"] / by[r, "primary"]; line = line sprintf(" %.2fx", q[r])
        }
        printf "non-owner / primary per round:%s; median %.2fx\n", line, median(q, r - 1)
    }'
