//! A cluster member as the ring sees it: its id, its generation, its gRPC address and where it
//! is in its life.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

/// The name of a node, unique in the cluster: by default its advertised cluster address as a
/// string, e.g. `10.0.0.5:9094`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(Arc<str>);

impl NodeId {
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        NodeId(id.into())
    }

    /// The default id of a node: its advertised gossip address.
    pub fn from_addr(addr: SocketAddr) -> Self {
        NodeId(addr.to_string().into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl From<&str> for NodeId {
    fn from(id: &str) -> Self {
        NodeId::new(id)
    }
}

impl From<String> for NodeId {
    fn from(id: String) -> Self {
        NodeId::new(id)
    }
}

/// Where a member is in its life: only `Active` members own groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemberState {
    /// Gossiping, but not yet holding the groups it owns (loading, pulling its share).
    Joining,
    /// Owns groups and serves them.
    Active,
    /// Handing its groups over before it stops; still serves reads.
    Leaving,
}

impl MemberState {
    /// The string gossiped under `membership::STATE_KEY`.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Joining => "joining",
            MemberState::Active => "active",
            MemberState::Leaving => "leaving",
        }
    }
}

impl fmt::Display for MemberState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state string that is none of `joining`, `active`, `leaving`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown member state {0:?}")]
pub struct UnknownMemberState(pub String);

impl FromStr for MemberState {
    type Err = UnknownMemberState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "joining" => Ok(MemberState::Joining),
            "active" => Ok(MemberState::Active),
            "leaving" => Ok(MemberState::Leaving),
            other => Err(UnknownMemberState(other.to_owned())),
        }
    }
}

/// One live node as the ring sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    /// Distinguishes restarts of the same node id (by default its start time in milliseconds).
    pub generation: u64,
    pub grpc_addr: SocketAddr,
    pub state: MemberState,
}
