#!/usr/bin/env bash
# scaling.sh: how the cluster scales out. For each N in NODES_LIST, starts N pushgate nodes on
# loopback (one node: a single node, R = 1; more: a cluster with the default R = 2), each node in a
# cgroup of its own with the same CPU budget (NODE_CPUS cores, benches/lib/cpu-cap.sh), the load
# generator outside every budget, and measures:
#   - pushes/s, p99 and CPU per push (per node and in all) with the connections spread over every
#     node as a balancer would (loadgen --also-url): --warmup over PUSH_GROUPS groups, then
#     DURATION s of 20-series PUTs; CPU from /proc/<pid>/stat around the whole loadgen run;
#   - the merged scrape: the store filled to SCRAPE_GROUPS groups of 20 series (1.1 million series
#     by default), then the median time of SCRAPES scrapes of node 1 and node 1's peak RSS (VmHWM).
# Prints one table with the scaling efficiency E(N) = pushes/s(N) / (pushes/s(1) x N / R), and
# first the same figures for the upstream Pushgateway (UPSTREAM_BIN, Debian's by default; its
# consistency check off, as pushgate's cluster has none across groups of different owners) on the
# same budget, as the reference. UPSTREAM_BIN="" leaves it out.
#   [NODES_LIST="1 2 3 4 5"] [NODE_CPUS=0.25] [DURATION=10] [PUSH_GROUPS=10000]
#   [SCRAPE_GROUPS=55000] [SCRAPES=3] benches/scaling.sh
# PUSHGATE_BIN and LOADGEN_BIN override the binaries (default target/release/...). Needs root
# (cgroups), curl, python3.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${PUSHGATE_BIN:-$ROOT/target/release/pushgate}
LOADGEN=${LOADGEN_BIN:-$ROOT/target/release/loadgen}
UPSTREAM=${UPSTREAM_BIN-/usr/bin/prometheus-pushgateway}
NODES_LIST=${NODES_LIST:-"1 2 3 4 5"}
DURATION=${DURATION:-10}
PUSH_GROUPS=${PUSH_GROUPS:-10000}
SCRAPE_GROUPS=${SCRAPE_GROUPS:-55000}
SCRAPES=${SCRAPES:-3}
export NODE_CPUS=${NODE_CPUS-0.25}
TICK=$(getconf CLK_TCK)
LOG=$(mktemp -d)
for b in "$BIN" "$LOADGEN"; do
    [[ -x $b ]] || { echo "scaling.sh: no executable at $b (cargo build --release)" >&2; exit 1; }
done
# shellcheck source=lib/cpu-cap.sh
source "$ROOT/benches/lib/cpu-cap.sh"
# shellcheck source=lib/cluster.sh
source "$ROOT/benches/lib/cluster.sh"
stop_nodes() {
    kill "${CLUSTER_PIDS[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    CLUSTER_PIDS=()
    cap_cpu_cleanup
}
trap 'stop_nodes; rm -rf "$LOG"' EXIT INT TERM

node_ticks() {
    local p
    for p in "${CLUSTER_PIDS[@]}"; do awk '{printf "%d ", $14 + $15}' "/proc/$p/stat"; done
}

# upstream_start BASE: the upstream Pushgateway on 127.0.0.1:BASE+1 in a cgroup of NODE_CPUS.
upstream_start() {
    local port=$(($1 + 1))
    [[ -z $NODE_CPUS ]] || cap_cpu_group "$NODE_CPUS"
    (
        [[ -z $NODE_CPUS ]] || cap_cpu_enter
        exec "$UPSTREAM" "--web.listen-address=127.0.0.1:$port" --push.disable-consistency-check \
            "--persistence.file="
    ) >"$LOG/nupstream/node1.log" 2>&1 &
    CLUSTER_PIDS+=($!)
    for _ in $(seq 150); do
        curl -sf "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    return 1
}

