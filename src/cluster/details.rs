//! What the Cluster page shows of each member beyond its place on the ring: the version it
//! runs, how many groups it holds and owns as primary, its hints, and when this node last heard
//! its heartbeat.
//!
//! Each node gossips its version once (at start) and its counts under one small key, refreshed
//! by the node at most every few seconds and only when they change, so gossip stays small. A
//! peer's values are untrusted: a value that does not parse is shown as unknown, and a version
//! string is cut to [`MAX_VERSION_LEN`] bytes. When a heartbeat was last heard is this node's
//! own observation (chitchat bumps a node's heartbeat every gossip round), read by a task every
//! gossip interval; no clock of the peer's is involved.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use chitchat::ChitchatHandle;

use super::member::NodeId;

/// Chitchat key holding the pushgate version the node runs.
pub const VERSION_KEY: &str = "version";
/// Chitchat key holding the node's counts: `groups primary hints`, space separated.
pub const STATS_KEY: &str = "stats";
/// A gossiped version longer than this is cut (peers are untrusted; the page shows it).
pub const MAX_VERSION_LEN: usize = 64;

/// The counts a node gossips about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeStats {
    /// Groups in its store (owned or held as hints).
    pub groups: u64,
    /// Groups it is the primary owner of, as of its last reconciliation round.
    pub primary: u64,
    /// Groups it holds without owning them.
    pub hints: u64,
}

impl NodeStats {
    pub fn encode(&self) -> String {
        format!("{} {} {}", self.groups, self.primary, self.hints)
    }

    /// `None` unless exactly three unsigned integers.
    pub fn decode(s: &str) -> Option<NodeStats> {
        let mut it = s.split(' ').map(|v| v.parse::<u64>().ok());
        let stats = NodeStats {
            groups: it.next()??,
            primary: it.next()??,
            hints: it.next()??,
        };
        it.next().is_none().then_some(stats)
    }
}

/// One live member's details as this node knows them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberDetail {
    pub version: Option<String>,
    pub stats: Option<NodeStats>,
    /// When this node last saw the member's heartbeat move (now, for itself).
    pub heartbeat_at: Option<Instant>,
    heartbeat: u64,
}

/// The details of every live member, replaced whole by the tracking task.
pub type MemberDetails = Arc<ArcSwap<BTreeMap<NodeId, MemberDetail>>>;

/// A gossiped version as shown: cut to [`MAX_VERSION_LEN`] bytes at a character boundary.
fn bounded_version(v: &str) -> String {
    let mut end = v.len().min(MAX_VERSION_LEN);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    v[..end].to_owned()
}

/// Reads every live node's details from chitchat each `every` until the membership is gone.
pub(super) async fn track(
    chitchat: Weak<ChitchatHandle>,
    self_id: NodeId,
    every: Duration,
    details: MemberDetails,
) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(handle) = chitchat.upgrade() else {
            return;
        };
        let previous = details.load_full();
        let now = Instant::now();
        let next = handle
            .with_chitchat(|c| {
                let live: Vec<_> = c.live_nodes().cloned().collect();
                let mut next = BTreeMap::new();
                for id in live {
                    let Some(state) = c.node_state(&id) else {
                        continue;
                    };
                    let node = NodeId::new(id.node_id.clone());
                    let heartbeat = u64::from(state.heartbeat());
                    let before = previous.get(&node);
                    let heartbeat_at = if node == self_id
                        || before.is_none_or(|b| b.heartbeat != heartbeat)
                    {
                        Some(now)
                    } else {
                        before.and_then(|b| b.heartbeat_at)
                    };
                    let detail = MemberDetail {
                        version: state.get(VERSION_KEY).map(bounded_version),
                        stats: state.get(STATS_KEY).and_then(NodeStats::decode),
                        heartbeat_at,
                        heartbeat,
                    };
                    next.insert(node, detail);
                }
                next
            })
            .await;
        drop(handle);
        details.store(Arc::new(next));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_round_trip_and_refuse_malformed_values() {
        let s = NodeStats {
            groups: 12,
            primary: 5,
            hints: 1,
        };
        assert_eq!(NodeStats::decode(&s.encode()), Some(s));
        for bad in ["", "1 2", "1 2 3 4", "-1 2 3", "a b c", "1  2 3", "99999999999999999999 1 1"] {
            assert_eq!(NodeStats::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_long_version_is_cut_at_a_character_boundary() {
        let long = "é".repeat(100);
        let cut = bounded_version(&long);
        assert!(cut.len() <= MAX_VERSION_LEN);
        assert!(long.starts_with(&cut));
        assert_eq!(bounded_version("0.1.0"), "0.1.0");
    }
}
