# stop.sh: sourced by the bench scripts.
#
#   stop_process PID [SECONDS]   asks PID to stop (SIGTERM), waits up to SECONDS (default 5) for it
#                                to exit, then kills it (SIGKILL) and reaps it; an empty PID or one
#                                already gone is fine. PID must be a child of the calling shell.
stop_process() {
    local pid=$1 limit=${2:-5} i
    [[ -n $pid ]] || return 0
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < limit * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
