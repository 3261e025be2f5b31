#!/usr/bin/env bash
# Builds a container image from a binary on this host, with no registry: a `FROM scratch` image
# holding the binary, the shared libraries `ldd` lists and the loader (scripts/rootfs.sh lays
# them out).
#
#   scripts/build-image.sh [binary] [tag]
#
# defaults: target/release/pushgate if built, else target/debug/pushgate; tag pushgate:local.
# A pushgate binary becomes the repository Dockerfile's `runtime` stage (the image `docker build .`
# makes from source, with this binary: user 65534, /data writable, entrypoint pushgate); the
# container tests build their images here too. Other dynamically linked binaries get a plain
# image running as root with the binary as entrypoint, e.g. for the offline docker-compose
# example:
#   scripts/build-image.sh /usr/sbin/haproxy pushgate-haproxy:local
#   scripts/build-image.sh /usr/bin/prometheus pushgate-prometheus:local
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
"$root_dir/scripts/rootfs.sh" "$bin" "$ctx"
name=$(basename "$bin")
if [ "$name" = pushgate ]; then
  build=(--target runtime -f "$root_dir/Dockerfile")
else
  cat > "$ctx/Dockerfile" <<DOCKERFILE
FROM scratch
COPY data/ /data/
COPY rootfs/ /
WORKDIR /data
ENTRYPOINT ["/usr/local/bin/$name"]
DOCKERFILE
  build=()
fi
# (the legacy builder's deprecation notice is noise here: show stderr only on failure)
docker build -q "${build[@]}" -t "$tag" "$ctx" >/dev/null 2>"$ctx/build.err" \
  || { cat "$ctx/build.err" >&2; exit 1; }
echo "built $tag from $bin ($(du -h "$bin" | cut -f1))"
