#!/usr/bin/env sh
# Lays out what a `FROM scratch` image of a dynamically linked binary needs, in DIR:
#   DIR/rootfs/  the binary as /usr/local/bin/<name>, the shared libraries `ldd` lists and the
#                loader (at the paths ldd prints), /etc/nsswitch.conf (so the libc resolver
#                reads /etc/hosts, then DNS), /etc/passwd and /etc/group (root and nobody,
#                65534), /tmp (1777);
#   DIR/data/    empty: the Dockerfile copies it to /data owned by 65534, the user the image
#                runs as, so --persistence.file=/data/... is writable without a volume too.
# The Dockerfile's builder stage runs it on the binary it compiled, scripts/build-image.sh on a
# binary built on this host (the container tests' images come from there), so both images hold
# the same files.
#
#   scripts/rootfs.sh BINARY DIR
set -eu
bin=$1
dir=$2
[ -x "$bin" ] || { echo "rootfs.sh: no executable at $bin" >&2; exit 1; }
root=$dir/rootfs
mkdir -p "$root/usr/local/bin" "$root/etc" "$root/tmp" "$dir/data"
chmod 1777 "$root/tmp"
echo 'hosts: files dns' > "$root/etc/nsswitch.conf"
printf 'root:x:0:0:root:/root:/nonexistent\nnobody:x:65534:65534:nobody:/data:/nonexistent\n' \
  > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
cp -L "$bin" "$root/usr/local/bin/$(basename "$bin")"
# `ldd` prints "name => /path (addr)" for libraries and "/path (addr)" for the loader;
# cp -L copies a symlinked library's bytes under the name the binary asks for.
ldd "$bin" | awk '/=> \// {print $3} /^[ \t]*\// {print $1}' | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
