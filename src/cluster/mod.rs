//! The cluster layer: who is in the cluster (`membership`, gossiped with chitchat) and which
//! nodes own a push group (`placement`, rendezvous hashing over the active members).
//!
//! Gossip carries only membership; pushes and scrapes travel between nodes over gRPC.

pub mod batch;
pub mod channel;
pub mod codec;
pub mod gateway;
pub mod membership;
pub mod placement;
pub mod reconcile;
pub mod rpc;

pub use membership::{Member, MemberState, Membership, MembershipConfig, NodeId, Ring};
