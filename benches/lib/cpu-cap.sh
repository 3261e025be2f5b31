# cpu-cap.sh: sourced by the bench scripts. `cap_cpu PID CPUS` puts process PID (all its threads)
# in a cgroup of its own limited to CPUS cores (e.g. 0.5), so that each node of a cluster on one
# host gets the same CPU budget a node on a machine of its own would have. Needs root and the cgroup
# cpu controller (v2 `cpu.max` or v1 `cpu.cfs_quota_us`); `cap_cpu_cleanup` removes the groups.
CAP_CPU_GROUPS=()

cap_cpu() {
    local pid=$1 cpus=$2 quota dir
    quota=$(awk -v c="$cpus" 'BEGIN { printf "%d", c * 100000 }')
    ((quota >= 1000)) || { echo "cap_cpu: CPUS must be at least 0.01, got $cpus" >&2; return 1; }
    if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
        grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null \
            || echo +cpu >/sys/fs/cgroup/cgroup.subtree_control
        dir=/sys/fs/cgroup/pushgate-bench-$pid
        mkdir -p "$dir" && echo "$quota 100000" >"$dir/cpu.max"
    elif [[ -d /sys/fs/cgroup/cpu ]]; then
        dir=/sys/fs/cgroup/cpu/pushgate-bench-$pid
        mkdir -p "$dir" && echo 100000 >"$dir/cpu.cfs_period_us" && echo "$quota" >"$dir/cpu.cfs_quota_us"
    else
        echo "cap_cpu: no cgroup cpu controller at /sys/fs/cgroup" >&2
        return 1
    fi || { echo "cap_cpu: cannot create $dir (root needed)" >&2; return 1; }
    echo "$pid" >"$dir/cgroup.procs"
    CAP_CPU_GROUPS+=("$dir")
}

cap_cpu_cleanup() {
    local dir
    for dir in "${CAP_CPU_GROUPS[@]}"; do
        rmdir "$dir" 2>/dev/null || true
    done
    CAP_CPU_GROUPS=()
}
