//! Node-to-node gRPC (`proto/pushgate/cluster.proto`): the generated service and messages
//! (`pb`), the tonic service a node answers with (`server`), the pooled and batched client calls
//! to peers (`client`, `batch`, `channel`, and the write path's open call, `writes`), mutual TLS on both ends (`tls`), the codec (`codec`) and the conversions between the
//! messages and the store's types (`wire`).

pub mod batch;
pub mod channel;
pub mod client;
pub mod codec;
pub mod limit;
pub mod server;
pub mod tls;
pub mod wire;
pub mod writes;
#[cfg(test)]
mod wire_props;

/// Generated from proto/pushgate/cluster.proto.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/pushgate.cluster.rs"));
}

pub use client::{PEER_CONNECTION_WINDOW, PEER_MAX_FRAME, PEER_STREAM_WINDOW};
pub use pb::cluster_server::ClusterServer;
/// A group state's wire form, for the benches; the generated client, for the test bed's calls
/// from outside the cluster.
#[cfg(feature = "testsuite")]
pub use {
    pb::cluster_client::ClusterClient,
    wire::{group_from_bytes, group_to_bytes},
};
