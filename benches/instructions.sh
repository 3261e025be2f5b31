#!/usr/bin/env bash
# instructions.sh: user-space instructions per push of a pushgate binary, counted by valgrind's
# callgrind. Unlike pushes/s or CPU time, the count barely moves when the machine is busy, so it
# shows the effect of a code change on a noisy shared host (it does not see cache misses or the
# kernel's share: confirm with benches/compare.sh).
#
# The server runs under callgrind with one runtime thread; loadgen first pushes every group once
# and scrapes (not counted), then pushes for DURATION seconds with 4 connections; the instructions executed
# between the two callgrind dumps are divided by the pushes acknowledged in that window.
#
# Usage: benches/instructions.sh [BINARY...]   (default: target/release/pushgate)
# Environment: PUSH_GROUPS [1000]  SERIES [20] per push  DURATION [6] seconds  PORT [19096]
#              LOADGEN_BIN [target/release/loadgen]
#              CACHE_SIM=1: also simulate the caches and report misses per push (deterministic, unlike
#              timings: judges changes to memory locality, e.g. at 10,000 groups). The simulated last
#              level is CACHE_LL [2097152,16,64] (size,ways,line: an L2-sized cache; virtual machines
#              often report a host's L3 of hundreds of MB, which nothing here would miss)
#              KEEP_DIR: keep each binary's callgrind dump of the measured window there, for
#              `callgrind_annotate --inclusive=yes KEEP_DIR/<binary name>.callgrind`
# Needs: valgrind (callgrind_control), jq, curl.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PUSH_GROUPS=${PUSH_GROUPS:-1000}
SERIES=${SERIES:-20}
DURATION=${DURATION:-6}
PORT=${PORT:-19096}
LOADGEN_BIN=${LOADGEN_BIN:-$TARGET_DIR/release/loadgen}
(($# > 0)) || set -- "$TARGET_DIR/release/pushgate"

for tool in valgrind callgrind_control jq curl; do
    command -v "$tool" >/dev/null || { echo "instructions.sh: $tool is required" >&2; exit 1; }
done
[[ -x $LOADGEN_BIN ]] || { echo "instructions.sh: no loadgen at $LOADGEN_BIN" >&2; exit 1; }

WORK=$(mktemp -d -t pushgate-instructions.XXXXXX)
VG_PID=""
# shellcheck source=lib/stop.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/stop.sh"
cleanup() {
    stop_process "$VG_PID" 30
    rm -rf "$WORK"
}
trap cleanup EXIT

url="http://127.0.0.1:$PORT"
for bin in "$@"; do
    cache_sim=()
    [[ -z ${CACHE_SIM:-} ]] || cache_sim=(--cache-sim=yes "--LL=${CACHE_LL:-2097152,16,64}")
    # A kept dump is the second part of the run: with compressed names it would refer to names
    # defined only in the first part, and callgrind_annotate could not attribute anything.
    [[ -z ${KEEP_DIR:-} ]] || cache_sim+=(--compress-strings=no --compress-pos=no)
    TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind "${cache_sim[@]}" --callgrind-out-file="$WORK/cg.%p" \
        "$bin" --web.listen-address="127.0.0.1:$PORT" >"$WORK/server.log" 2>&1 &
    VG_PID=$!
    ready=0
    for _ in $(seq 300); do
        if curl -sf "$url/-/ready" >/dev/null 2>&1; then ready=1; break; fi
        sleep 0.2
    done
    if ((ready == 0)); then
        echo "instructions.sh: $bin did not become ready under valgrind; log:" >&2
        tail -n 20 "$WORK/server.log" >&2
        exit 1
    fi
    "$LOADGEN_BIN" --url "$url" --groups "$PUSH_GROUPS" --series "$SERIES" --warmup --scrape-only --scrapes 1 \
        --connections 4 --timeout 300 --json >/dev/null 2>&1
    callgrind_control --dump=before "$VG_PID" >/dev/null 2>&1
    "$LOADGEN_BIN" --url "$url" --groups "$PUSH_GROUPS" --series "$SERIES" --duration "$DURATION" --scrapes 0 \
        --connections 4 --timeout 300 --json >"$WORK/run.json" 2>/dev/null
    callgrind_control --dump=after "$VG_PID" >/dev/null 2>&1
    # valgrind writes its final output on the way out: give it time before SIGKILL.
    stop_process "$VG_PID" 30
    VG_PID=""
    pushes=$(jq '.push.pushes_ok' "$WORK/run.json")
    # The second dump (suffix .2) holds what ran between the two dump requests.
    dump=$(ls "$WORK"/cg.*.2)
    instructions=$(awk '/^(summary|totals):/ { print $2; exit }' "$dump")
    echo "$bin: $pushes pushes to $PUSH_GROUPS groups, $((instructions / pushes)) instructions per push"
    if [[ -n ${CACHE_SIM:-} ]]; then
        # Events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
        awk -v n="$pushes" '/^events:/ { for (i = 2; i <= NF; i++) name[i] = $i }
            /^(summary|totals):/ { for (i = 2; i <= NF; i++) v[name[i]] = $i; found = 1 }
            END { if (found) printf "  per push: D1 misses %.0f, last-level misses %.1f (reads %.1f, writes %.1f)\n",
                  (v["D1mr"] + v["D1mw"]) / n, (v["DLmr"] + v["DLmw"] + v["ILmr"]) / n, v["DLmr"] / n, v["DLmw"] / n }' "$dump"
    fi
    if [[ -n ${KEEP_DIR:-} ]]; then
        mkdir -p "$KEEP_DIR"
        cp "$dump" "$KEEP_DIR/$(basename "$bin").callgrind"
    fi
    rm -f "$WORK"/cg.*
done
