//! What the status pages read about the cluster, as plain values: the HTTP layer renders them
//! without knowing the cluster's types (`http` and `cluster` are siblings), and the cluster
//! fills them from its ring, membership and store.

use std::time::Duration;

/// The cluster as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// This node's id.
    pub self_id: String,
    pub replication_factor: usize,
    /// Nodes that must hold a write before it is acknowledged.
    pub write_quorum: usize,
    /// Live members, sorted by id.
    pub members: Vec<MemberView>,
}

/// One live member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub id: String,
    /// `joining`, `active` or `leaving`.
    pub state: &'static str,
    /// Its gRPC address (node-to-node plane).
    pub address: String,
    /// Distinguishes restarts of the same node id.
    pub generation: u64,
    /// What it gossips; `None` until known (or from a peer that does not say).
    pub version: Option<String>,
    pub groups: Option<u64>,
    pub primary: Option<u64>,
    pub hints: Option<u64>,
    /// Time since this node last heard its heartbeat (zero for itself).
    pub heartbeat_age: Option<Duration>,
}

/// Which nodes own a group: the ids of its active owners, primary first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owners {
    pub nodes: Vec<String>,
    /// Fewer active members than the replication factor: fewer owners than copies wanted.
    pub short: bool,
}
