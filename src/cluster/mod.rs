//! The cluster layer: pushgate nodes that share the push groups, each group held by R of them.
//!
//! Gossip (chitchat, UDP) carries only membership; writes, replicas and scrapes travel between
//! nodes over gRPC (tonic, TCP).
//!
//! # Modules
//!
//! - [`member`]: a member as the ring sees it (`NodeId`, `MemberState`, `Member`).
//! - [`membership`]: who is in the cluster, gossiped with chitchat; publishes [`Ring`] snapshots,
//!   and holds the protocol version and its skew rule (`PROTOCOL_VERSION`).
//! - [`gossip_key`]: the gossip key file (`--cluster.gossip-key-file`), sealing and opening a
//!   datagram, the reload of the file when it changes.
//! - [`sealed_udp`]: the chitchat transport that seals every gossip datagram with that key and
//!   drops (and counts) what does not open.
//! - [`details`]: what the Cluster page shows of each member beyond the ring (version, counts,
//!   last heartbeat), gossiped and tracked.
//! - [`ring`]: the ring snapshot and rendezvous placement (which nodes own a group).
//! - [`core`]: `ClusterCore`, the state the gateway, the gRPC service and the reconciler share.
//! - [`bounds`]: the bounds the cluster flags set (message size, batch items, scrape bytes).
//! - [`clock`]: the hybrid logical clock that stamps every write's version.
//! - [`health`]: whether the cluster can take writes (`pushgate_cluster_writable`) and the
//!   warning naming the members lost.
//! - `events`: the cluster events that are logged and counted, each from one place.
//! - `write`: `op` (a write and its answer), `route` (to the group's primary), `replicate`
//!   (quorum, copies to the other holders with hedging), `entry_load` (who sends the replicas).
//! - `read`: `collect` (ask the peers for what this node lacks), `merge` (newest version wins),
//!   `answer` (a peer's side of a collect).
//! - [`gateway`]: `ClusterGateway`, the `Gateway` the HTTP layer calls on a cluster node.
//! - [`rpc`]: the gRPC service (`server`), the batched calls to peers (`client`, `batch`,
//!   `channel`), the codec and the message conversions (`wire`), the server's call limit
//!   (`limit`).
//! - [`reconcile`]: rebalancing, hinted handoff, anti-entropy (`rounds`, `sync`), the join pull
//!   and the handover of a leaving node (`handover`).
//!
//! # A push
//!
//! HTTP -> `gateway::ClusterGateway::push` -> `write::route` (decoded and checked here, or, on an
//! entry-heavy node, left to the primary) -> `rpc::client` (batched per peer, on an open `Writes` call) ->
//! `rpc::server` on the primary -> `write::replicate` (stamped by `clock`, applied to the store,
//! copied to the next R-1 nodes in `ring` order; or, when the sender replicates, answered at once
//! and copied by the sender's `write::route`) -> the answer once R nodes hold the write.
//!
//! # A scrape
//!
//! HTTP -> `gateway::ClusterGateway::render_stream` -> `read::collect` (`Collect` to every other
//! member, each answering with `read::answer`: what the caller lacks and it comes first for) ->
//! `read::merge` (newest version of each group, tombstones included) -> rendered and streamed
//! like a single node's scrape.

pub mod bounds;
pub mod clock;
pub mod core;
pub mod details;
pub(crate) mod events;
pub mod gateway;
pub mod gossip_key;
pub mod health;
pub mod member;
pub mod membership;
pub(crate) mod read;
pub mod reconcile;
pub mod ring;
pub mod rpc;
pub mod sealed_udp;
#[cfg(test)]
pub(crate) mod testkit;
pub(crate) mod write;

pub use bounds::ClusterBounds;
pub use core::ClusterCore;
pub use gateway::ClusterGateway;
pub use member::{Member, MemberState};
pub use membership::{Membership, MembershipConfig};
/// For the cluster test bed's placement oracle and the benches.
#[cfg(feature = "testsuite")]
pub use {
    member::NodeId,
    read::{answer::collect_chunks, merge::decode_chunks},
};
pub use ring::Ring;
pub use rpc::server::ClusterService;
