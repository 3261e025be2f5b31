//! The bounds the cluster flags set on what peers and scrapes may make a node hold, and how
//! many items of one batched call it applies at once.

/// Bounds on what peers and scrapes may make a node hold (the cluster flags).
#[derive(Debug, Clone, Copy)]
pub struct ClusterBounds {
    /// Largest gRPC message sent or accepted (`--cluster.grpc-max-message-bytes`).
    pub max_message_bytes: usize,
    /// Most items in one batched call (`--cluster.max-batch-items`).
    pub max_batch_items: usize,
    /// Most bytes of peers' answers one merged scrape holds (`--cluster.max-scrape-bytes`).
    pub max_scrape_bytes: usize,
}

impl Default for ClusterBounds {
    fn default() -> Self {
        ClusterBounds {
            max_message_bytes: 128 << 20,
            max_batch_items: 1_024,
            max_scrape_bytes: 2 << 30,
        }
    }
}

/// Items of one batched call applied at once: as many as a node builds into one batch
/// (`BatchLimits::default().max_items`), so a peer's batch is applied all at once as before
/// (a forwarded write may wait on its replication, and waves of them could outlast the sender's
/// deadline), while a larger batch from a node with a higher `--cluster.max-batch-items` cannot
/// start more than this many applies at a time.
pub const BATCH_APPLY_CONCURRENCY: usize = 256;
