//! Node-to-node gRPC (`proto/pushgate/cluster.proto`): the generated service and messages
//! (`pb`), the tonic service a node answers with (`server`), the pooled and batched client calls
//! to peers (`client`, `batch`, `channel`), the codec (`codec`) and the conversions between the
//! messages and the store's types (`wire`).

pub mod batch;
pub mod channel;
pub mod client;
pub mod codec;
pub mod limit;
pub mod server;
pub mod wire;

/// Generated from proto/pushgate/cluster.proto.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/pushgate.cluster.rs"));
}

pub use client::{PeerClients, PEER_CONNECTION_WINDOW, PEER_MAX_FRAME, PEER_STREAM_WINDOW};
pub use pb::cluster_client::ClusterClient;
pub use pb::cluster_server::{Cluster, ClusterServer};
pub use wire::{group_from_bytes, group_to_bytes};
