//! Node-to-node gRPC (`proto/pushgate/cluster.proto`): the generated service, the pooled client
//! channels to peers, and the conversions between the wire messages and the store's types.
//!
//! Everything that arrives from a peer is validated like a persistence file or a push body
//! before it reaches the store: a malformed message is answered with an error status, never a
//! panic.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prost::Message;
use tonic::transport::{Channel, Endpoint};

use crate::exposition::names::{is_valid_label_name, NameScheme};
use crate::exposition::{LabelPair, MetricFamily};
use crate::store::family::encode_family_header;
use crate::store::persistence::{decode_group, encode_group_wire, snapshot_proto};
use crate::store::{GroupKey, GroupSnapshot, StoredFamily};

/// Generated from proto/pushgate/cluster.proto.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/pushgate.cluster.rs"));
}

pub use pb::cluster_client::ClusterClient;
pub use pb::cluster_server::{Cluster, ClusterServer};

/// Largest message a node sends or accepts: a group is bounded by the push body limit (at most
/// 1 GiB), a collect chunk by `COLLECT_CHUNK_BYTES` plus one group.
pub const MAX_MESSAGE_BYTES: usize = 1 << 30;
/// Groups are batched into collect chunks of about this size.
pub const COLLECT_CHUNK_BYTES: usize = 1 << 20;

/// Client channels to peers, created on first use and reused (a tonic `Channel` multiplexes
/// calls over one HTTP/2 connection and reconnects by itself).
pub struct PeerClients {
    channels: Mutex<HashMap<SocketAddr, ClusterClient<Channel>>>,
    timeout: Duration,
}

impl PeerClients {
    pub fn new(timeout: Duration) -> Self {
        PeerClients {
            channels: Mutex::new(HashMap::new()),
            timeout,
        }
    }

    /// The deadline of every call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn client(&self, addr: SocketAddr) -> ClusterClient<Channel> {
        let mut channels = self.channels.lock();
        channels
            .entry(addr)
            .or_insert_with(|| {
                let channel = Endpoint::from_shared(format!("http://{addr}"))
                    .expect("a socket address should form a valid URI")
                    .connect_timeout(self.timeout)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(10))
                    .keep_alive_timeout(self.timeout)
                    .connect_lazy();
                ClusterClient::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES)
            })
            .clone()
    }
}

/// A request with the per-call deadline set (sent as `grpc-timeout` too).
pub fn request<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(timeout);
    req
}

pub fn key_to_pb(key: &GroupKey) -> Vec<LabelPair> {
    key.labels()
        .iter()
        .map(|(n, v)| LabelPair {
            name: Some(n.clone()),
            value: Some(v.clone()),
        })
        .collect()
}

/// A grouping key from a peer: label names valid, `job` present and non-empty.
pub fn key_from_pb(pairs: Vec<LabelPair>, names: NameScheme) -> Result<GroupKey, String> {
    if pairs.is_empty() || pairs.len() > 1024 {
        return Err(format!("grouping key with {} labels", pairs.len()));
    }
    let key = GroupKey::new(
        pairs
            .into_iter()
            .map(|lp| (lp.name.unwrap_or_default(), lp.value.unwrap_or_default())),
    );
    if key.get("job").is_none_or(str::is_empty) {
        return Err("grouping key without a job label".into());
    }
    if let Some((n, _)) = key
        .labels()
        .iter()
        .find(|(n, _)| !is_valid_label_name(n, names))
    {
        return Err(format!("grouping key has an invalid label name {n:?}"));
    }
    Ok(key)
}

/// A stored family as an encoded `MetricFamily`: its protobuf metrics are copied as they are.
pub fn family_to_bytes(f: &StoredFamily) -> Vec<u8> {
    let mut buf = Vec::with_capacity(f.proto_metrics().len() + f.name.len() + f.help.len() + 16);
    encode_family_header(&mut buf, &f.name, &f.help, f.typ);
    buf.extend_from_slice(f.proto_metrics());
    buf
}

pub fn families_from_bytes(raw: Vec<Vec<u8>>) -> Result<Vec<MetricFamily>, String> {
    raw.iter()
        .map(|b| MetricFamily::decode(b.as_slice()).map_err(|e| format!("undecodable family: {e}")))
        .collect()
}

pub fn group_to_bytes(g: &GroupSnapshot) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_group_wire(g, &mut buf);
    buf
}

/// A group from a peer, validated like a persistence file's.
pub fn group_from_bytes(raw: &[u8], names: NameScheme) -> Result<GroupSnapshot, String> {
    let g = snapshot_proto::Group::decode(raw).map_err(|e| format!("undecodable group: {e}"))?;
    decode_group(0, g, names)
}

/// Every group and tombstone of a node, in chunks of about `COLLECT_CHUNK_BYTES`.
pub fn collect_chunks(
    groups: &[GroupSnapshot],
    tombstones: Vec<(GroupKey, u64)>,
) -> Vec<pb::CollectChunk> {
    let mut chunks = Vec::new();
    let mut current = pb::CollectChunk::default();
    let mut size = 0usize;
    for g in groups {
        let bytes = group_to_bytes(g);
        size += bytes.len();
        current.groups.push(bytes);
        if size >= COLLECT_CHUNK_BYTES {
            chunks.push(std::mem::take(&mut current));
            size = 0;
        }
    }
    current.tombstones = tombstones
        .into_iter()
        .map(|(k, version)| pb::Tombstone {
            key: key_to_pb(&k),
            version,
        })
        .collect();
    chunks.push(current);
    chunks
}

/// Shared by the server and the gateway: what a collect returned.
pub struct Collected {
    pub groups: Vec<GroupSnapshot>,
    pub tombstones: Vec<(GroupKey, u64)>,
}

/// Decodes collect chunks (on the blocking pool: this re-encodes every family).
pub fn decode_chunks(
    chunks: Vec<pb::CollectChunk>,
    names: NameScheme,
) -> Result<Collected, String> {
    let mut out = Collected {
        groups: Vec::new(),
        tombstones: Vec::new(),
    };
    for c in chunks {
        for g in c.groups {
            out.groups.push(group_from_bytes(&g, names)?);
        }
        for t in c.tombstones {
            out.tombstones.push((key_from_pb(t.key, names)?, t.version));
        }
    }
    Ok(out)
}

/// Keeps `Arc` in scope for callers building requests.
pub type SharedClients = Arc<PeerClients>;
