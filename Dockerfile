# pushgate's container image: a `FROM scratch` image holding the binary, its shared libraries and
# the loader, running as nobody (65534), with /data writable for --persistence.file.
#
# From source (needs a registry for the Rust image, and BuildKit: Docker 23 and later by default,
# or `docker buildx build`; the legacy builder would build the `runtime` stage too, whose files
# only scripts/build-image.sh provides):
#   docker build -t pushgate .
# From a binary built on this host, offline (no registry; what the tests and the examples use):
#   scripts/build-image.sh [binary] [tag]     # docker build --target runtime on a prepared context
#
# Both fill the same `base` with the files scripts/rootfs.sh lays out: the binary compiled by the
# builder stage, or the one in the build context. The stages are in this order so that the legacy
# builder (which builds every stage before its target) reaches `runtime` without the Rust image.

ARG RUST_IMAGE=docker.io/library/rust:1.86-bookworm

# What both ways share: the user, the ports, the entrypoint.
FROM scratch AS base
USER 65534:65534
# 9091: HTTP (pushes, scrapes, probes); 9094: the cluster's gossip (UDP) and gRPC (TCP).
EXPOSE 9091 9094 9094/udp
ENTRYPOINT ["/usr/local/bin/pushgate"]

# The image from a build context holding scripts/rootfs.sh's output (rootfs/ and data/).
FROM base AS runtime
COPY --chown=65534:65534 data/ /data/
COPY rootfs/ /
WORKDIR /data

# The compiler: the Rust image carries the C toolchain ring, zstd and mimalloc build with.
FROM ${RUST_IMAGE} AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p pushgate --bin pushgate \
 && scripts/rootfs.sh target/release/pushgate /image

# The image from source: the default target.
FROM base AS image
COPY --from=builder --chown=65534:65534 /image/data/ /data/
COPY --from=builder /image/rootfs/ /
WORKDIR /data
