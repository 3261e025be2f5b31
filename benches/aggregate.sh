#!/usr/bin/env bash
# aggregate.sh: pushes/s of aggregating groups (`/aggregate/metrics/job/...`) against ordinary
# groups (`/metrics/job/...`) on one pushgate node, with the same body (loadgen's 20-series PUT:
# a histogram, counters, gauges), the upstream Pushgateway's ordinary pushes and gravel-gateway's
# aggregating pushes (the single-node aggregating gateway pushgate's `/aggregate` stands in for)
# in the same rounds. Kinds alternate within each round (ordinary, aggregating, upstream) so that a
# busy moment of a noisy host hits all alike; each run starts a fresh server, pushes every group
# once (not measured), then pushes for DURATION seconds and reads the server's CPU time, and the
# growth of its resident memory from ready to the end of the run, per group (GROUPS_N groups of
# 20 series each are then held).
#
# Usage: benches/aggregate.sh
# Environment: REPS [3]  GROUPS_N [1000]  DURATION [6] seconds  PORT [19251]
#              PUSHGATE_BIN [target/release/pushgate]  LOADGEN_BIN [target/release/loadgen]
#              UPSTREAM_BIN [/usr/bin/prometheus-pushgateway; skipped when missing]
#              GRAVEL_BIN [gravel-gateway on PATH; skipped when missing:
#                          cargo install gravel-gateway --root /tmp/gravel]
# Needs: awk, jq; Linux /proc.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
REPS=${REPS:-3}
GROUPS_N=${GROUPS_N:-1000}
DURATION=${DURATION:-6}
PORT=${PORT:-19251}
PUSHGATE_BIN=${PUSHGATE_BIN:-$TARGET_DIR/release/pushgate}
LOADGEN_BIN=${LOADGEN_BIN:-$TARGET_DIR/release/loadgen}
UPSTREAM_BIN=${UPSTREAM_BIN:-/usr/bin/prometheus-pushgateway}
GRAVEL_BIN=${GRAVEL_BIN:-$(command -v gravel-gateway || true)}
for bin in "$PUSHGATE_BIN" "$LOADGEN_BIN"; do
    [[ -x $bin ]] || { echo "aggregate.sh: no executable $bin (cargo build --release -p pushgate -p pushgate-benches)" >&2; exit 1; }
done
command -v jq >/dev/null || { echo "aggregate.sh: jq is required" >&2; exit 1; }

# shellcheck source=lib/rounds.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/rounds.sh"
rounds_setup aggregate

url="http://127.0.0.1:$PORT"

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# run KIND: prints "pushes_per_s cpu_us_per_push rss_bytes_per_group" for KIND ordinary,
# aggregating or upstream.
run() {
    local bin=$PUSHGATE_BIN prefix=""
    case $1 in
        aggregating) prefix=/aggregate ;;
        upstream) bin=$UPSTREAM_BIN ;;
        gravel) bin=$GRAVEL_BIN ;;
    esac
    if [[ $1 == gravel ]]; then
        # gravel-gateway aggregates on its plain /metrics/job/... route and has no /-/ready.
        "$bin" -l "127.0.0.1:$PORT" >/dev/null 2>&1 &
        SERVER_PID=$!
        local tries=0
        until curl -sf -o /dev/null "$url/metrics"; do
            (( ++tries < 150 )) || { echo "aggregate.sh: gravel-gateway did not start" >&2; exit 1; }
            sleep 0.1
        done
    else
        "$bin" --web.listen-address="127.0.0.1:$PORT" --persistence.file= >/dev/null 2>&1 &
        SERVER_PID=$!
        "$LOADGEN_BIN" --url "$url" --wait-ready 15 --scrape-only --scrapes 1 >/dev/null 2>&1
    fi
    local common=(--url "$url" --groups "$GROUPS_N" --push-path-prefix "$prefix" --scrapes 0 --timeout 300)
    local rss0 rss1
    rss0=$(rss_kb "$SERVER_PID")
    "$LOADGEN_BIN" "${common[@]}" --warmup --duration 1 >/dev/null 2>&1
    local before after out ok secs
    before=$(awk '{print $14 + $15}' "/proc/$SERVER_PID/stat")
    out=$("$LOADGEN_BIN" "${common[@]}" --duration "$DURATION" --json 2>/dev/null)
    after=$(awk '{print $14 + $15}' "/proc/$SERVER_PID/stat")
    rss1=$(rss_kb "$SERVER_PID")
    stop_process "$SERVER_PID"
    SERVER_PID=""
    ok=$(jq -r '.push.pushes_ok // 0' <<<"$out")
    secs=$(jq -r '.push.seconds // 0' <<<"$out")
    [[ $ok -gt 0 ]] || { echo "aggregate.sh: no successful pushes ($1)" >&2; exit 1; }
    awk -v b="$before" -v a="$after" -v n="$ok" -v d="$secs" -v t="$TICKS" -v r0="$rss0" \
        -v r1="$rss1" -v g="$GROUPS_N" \
        'BEGIN { printf "%.0f %.1f %.0f\n", n / d, (a - b) * 1e6 / t / n, (r1 - r0) * 1024 / g }'
}

kinds=(ordinary aggregating)
[[ -x $UPSTREAM_BIN ]] && kinds+=(upstream)
[[ -n $GRAVEL_BIN && -x $GRAVEL_BIN ]] && kinds+=(gravel)
printf '%-12s %5s %10s %14s %16s\n' kind round pushes/s "CPU µs/push" "RSS bytes/group"
for rep in $(seq "$REPS"); do
    for kind in "${kinds[@]}"; do
        read -r rate cpu mem < <(run "$kind")
        printf '%-12s %5s %10s %14s %16s\n' "$kind" "$rep" "$rate" "$cpu" "$mem"
        echo "$kind $rep $rate $cpu $mem" >>"$RESULTS"
    done
done

echo
echo "medians over $REPS rounds; each ratio is the median of the rounds' ratios"
awk "$MEDIAN_AWK"'
    { rate[$1, ++n[$1]] = $3; cpu[$1, n[$1]] = $4; mem[$1, n[$1]] = $5; by[$1, $2] = $3 }
    END {
        for (k in n) {
            split("", r); split("", c); split("", m2)
            for (i = 1; i <= n[k]; i++) { r[i] = rate[k, i]; c[i] = cpu[k, i]; m2[i] = mem[k, i] }
            printf "%-12s pushes/s %8.0f  CPU µs/push %7.1f  RSS bytes/group %7.0f\n", k, median(r, n[k]), median(c, n[k]), median(m2, n[k])
        }
        m = 0
        for (i = 1; i <= n["ordinary"]; i++) if (("aggregating", i) in by) ratio[++m] = by["aggregating", i] / by["ordinary", i]
        if (m) printf "aggregating/ordinary pushes/s: %.2f\n", median(ratio, m)
        g = 0
        for (i = 1; i <= n["gravel"]; i++) if (("aggregating", i) in by) gr[++g] = by["aggregating", i] / by["gravel", i]
        if (g) printf "aggregating/gravel pushes/s: %.2f\n", median(gr, g)
    }' "$RESULTS"
