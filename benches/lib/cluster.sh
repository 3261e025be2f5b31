# cluster.sh: sourced by the bench scripts that start pushgate nodes on loopback (needs cpu-cap.sh
# sourced first).
#
#   cluster_start BIN BASE NODES LOGDIR   starts NODES nodes of BIN: node i (1..NODES) serves HTTP
#                                         on 127.0.0.1:BASE+i and, with more than one node, the
#                                         cluster on 127.0.0.1:BASE+100+i (its node id), every node
#                                         a peer of the others; each in a cgroup of NODE_CPUS cores
#                                         when NODE_CPUS is set. Logs to LOGDIR/node<i>.log; appends
#                                         the pids to CLUSTER_PIDS. With CLUSTER_TLS_DIR set (files
#                                         made by cluster-tls.sh), every node runs with mutual TLS
#                                         and a gossip key.
#   cluster_wait BASE NODES               waits up to 60 s until every node is ready and (with more
#                                         than one) sees NODES active members; non-zero if not.
CLUSTER_PIDS=()

cluster_start() {
    local bin=$1 base=$2 nodes=$3 logdir=$4 i
    local peers=() cluster=()
    if ((nodes > 1)); then
        for i in $(seq 1 "$nodes"); do peers+=("--cluster.peer=127.0.0.1:$((base + 100 + i))"); done
    fi
    for i in $(seq 1 "$nodes"); do
        cluster=()
        ((nodes > 1)) && cluster=("--cluster.listen-address=127.0.0.1:$((base + 100 + i))" "${peers[@]}")
        ((nodes > 1)) && [[ -n ${CLUSTER_TLS_DIR:-} ]] &&
            cluster+=("--cluster.tls-config=$CLUSTER_TLS_DIR/node$i.yml"
                "--cluster.gossip-key-file=$CLUSTER_TLS_DIR/gossip.keys")
        [[ -z ${NODE_CPUS:-} ]] || cap_cpu_group "$NODE_CPUS"
        (
            [[ -z ${NODE_CPUS:-} ]] || cap_cpu_enter
            exec "$bin" "--web.listen-address=127.0.0.1:$((base + i))" "--persistence.file=" "${cluster[@]}"
        ) >"$logdir/node$i.log" 2>&1 &
        CLUSTER_PIDS+=($!)
    done
}

cluster_wait() {
    local base=$1 nodes=$2 ok i
    for _ in $(seq 300); do
        ok=1
        for i in $(seq 1 "$nodes"); do
            curl -sf "http://127.0.0.1:$((base + i))/-/ready" >/dev/null 2>&1 || ok=0
            if ((nodes > 1)); then
                curl -sf "http://127.0.0.1:$((base + i))/metrics" 2>/dev/null |
                    grep -q "pushgate_cluster_members{state=\"active\"} $nodes" || ok=0
            fi
        done
        ((ok)) && return 0
        sleep 0.2
    done
    return 1
}
