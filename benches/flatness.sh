#!/usr/bin/env bash
# flatness.sh: push throughput and server CPU per push at a small and a large number of groups,
# for one or more pushgate binaries, runs interleaved (binary A small, binary B small, A large,
# B large, then again) so that a busy moment of a noisy host hits every binary alike.
#
# Each run starts a fresh server, fills every group once (loadgen --warmup, not measured), then
# pushes for DURATION seconds with loadgen's defaults (32 connections, 20-series PUT bodies) and
# reads the server's user and system CPU time from /proc/<pid>/stat around the measured window.
# Prints one line per run, then per binary the medians and the large/small ratio of pushes/s.
#
# Usage: benches/flatness.sh [BINARY...]   (default: target/release/pushgate)
#        An argument may carry server flags after the binary, quoted as one word: e.g.
#        benches/flatness.sh target/release/pushgate "target/release/pushgate --push.disable-consistency-check"
#        compares the consistency check on and off, interleaved.
# Environment: REPS [3]  SMALL [100]  LARGE [10000] groups  DURATION [6] seconds  PORT [19201]
#              LOADGEN_BIN [target/release/loadgen]
# Needs: awk, jq; Linux /proc.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
REPS=${REPS:-3}
SMALL=${SMALL:-100}
LARGE=${LARGE:-10000}
DURATION=${DURATION:-6}
PORT=${PORT:-19201}
LOADGEN_BIN=${LOADGEN_BIN:-$TARGET_DIR/release/loadgen}
(($# > 0)) || set -- "$TARGET_DIR/release/pushgate"
[[ -x $LOADGEN_BIN ]] || { echo "flatness.sh: no loadgen at $LOADGEN_BIN" >&2; exit 1; }
command -v jq >/dev/null || { echo "flatness.sh: jq is required" >&2; exit 1; }
for server in "$@"; do
    read -r bin _ <<<"$server"
    [[ -x $bin ]] || { echo "flatness.sh: $bin is not an executable" >&2; exit 1; }
done

# shellcheck source=lib/rounds.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/rounds.sh"
rounds_setup flatness

url="http://127.0.0.1:$PORT"

# cpu_ticks PID: "user system" clock ticks of the process so far.
cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }

# run BINARY GROUPS: prints "pushes_per_s user_us_per_push sys_us_per_push".
run() {
    local groups=$2 cmd
    read -ra cmd <<<"$1"
    "${cmd[@]}" --web.listen-address="127.0.0.1:$PORT" --persistence.file= >/dev/null 2>&1 &
    SERVER_PID=$!
    "$LOADGEN_BIN" --url "$url" --wait-ready 15 --groups "$groups" --warmup --duration 1 \
        --scrapes 0 --timeout 300 >/dev/null 2>&1
    local before after out ok secs
    before=$(cpu_ticks "$SERVER_PID")
    out=$("$LOADGEN_BIN" --url "$url" --groups "$groups" --duration "$DURATION" --scrapes 0 \
        --timeout 300 --json 2>/dev/null)
    after=$(cpu_ticks "$SERVER_PID")
    stop_process "$SERVER_PID"
    SERVER_PID=""
    ok=$(jq -r '.push.pushes_ok // 0' <<<"$out")
    secs=$(jq -r '.push.seconds // 0' <<<"$out")
    [[ $ok -gt 0 ]] || { echo "flatness.sh: no successful pushes ($1, $groups groups)" >&2; exit 1; }
    awk -v b="$before" -v a="$after" -v n="$ok" -v d="$secs" -v t="$TICKS" 'BEGIN {
        split(b, x, " "); split(a, y, " ");
        printf "%.0f %.2f %.2f\n", n / d, (y[1] - x[1]) * 1e6 / t / n, (y[2] - x[2]) * 1e6 / t / n
    }'
}

printf '%-40s %7s %10s %12s %11s\n' server groups pushes/s "user µs/push" "sys µs/push"
for rep in $(seq "$REPS"); do
    for groups in "$SMALL" "$LARGE"; do
        k=0
        for server in "$@"; do
            k=$((k + 1))
            read -r rate user sys < <(run "$server" "$groups")
            printf '%-40s %7s %10s %12s %11s\n' "$server" "$groups" "$rate" "$user" "$sys"
            echo "$k $groups $rep $rate $user $sys" >>"$RESULTS"
        done
    done
done

echo
echo "medians over $REPS runs; large/small is the median of each round's ratio of pushes/s"
printf '%-40s %14s %14s %16s %16s %12s\n' server "pushes/s $SMALL" "pushes/s $LARGE" "user µs $SMALL" "user µs $LARGE" "large/small"
k=0
for server in "$@"; do
    k=$((k + 1))
    awk -v k="$k" -v name="$server" -v s="$SMALL" -v l="$LARGE" "$MEDIAN_AWK"'
        $1 == k && $2 == s { rs[++ns] = $4; us[ns] = $5; small[$3] = $4 }
        $1 == k && $2 == l { rl[++nl] = $4; ul[nl] = $5; large[$3] = $4 }
        END {
            for (r in small) if (r in large) ratio[++nr] = large[r] / small[r]
            printf "%-40s %14.0f %14.0f %16.2f %16.2f %11.1f%%\n", name, median(rs, ns), median(rl, nl), median(us, ns), median(ul, nl), (median(ratio, nr) - 1) * 100
        }' "$RESULTS"
done
