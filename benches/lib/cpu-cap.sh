# cpu-cap.sh: sourced by the bench scripts, to give a server process the CPU budget it would have
# on a machine (or in a container) of its own, e.g. every node of a 3-node cluster on this host.
#
#   cap_cpu_group CPUS        creates a cgroup limited to CPUS cores (e.g. 0.5); sets CAP_CPU_DIR
#   (cap_cpu_enter; exec server ...) &
#                             the subshell moves itself into CAP_CPU_DIR, then becomes the server:
#                             started inside the group, the server sees the budget as a container
#                             would (Rust's available_parallelism, so tokio's worker count, follows it)
#   cap_cpu_cleanup           removes the groups once their processes are gone
#
# Needs root and the cgroup cpu controller (v2 `cpu.max` or v1 `cpu.cfs_quota_us`).
CAP_CPU_GROUPS=()
CAP_CPU_DIR=""

cap_cpu_group() {
    local cpus=$1 quota
    quota=$(awk -v c="$cpus" 'BEGIN { printf "%d", c * 100000 }')
    ((quota >= 1000)) || { echo "cap_cpu_group: CPUS must be at least 0.01, got $cpus" >&2; return 1; }
    CAP_CPU_DIR=""
    if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
        grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null \
            || echo +cpu >/sys/fs/cgroup/cgroup.subtree_control || true
        CAP_CPU_DIR=$(mktemp -d /sys/fs/cgroup/pushgate-bench.XXXXXX 2>/dev/null) \
            && echo "$quota 100000" >"$CAP_CPU_DIR/cpu.max"
    elif [[ -d /sys/fs/cgroup/cpu ]]; then
        CAP_CPU_DIR=$(mktemp -d /sys/fs/cgroup/cpu/pushgate-bench.XXXXXX 2>/dev/null) \
            && echo 100000 >"$CAP_CPU_DIR/cpu.cfs_period_us" \
            && echo "$quota" >"$CAP_CPU_DIR/cpu.cfs_quota_us"
    else
        echo "cap_cpu_group: no cgroup cpu controller under /sys/fs/cgroup" >&2
        return 1
    fi || { echo "cap_cpu_group: cannot set up a cgroup (root needed)" >&2; return 1; }
    CAP_CPU_GROUPS+=("$CAP_CPU_DIR")
}

cap_cpu_enter() {
    echo "$BASHPID" >"$CAP_CPU_DIR/cgroup.procs"
}

cap_cpu_cleanup() {
    local dir
    for dir in "${CAP_CPU_GROUPS[@]}"; do
        rmdir "$dir" 2>/dev/null || true
    done
    CAP_CPU_GROUPS=()
}
