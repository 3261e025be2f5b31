# port.sh: sourced by the bench scripts.
#
#   free_port   prints a loopback port nothing listens on (connecting to it is refused), taken
#               below the kernel's ephemeral range so that an outgoing connection cannot take it
#               before a server binds it; non-zero when none is found in 100 tries.
EPHEMERAL_LOW=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
free_port() {
    local port span=$((EPHEMERAL_LOW > 12000 ? EPHEMERAL_LOW - 10000 : 20000))
    for _ in $(seq 100); do
        port=$((10000 + RANDOM % span))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    echo "no free loopback port found" >&2
    return 1
}
