#!/usr/bin/env bash
# Starts a 3-node pushgate cluster on 127.0.0.1: HTTP on 9191-9193, gossip+gRPC on 9391-9393.
# Ctrl-C stops all three. PUSHGATE_BIN overrides the binary (default target/debug/pushgate).
set -euo pipefail
BIN=${PUSHGATE_BIN:-$(dirname "$0")/../target/debug/pushgate}
PEERS=(--cluster.peer=127.0.0.1:9391 --cluster.peer=127.0.0.1:9392 --cluster.peer=127.0.0.1:9393)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
for i in 1 2 3; do
  "$BIN" --web.listen-address=127.0.0.1:919$i --cluster.listen-address=127.0.0.1:939$i \
    "${PEERS[@]}" --web.enable-admin-api "$@" &
  pids+=($!)
done
echo "pushgate nodes: http://127.0.0.1:9191 http://127.0.0.1:9192 http://127.0.0.1:9193"
echo "try: echo 'demo 1' | curl --data-binary @- http://127.0.0.1:9192/metrics/job/demo && curl -s http://127.0.0.1:9193/metrics | grep demo"
wait
