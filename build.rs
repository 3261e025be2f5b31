//! Compiles the vendored Prometheus data model and pushgate's own protobuf files with protox,
//! so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const METRICS: &str = "proto/io/prometheus/client/metrics.proto";
    const OWN: &[&str] = &["proto/pushgate/snapshot.proto"];
    println!("cargo:rerun-if-changed=proto");

    let model = protox::compile([METRICS], ["proto"])?;
    prost_build::Config::new().compile_fds(model)?;

    // pushgate's own messages refer to the data model generated above.
    let own = protox::compile(OWN, ["proto"])?;
    let mut own_fds = own.clone();
    own_fds.file.retain(|f| {
        f.package.as_deref() != Some("io.prometheus.client")
            && f.package.as_deref() != Some("google.protobuf")
    });
    prost_build::Config::new()
        .extern_path(".io.prometheus.client", "crate::exposition::proto")
        .compile_fds(own_fds)?;
    Ok(())
}
