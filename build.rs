//! Compiles the vendored Prometheus data model and pushgate's own protobuf files with protox,
//! so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const METRICS: &str = "proto/io/prometheus/client/metrics.proto";
    const OWN: &[&str] = &["proto/pushgate/snapshot.proto"];
    // cluster.proto is compiled separately below, with the tonic service generator.
    println!("cargo:rerun-if-changed=proto");

    let model = protox::compile([METRICS], ["proto"])?;
    prost_build::Config::new()
        // A `Metric` holds one value of one kind; boxing the large, rare ones (a histogram with
        // its native-histogram fields, a counter's exemplar) shrinks it from about 500 to about
        // 170 bytes, which every parsed metric is built, moved and dropped at.
        .boxed(".io.prometheus.client.Metric.histogram")
        .boxed(".io.prometheus.client.Metric.summary")
        .boxed(".io.prometheus.client.Counter.exemplar")
        .compile_fds(model)?;

    // pushgate's own messages refer to the data model generated above.
    let own = protox::compile(OWN, ["proto"])?;
    let mut own_fds = own.clone();
    own_fds.file.retain(|f| {
        f.package.as_deref() != Some("io.prometheus.client")
            && f.package.as_deref() != Some("google.protobuf")
    });
    prost_build::Config::new()
        .extern_path(".io.prometheus.client", "crate::exposition::proto")
        // A group state from a peer is decoded from the received buffer: its families are
        // slices of it, not copies.
        .bytes([".pushgate.snapshot.Group.encoded_families"])
        .compile_fds(own_fds)?;

    // The node-to-node gRPC service (tonic), reusing the data model's types.
    let cluster = protox::compile(["proto/pushgate/cluster.proto"], ["proto"])?;
    let mut cluster_fds = cluster.clone();
    cluster_fds
        .file
        .retain(|f| f.package.as_deref() == Some("pushgate.cluster"));
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .extern_path(".io.prometheus.client", "crate::exposition::proto")
        // Families and group states as `Bytes`: a forwarded write is kept for a retry on the
        // next node by a reference-counted clone, and a receiver slices them out of the
        // received message without copying.
        .bytes(".pushgate.cluster.ForwardedWrite.families")
        .bytes(".pushgate.cluster.ForwardedWrite.body")
        .bytes(".pushgate.cluster.ReplicateRequest.group")
        .bytes(".pushgate.cluster.CollectChunk.groups")
        .bytes(".pushgate.cluster.CollectedFamily.members")
        .bytes(".pushgate.cluster.SyncReply.newer_groups")
        // Each message encoded into room reserved at its size (src/cluster/rpc/codec.rs).
        .codec_path("crate::cluster::rpc::codec::PeerCodec")
        .compile_fds(cluster_fds)?;
    Ok(())
}
