//! Compiles the vendored Prometheus data model and pushgate's own protobuf files with protox,
//! so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/io/prometheus/client/metrics.proto",
        "proto/pushgate/snapshot.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