runs=()
[[ -n $UPSTREAM && -x $UPSTREAM ]] && runs+=(upstream)
runs+=($NODES_LIST)
: >"$LOG/rows"
for n in "${runs[@]}"; do
    base=$((12000 + RANDOM % 16000))
    mkdir -p "$LOG/n$n"
    if [[ $n == upstream ]]; then
        upstream_start "$base" || { echo "scaling.sh: upstream did not become ready" >&2; exit 1; }
        urls=(--url "http://127.0.0.1:$((base + 1))")
    else
        cluster_start "$BIN" "$base" "$n" "$LOG/n$n"
        cluster_wait "$base" "$n" || { echo "scaling.sh: $n nodes did not become ready" >&2; tail -n 5 "$LOG/n$n"/node*.log >&2; exit 1; }
        urls=(--url "http://127.0.0.1:$((base + 1))")
        for i in $(seq 2 "$n"); do urls+=(--also-url "http://127.0.0.1:$((base + i))"); done
    fi

    before=$(node_ticks)
    "$LOADGEN" "${urls[@]}" --groups "$PUSH_GROUPS" --duration "$DURATION" --warmup --scrapes 0 \
        --json >"$LOG/n$n/push.json" 2>"$LOG/n$n/push.err"
    after=$(node_ticks)

    # Fill to SCRAPE_GROUPS groups (the warmup pushes each once), then time merged scrapes.
    "$LOADGEN" "${urls[@]}" --groups "$SCRAPE_GROUPS" --duration 1 --warmup --scrapes 0 \
        --json >/dev/null 2>"$LOG/n$n/fill.err"
    : >"$LOG/n$n/scrapes"
    for _ in $(seq "$SCRAPES"); do
        curl -sf -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$((base + 1))/metrics" >>"$LOG/n$n/scrapes"
    done
    hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/${CLUSTER_PIDS[0]}/status")
    echo "$n|$before|$after|$hwm" >>"$LOG/rows"
    stop_nodes
done

python3 - "$LOG" "$TICK" "$NODE_CPUS" "$DURATION" "$PUSH_GROUPS" "$SCRAPE_GROUPS" <<'EOF'
import json, statistics, sys
log, tick, cpus, duration, push_groups, scrape_groups = sys.argv[1:]
tick = int(tick)
rows = []
for line in open(f"{log}/rows"):
    n, before, after, hwm = line.strip().split("|")
    r = json.load(open(f"{log}/n{n}/push.json"))
    w, p = r.get("warmup") or {}, r.get("push") or {}
    pushes = w.get("pushes_ok", 0) + p.get("pushes_ok", 0)
    per_node = [(int(a) - int(b)) / tick * 1e6 / max(pushes, 1)
                for b, a in zip(before.split(), after.split())]
    scrapes = [float(v) for v in open(f"{log}/n{n}/scrapes") if v.strip()]
    rows.append(dict(n=n, r=2 if n not in ("1", "upstream") else 1, rate=p.get("pushes_per_s", 0.0),
                     p99=p.get("latency", {}).get("p99_ms", 0.0),
                     errors=w.get("errors", 0) + p.get("errors", 0), per_node=per_node,
                     scrape=statistics.median(scrapes) if scrapes else float("nan"),
                     hwm_mb=int(hwm) / 1024))
one = next((x["rate"] for x in rows if x["n"] == "1"), None)
print(f"NODE_CPUS={cpus} per node; {duration} s of pushes over {push_groups} groups after a warmup; "
      f"merged scrape of {scrape_groups} groups x 20 series")
print("| nodes | R | pushes/s | E(N) | p99 ms | errors | CPU µs/push, all nodes | per node | merged scrape s | node 1 peak RSS MB |")
print("|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
for x in rows:
    e = "-"
    if one and x["n"] != "upstream":
        e = f"{x['rate'] / (one * int(x['n']) / x['r']):.2f}"
    label = "upstream 1 node" if x["n"] == "upstream" else x["n"]
    print(f"| {label} | {x['r']} | {x['rate']:.0f} | {e} | {x['p99']:.2f} | {x['errors']} | "
          f"{sum(x['per_node']):.1f} | {' / '.join(f'{c:.1f}' for c in x['per_node'])} | "
          f"{x['scrape']:.3f} | {x['hwm_mb']:.0f} |")
EOF
