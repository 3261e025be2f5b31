# cluster_tls_files DIR NODES: makes a CA and, for nodes 1..NODES, a certificate for 127.0.0.1 and
# a --cluster.tls-config file DIR/nodeN.yml (openssl), and a --cluster.gossip-key-file
# DIR/gossip.keys, for benchmarks of a secured cluster (mutual TLS and sealed gossip).
cluster_tls_files() {
    local dir=$1 nodes=$2 i
    mkdir -p "$dir"
    head -c 32 /dev/urandom | base64 >"$dir/gossip.keys"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -keyout "$dir/ca.key" -out "$dir/ca.pem" -subj "/CN=bench CA" 2>/dev/null
    for i in $(seq 1 "$nodes"); do
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -keyout "$dir/node$i.key" -out "$dir/node$i.csr" -subj "/CN=node$i" 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' >"$dir/node$i.ext"
        openssl x509 -req -in "$dir/node$i.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
            -CAcreateserial -days 30 -out "$dir/node$i.pem" -extfile "$dir/node$i.ext" 2>/dev/null
        cat >"$dir/node$i.yml" <<YAML
tls_server_config: {cert_file: node$i.pem, key_file: node$i.key, client_ca_file: ca.pem}
tls_client_config: {ca_file: ca.pem, cert_file: node$i.pem, key_file: node$i.key}
YAML
    done
}
