#!/usr/bin/env bash
# Builds a container image from a binary on this host, with no registry: a `FROM scratch` image
# holding the binary, the shared libraries `ldd` lists and the loader (the same recipe the
# container test bed uses, cluster-tests/src/testbed.rs).
#
#   scripts/build-image.sh [binary] [tag]
#
# defaults: target/release/pushgate if built, else target/debug/pushgate; tag pushgate:local.
# Works for other dynamically linked binaries too, e.g. the offline docker-compose example:
#   scripts/build-image.sh /usr/sbin/haproxy pushgate-haproxy:local
#   scripts/build-image.sh /usr/bin/prometheus pushgate-prometheus:local
# The binary lands in /usr/local/bin (on the default PATH) and is the entrypoint; /data and /tmp
# exist and are writable.
set -euo pipefail
root_dir=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-}
if [ -z "$bin" ]; then
  bin=$root_dir/target/release/pushgate
  [ -x "$bin" ] || bin=$root_dir/target/debug/pushgate
fi
tag=${2:-pushgate:local}
[ -x "$bin" ] || { echo "no executable at $bin (cargo build first)" >&2; exit 1; }

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/data" "$ctx/rootfs/tmp" "$ctx/rootfs/etc"
chmod 1777 "$ctx/rootfs/tmp"
echo 'hosts: files dns' > "$ctx/rootfs/etc/nsswitch.conf"
echo 'root:x:0:0:root:/data:/nonexistent' > "$ctx/rootfs/etc/passwd"
echo 'root:x:0:' > "$ctx/rootfs/etc/group"
name=$(basename "$bin")
mkdir -p "$ctx/rootfs/usr/local/bin"
cp -L "$bin" "$ctx/rootfs/usr/local/bin/$name"
ldd "$bin" | awk '/=> \// {print $3} /^[ \t]*\// {print $1}' | while read -r lib; do
  mkdir -p "$ctx/rootfs$(dirname "$lib")"
  cp -L "$lib" "$ctx/rootfs$lib"
done
cat > "$ctx/Dockerfile" <<DOCKERFILE
FROM scratch
COPY rootfs/ /
WORKDIR /data
ENTRYPOINT ["/usr/local/bin/$name"]
DOCKERFILE
# (the legacy builder's deprecation notice is noise here: show stderr only on failure)
docker build -q -t "$tag" "$ctx" >/dev/null 2>"$ctx/build.err" || { cat "$ctx/build.err" >&2; exit 1; }
echo "built $tag from $bin ($(du -h "$bin" | cut -f1))"
