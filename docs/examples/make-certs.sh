#!/bin/sh
# Makes what --cluster.tls-config needs for the examples, with openssl: a CA and, for each NAME, a
# certificate (server and client usage, SANs DNS:NAME and DNS:pushgate), its key and a config
# file NAME.yml that trusts the CA. Usage: make-certs.sh DIR NAME...   (existing files are kept)
#
#   ./make-certs.sh tls pushgate-1 pushgate-2 pushgate-3     # docker-compose.yml
#   ./make-certs.sh tls-k8s node                              # kubernetes/pushgate.yaml
#
# The nodes' addresses are not known in advance here (container and pod IPs), so the configs set
# `server_name: pushgate`: any node certificate of this CA is accepted at any node's address.
# Where the advertised IPs are fixed, put each node's IP in its SANs and drop server_name, so that a
# node cannot answer at another's address (docs/operations.md, "Cluster TLS").
set -eu
dir=$1; shift
mkdir -p "$dir"; cd "$dir"
if [ ! -f ca.pem ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -keyout ca.key -out ca.pem -subj "/CN=pushgate example cluster CA" 2>/dev/null
fi
for name in "$@"; do
  [ -f "$name.pem" ] && continue
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$name.key" -out "$name.csr" -subj "/CN=$name" 2>/dev/null
  printf 'subjectAltName=DNS:%s,DNS:pushgate\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature\n' "$name" > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 365 \
    -out "$name.pem" -extfile "$name.ext" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
  # Readable by the container's user; in production, owned by it and 0600.
  chmod 0644 "$name.key"
  cat > "$name.yml" <<YAML
tls_server_config:
  cert_file: $name.pem
  key_file: $name.key
  client_ca_file: ca.pem
tls_client_config:
  ca_file: ca.pem
  cert_file: $name.pem
  key_file: $name.key
  server_name: pushgate
YAML
done
