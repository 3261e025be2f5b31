//! The entry-load heuristic: whether this node is mostly an entry point for the writes, and so
//! leaves the replicas (and the decoding) of the writes it forwards to their primaries.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::telemetry::metrics as m;

/// Who sends the replicas of a write this node forwards. By default this node does (the primary
/// answers at once; `ForwardedWrite.sender_replicates`): then no forward waits on another call, and
/// forwards and replicas to a peer share calls, which behind a load balancer (every node receiving
/// writes and forwarding to the others) saves calls. But when this node receives far more writes
/// from clients than it applies for other nodes (most of the load enters through it, e.g. the one
/// node clients are configured with), it is the busiest node and the replicas are better sent by
/// the primaries: such writes travel in a queue of their own (`rpc::Peer`). Decided once a second
/// from the last second's counts.
#[derive(Default)]
pub(crate) struct EntryLoad {
    pub(crate) window_start_ms: AtomicU64,
    /// Writes from clients this node routed in the current window.
    pub(crate) received: AtomicU64,
    /// Writes other nodes forwarded to this node in the current window.
    pub(crate) served: AtomicU64,
    /// The last full window was entry-heavy.
    pub(crate) heavy: AtomicBool,
}

impl EntryLoad {
    /// Fewer writes than this a second never make a node entry-heavy (at low load it does not
    /// matter which node sends the replicas).
    const MIN_WRITES: u64 = 64;

    /// Counts a write from a client; whether the primary is to replicate it.
    pub(crate) fn received(&self, now_ms: u64) -> bool {
        self.received.fetch_add(1, Ordering::Relaxed);
        self.roll(now_ms);
        self.heavy.load(Ordering::Relaxed)
    }

    /// Counts a write forwarded to this node.
    pub(crate) fn served(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
    }

    /// Starts a new window once the current one is a second old, deciding from its counts. A
    /// scrape of the node's metrics rolls it too (`ClusterGateway::local_stats`), so a node that
    /// stopped receiving writes is no longer entry-heavy; the window then spans the time since
    /// the last roll, and the writes are counted per second of it.
    pub(crate) fn roll(&self, now_ms: u64) {
        let start = self.window_start_ms.load(Ordering::Relaxed);
        let elapsed = now_ms.saturating_sub(start);
        if elapsed < 1000
            || self
                .window_start_ms
                .compare_exchange(start, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let received = self.received.swap(0, Ordering::Relaxed);
        let served = self.served.swap(0, Ordering::Relaxed);
        // Behind a balancer a node applies about two writes for others for every three it
        // receives (R = 2, three nodes); an entry point for all the load applies none.
        let heavy = received.saturating_mul(1000) >= Self::MIN_WRITES.saturating_mul(elapsed)
            && served.saturating_mul(4) < received;
        if self.heavy.swap(heavy, Ordering::Relaxed) != heavy {
            metrics::gauge!(m::ENTRY_HEAVY).set(if heavy { 1.0 } else { 0.0 });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_entry_heavy_when_it_receives_far_more_writes_than_it_applies_for_others() {
        let load = EntryLoad::default();
        let t0 = 10_000_000;
        assert!(!load.received(t0), "starts light");
        // A second of 200 writes received and none forwarded to it: heavy from the next one.
        for _ in 0..199 {
            load.received(t0 + 500);
        }
        assert!(load.received(t0 + 1500), "entry-heavy");
        // Behind a balancer: 2 applied for others per 3 received.
        for _ in 0..200 {
            load.received(t0 + 2000);
        }
        for _ in 0..130 {
            load.served();
        }
        assert!(!load.received(t0 + 2600), "balanced");
        // Below 64 writes a second, never heavy.
        for _ in 0..40 {
            load.received(t0 + 3000);
        }
        assert!(!load.received(t0 + 3700));
        // Heavy again, then no writes: the next roll (a scrape) finds the node light.
        for _ in 0..200 {
            load.received(t0 + 4000);
        }
        assert!(load.received(t0 + 4800));
        load.roll(t0 + 9000);
        assert!(!load.heavy.load(Ordering::Relaxed), "idle");
        // The first of 100 writes rolls the window; 99 more over the next 3.2 s are fewer than
        // 64 a second.
        for _ in 0..100 {
            load.received(t0 + 10_000);
        }
        load.roll(t0 + 13_200);
        assert!(!load.heavy.load(Ordering::Relaxed), "sparse");
    }
}
