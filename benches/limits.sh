#!/usr/bin/env bash
# limits.sh: the nearest limits of this machine, measured with wrk (Debian's, as in issue 6's
# upstream figures) against pushgate (check on) and the upstream Pushgateway (check off), one
# server at a time on a free loopback port:
#   healthy   GET /-/healthy: an HTTP exchange with (almost) no work behind it
#   push-1    PUT of a 1-series body ("x 1") to PUSH_GROUPS groups
#   push-20   PUT of loadgen's 20-series body (a histogram, counters, gauges) to PUSH_GROUPS groups
# For each: requests/s, and the CPU the server and wrk spent per request (server from
# /proc/<pid>/stat, wrk from its rusage). With the two on the same two cores, the throughput
# cannot exceed 2 s of CPU per second divided by their CPU per request: the table prints that
# ceiling too. Every push run follows an unmeasured warmup of the same requests, so the groups
# exist; each run ends after DURATION seconds.
#
# Usage: benches/limits.sh
# Environment: DURATION [5]  PUSH_GROUPS [10000]  CONNECTIONS [32]  UPSTREAM_BIN [/usr/bin/prometheus-pushgateway]
#              PUSHGATE_BIN [target/release/pushgate]  LOADGEN_BIN [target/release/loadgen] (prints the body)
# Needs: wrk, python3, curl.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
DURATION=${DURATION:-5}
PUSH_GROUPS=${PUSH_GROUPS:-10000}
CONNECTIONS=${CONNECTIONS:-32}
UPSTREAM_BIN=${UPSTREAM_BIN:-/usr/bin/prometheus-pushgateway}
PUSHGATE_BIN=${PUSHGATE_BIN:-$TARGET_DIR/release/pushgate}
LOADGEN_BIN=${LOADGEN_BIN:-$TARGET_DIR/release/loadgen}

for tool in wrk python3 curl; do
    command -v "$tool" >/dev/null || { echo "limits.sh: $tool is required" >&2; exit 1; }
done
for bin in "$UPSTREAM_BIN" "$PUSHGATE_BIN" "$LOADGEN_BIN"; do
    [[ -x $bin ]] || { echo "limits.sh: no binary at $bin" >&2; exit 1; }
done

# shellcheck source=lib/stop.sh
source "$ROOT/benches/lib/stop.sh"
# shellcheck source=lib/port.sh
source "$ROOT/benches/lib/port.sh"
WORK=$(mktemp -d -t pushgate-limits.XXXXXX)
PID=""
cleanup() {
    stop_process "$PID"
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$LOADGEN_BIN" --print-body --series 20 >"$WORK/body-20"
printf 'x 1\n' >"$WORK/body-1"
cat >"$WORK/push.lua" <<'LUA'
-- PUT the body of BODY_FILE to PUSH_GROUPS groups in turn: /metrics/job/wrk/instance/i<n>.
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "PUT"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "text/plain; version=0.0.4"
local groups = tonumber(os.getenv("PUSH_GROUPS"))
local n = 0
request = function()
    n = n + 1
    return wrk.format(nil, "/metrics/job/wrk/instance/i" .. (n % groups))
end
LUA

# run_wrk URL SECONDS [LUA BODY]: runs wrk (1 thread), prints "requests/s wrk_cpu_s non_2xx" on
# stdout; the run's output goes to $WORK/wrk.out.
run_wrk() {
    local url=$1 secs=$2 lua=${3:-} body=${4:-}
    BODY_FILE=$body PUSH_GROUPS=$PUSH_GROUPS python3 - "$url" "$secs" "$lua" "$CONNECTIONS" "$WORK/wrk.out" <<'PY'
import re, resource, subprocess, sys
url, secs, lua, conns, out = sys.argv[1:6]
cmd = ["wrk", "-t1", f"-c{conns}", f"-d{secs}s"] + (["-s", lua] if lua else []) + [url]
before = resource.getrusage(resource.RUSAGE_CHILDREN)
text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
after = resource.getrusage(resource.RUSAGE_CHILDREN)
open(out, "w").write(text)
cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
errs = re.search(r"Socket errors:.*", text)
if rate is None:
    sys.exit("wrk printed no rate:\n" + text)
print(rate.group(1), f"{cpu:.4f}", int(bad.group(1)) if bad else 0, "socket-errors" if errs else "")
PY
}

server_ticks() { awk '{ print $14 + $15 }' "/proc/$PID/stat"; }
TICK=$(getconf CLK_TCK)

# measure NAME BIN FLAGS...: the three scenarios against one server, a row each into $WORK/rows.
measure() {
    local name=$1 bin=$2
    shift 2
    local port
    port=$(free_port)
    (cd "$WORK" && exec "$bin" "--web.listen-address=127.0.0.1:$port" "--persistence.file=" "$@") \
        >"$WORK/$name.log" 2>&1 &
    PID=$!
    local url="http://127.0.0.1:$port" ok=0
    for _ in $(seq 150); do
        if curl -sf "$url/-/ready" >/dev/null 2>&1; then ok=1; break; fi
        sleep 0.1
    done
    ((ok)) || { echo "limits.sh: $name did not become ready; log:" >&2; tail -n 20 "$WORK/$name.log" >&2; exit 1; }
    local scenario lua body path t0 t1 result
    for scenario in healthy push-1 push-20; do
        case $scenario in
            healthy) lua="" body="" path="/-/healthy" ;;
            push-1) lua="$WORK/push.lua" body="$WORK/body-1" path="/" ;;
            push-20) lua="$WORK/push.lua" body="$WORK/body-20" path="/" ;;
        esac
        # Warmup: every group pushed before the measured run (and the server's caches warm).
        run_wrk "$url$path" 2 "$lua" "$body" >/dev/null
        t0=$(server_ticks)
        result=$(run_wrk "$url$path" "$DURATION" "$lua" "$body")
        t1=$(server_ticks)
        echo "$name $scenario $result $(((t1 - t0))) $TICK" >>"$WORK/rows"
        echo "limits: $name $scenario: $(head -c 200 <<<"$result")" >&2
    done
    stop_process "$PID"
    PID=""
}

measure pushgate "$PUSHGATE_BIN"
measure upstream "$UPSTREAM_BIN" --push.disable-consistency-check

python3 - "$WORK/rows" "$DURATION" "$(nproc)" <<'PY'
import sys
rows, duration, cores = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
data = {}
for line in open(rows):
    f = line.split()
    name, scenario, rate, wrk_cpu, bad = f[0], f[1], float(f[2]), float(f[3]), int(f[4])
    ticks, tick = int(f[-2]), int(f[-1])
    reqs = rate * duration
    server_us = ticks / tick * 1e6 / reqs
    wrk_us = wrk_cpu * 1e6 / reqs
    data[(name, scenario)] = (rate, server_us, wrk_us, bad)
print(f"wrk -t1 -c32 -d{duration:g}s, pushgate (check on) then upstream (check off), {cores} cores shared by server and wrk.")
print("The ceiling is what the two cores allow at the CPU per request measured: cores / (server + wrk).")
print()
print("| request | server | requests/s | server CPU µs/req | wrk CPU µs/req | ceiling req/s | non-2xx |")
print("|---|---|---:|---:|---:|---:|---:|")
for scenario in ("healthy", "push-1", "push-20"):
    for name in ("pushgate", "upstream"):
        if (name, scenario) not in data:
            continue
        rate, s, w, bad = data[(name, scenario)]
        print(f"| {scenario} | {name} | {rate:,.0f} | {s:.1f} | {w:.1f} | {cores * 1e6 / (s + w):,.0f} | {bad} |")
for scenario in ("healthy", "push-1", "push-20"):
    p, u = data.get(("pushgate", scenario)), data.get(("upstream", scenario))
    if p and u:
        print(f"{scenario}: pushgate / upstream requests/s {p[0] / u[0]:.2f}x, server CPU per request {p[1] / u[1]:.2f}x")
PY
