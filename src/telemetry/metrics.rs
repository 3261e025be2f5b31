//! Names, types and help texts of the gateway's own metrics, in one place.
//!
//! The `pushgateway_*` names are upstream's, so existing dashboards keep working; cluster and
//! store internals use the `pushgate_*` namespace. Labels stay bounded: never a job or a
//! grouping-key value.

use crate::exposition::MetricType;

pub const HTTP_REQUESTS_TOTAL: &str = "pushgateway_http_requests_total";
pub const HTTP_PUSH_DURATION_SECONDS: &str = "pushgateway_http_push_duration_seconds";
pub const HTTP_PUSH_SIZE_BYTES: &str = "pushgateway_http_push_size_bytes";
pub const BUILD_INFO: &str = "pushgateway_build_info";

pub const GROUPS: &str = "pushgate_groups";
pub const SERIES: &str = "pushgate_series";
pub const STORE_ENCODED_BYTES: &str = "pushgate_store_encoded_bytes";
pub const SCRAPE_RENDER_SECONDS: &str = "pushgate_scrape_render_seconds";
pub const INCONSISTENT_DROPPED_TOTAL: &str = "pushgate_inconsistent_samples_dropped_total";
pub const PERSISTENCE_WRITES_TOTAL: &str = "pushgate_persistence_writes_total";
pub const PERSISTENCE_LAST_WRITE_SECONDS: &str =
    "pushgate_persistence_last_write_timestamp_seconds";
pub const REFUSED_PUSHES_TOTAL: &str = "pushgate_refused_pushes_total";
pub const GROUPS_EXPIRED_TOTAL: &str = "pushgate_groups_expired_total";
pub const HTTP_CONNECTIONS_OPEN: &str = "pushgate_http_connections_open";
pub const HTTP_CONNECTIONS_REFUSED_TOTAL: &str = "pushgate_http_connections_refused_total";
pub const HTTP_CONNECTIONS_CLOSED_TOTAL: &str = "pushgate_http_connections_closed_total";
pub const PUSH_INFLIGHT_BYTES: &str = "pushgate_push_inflight_bytes";
pub const AUTH_CHECKS_REFUSED_TOTAL: &str = "pushgate_auth_checks_refused_total";
pub const AUTH_BCRYPT_CHECKS_TOTAL: &str = "pushgate_auth_bcrypt_checks_total";

pub const CLUSTER_MEMBERS: &str = "pushgate_cluster_members";
pub const CLUSTER_WRITABLE: &str = "pushgate_cluster_writable";
pub const FORWARDED_PUSHES_TOTAL: &str = "pushgate_forwarded_pushes_total";
pub const ENTRY_HEAVY: &str = "pushgate_cluster_entry_heavy";
pub const REPLICATED_WRITES_TOTAL: &str = "pushgate_replicated_writes_total";
pub const PEER_RPC_DURATION_SECONDS: &str = "pushgate_peer_rpc_duration_seconds";
pub const PEER_BATCH_ITEMS: &str = "pushgate_peer_batch_items";
pub const SCRAPE_MERGE_DURATION_SECONDS: &str = "pushgate_scrape_merge_duration_seconds";
pub const COLLECT_FOLLOW_UPS_TOTAL: &str = "pushgate_collect_follow_ups_total";
pub const REBALANCE_GROUPS_TOTAL: &str = "pushgate_rebalance_groups_total";
pub const AGGREGATE_RETRACTED_TOTAL: &str = "pushgate_cluster_aggregate_retracted_total";
pub const HINTS_PENDING: &str = "pushgate_hints_pending";
pub const ANTIENTROPY_REPAIRS_TOTAL: &str = "pushgate_antientropy_repairs_total";
pub const ANTIENTROPY_ROUNDS_TOTAL: &str = "pushgate_antientropy_rounds_total";
pub const CLUSTER_TLS_RELOADS_TOTAL: &str = "pushgate_cluster_tls_reloads_total";
pub const CLUSTER_TLS_HANDSHAKE_FAILURES_TOTAL: &str =
    "pushgate_cluster_tls_handshake_failures_total";
pub const TOMBSTONES: &str = "pushgate_tombstones";
pub const INCOMPATIBLE_PEERS_TOTAL: &str = "pushgate_cluster_incompatible_peers_total";
pub const PEER_REFUSED_TOTAL: &str = "pushgate_cluster_peer_refused_total";
pub const GOSSIP_DROPPED_TOTAL: &str = "pushgate_cluster_gossip_dropped_total";
pub const GOSSIP_KEY_RELOADS_TOTAL: &str = "pushgate_cluster_gossip_key_reloads_total";
pub const TOMBSTONE_BYTES: &str = "pushgate_tombstone_bytes";
pub const CLUSTER_REFUSED_TOTAL: &str = "pushgate_cluster_refused_total";
pub const HINTS_OLDEST_AGE_SECONDS: &str = "pushgate_hints_oldest_age_seconds";
pub const CLUSTER_NODE_INFO: &str = "pushgate_cluster_node_info";
pub const RING_CHANGES_TOTAL: &str = "pushgate_cluster_ring_changes_total";
pub const MEMBERS_LOST_TOTAL: &str = "pushgate_cluster_members_lost_total";
pub const MEMBERS_RETURNED_TOTAL: &str = "pushgate_cluster_members_returned_total";
pub const COLLECT_CALLS_TOTAL: &str = "pushgate_collect_calls_total";
pub const PEER_CALL_DURATION_SECONDS: &str = "pushgate_peer_call_duration_seconds";

/// Every self-metric family: name, type, help.
pub const SELF_FAMILIES: &[(&str, MetricType, &str)] = &[
    (HTTP_REQUESTS_TOTAL, MetricType::Counter, "Total HTTP requests processed by the Pushgateway, excluding scrapes."),
    (HTTP_PUSH_DURATION_SECONDS, MetricType::Summary, "HTTP request duration for pushes to the Pushgateway."),
    (HTTP_PUSH_SIZE_BYTES, MetricType::Summary, "HTTP request size for pushes to the Pushgateway."),
    (BUILD_INFO, MetricType::Gauge, "A metric with a constant '1' value labeled by version, revision, branch, and goversion from which pushgateway was built."),
    (GROUPS, MetricType::Gauge, "Push groups held by this node."),
    (SERIES, MetricType::Gauge, "Metrics (label sets) held by this node, push timing metrics included."),
    (
        STORE_ENCODED_BYTES,
        MetricType::Gauge,
        "Bytes held by the encodings of the stored metric families (text, protobuf, sort keys, series identities).",
    ),
    (SCRAPE_RENDER_SECONDS, MetricType::Summary, "Time to render the pushed metrics for one scrape."),
    (INCONSISTENT_DROPPED_TOTAL, MetricType::Counter, "Stored samples left out of a scrape because their type or series conflicted with another group (possible only with the consistency check disabled)."),
    (PERSISTENCE_WRITES_TOTAL, MetricType::Counter, "Snapshots written to the persistence file, by result."),
    (PERSISTENCE_LAST_WRITE_SECONDS, MetricType::Gauge, "Unix time of the last successful persistence write."),
    (GROUPS_EXPIRED_TOTAL, MetricType::Counter, "Groups removed by this node because their TTL (--push.group-ttl, Pushgate-Group-TTL) ran out since their last successful push."),
    (REFUSED_PUSHES_TOTAL, MetricType::Counter, "Pushes refused, by reason (invalid, limit, unavailable, busy: the bytes of pushes in flight were at --push.max-inflight-bytes)."),
    (HTTP_CONNECTIONS_OPEN, MetricType::Gauge, "Client connections open on the HTTP listeners."),
    (HTTP_CONNECTIONS_REFUSED_TOTAL, MetricType::Counter, "Client connections closed as soon as accepted, by reason (limit: --web.max-connections were open; accept_error: the accept call failed, e.g. out of file descriptors)."),
    (HTTP_CONNECTIONS_CLOSED_TOTAL, MetricType::Counter, "Client connections closed by the server's timeouts, by reason (no_request: no complete request within --web.read-header-timeout of the connection's start; idle: nothing sent or received for --web.idle-timeout)."),
    (PUSH_INFLIGHT_BYTES, MetricType::Gauge, "Bytes of push bodies held now (read, decompressed, waiting to be decoded), at most --push.max-inflight-bytes."),
    (AUTH_CHECKS_REFUSED_TOTAL, MetricType::Counter, "Basic-auth password checks refused without running bcrypt, by reason (queue_full: --web.auth.max-pending checks were pending, answered 503; client_limit: the client's address had --web.auth.max-pending-per-client pending, answered 429)."),
    (AUTH_BCRYPT_CHECKS_TOTAL, MetricType::Counter, "Basic-auth password checks that ran bcrypt (neither answered from the cache of successful logins nor refused by the queue's limits): each costs a core tens of milliseconds."),
    (CLUSTER_MEMBERS, MetricType::Gauge, "Live cluster members in this node's ring, by state (joining, active, leaving)."),
    (CLUSTER_WRITABLE, MetricType::Gauge, "1 while this node's ring has an active member and at least --cluster.write-quorum live members (the replication factor unless lowered), so a push can reach the holders it needs; 0 while pushes are refused with 503 for want of nodes."),
    (FORWARDED_PUSHES_TOTAL, MetricType::Counter, "Writes (pushes, deletes) forwarded to a group's primary on another node, by peer (its node id) and result (success, error)."),
    (ENTRY_HEAVY, MetricType::Gauge, "1 while this node receives far more writes from clients than it applies for other nodes (at least 64 a second received, fewer than a quarter as many applied for others; decided each second with writes, and by every scrape of these metrics), e.g. the one node clients are configured with: it then leaves the decoding and the replicas of the writes it forwards to their primaries. 0 otherwise."),
    (REPLICATED_WRITES_TOTAL, MetricType::Counter, "Group states sent to replicas after a write, by peer (the holder's node id; local: this node's own copy) and result (success, error); hedged counts the extra sends to the next node made when a replica had not answered within half the peer timeout."),
    (PEER_RPC_DURATION_SECONDS, MetricType::Summary, "Duration of gRPC calls to other cluster nodes, by rpc."),
    (PEER_BATCH_ITEMS, MetricType::Summary, "Items carried by one batched call to another cluster node, by call: forward (forwarded writes, and the replicas for that node sent with them), replicate (replicas only). Writes and replicas for a node made while a call to it is in flight queue and travel together."),
    (SCRAPE_MERGE_DURATION_SECONDS, MetricType::Summary, "Time to collect and merge every member's groups for one scrape."),
    (COLLECT_FOLLOW_UPS_TOTAL, MetricType::Counter, "Second collect calls of merged scrapes: a peer left groups to another owner that did not deliver them (it failed, or ranks the owners differently), and was asked for them again."),
    (REBALANCE_GROUPS_TOTAL, MetricType::Counter, "Groups (and tombstones) this node held without owning them, by what became of them: handed_off (acknowledged by every owner, then dropped here), error (a transfer failed; retried next round), expired (a tombstone or hint past its lifetime)."),
    (AGGREGATE_RETRACTED_TOTAL, MetricType::Counter, "Aggregating pushes this node added as their group's primary and took back because fewer than the write quorum of nodes took them: each was answered 503 and does not count."),
    (HINTS_PENDING, MetricType::Gauge, "Groups and tombstones held by this node that it does not own (stand-in copies and copies left by a ring change), waiting to be handed to their owners."),
    (ANTIENTROPY_REPAIRS_TOTAL, MetricType::Counter, "Group states repaired by anti-entropy, by direction (sent: a co-owner lacked this node's newer state; received: this node took a newer one)."),
    (ANTIENTROPY_ROUNDS_TOTAL, MetricType::Counter, "Reconciliation rounds (handoff and anti-entropy) run by this node, by result (complete, partial: some peer could not be reached)."),
    (CLUSTER_TLS_RELOADS_TOTAL, MetricType::Counter, "Re-reads of the --cluster.tls-config files after they changed, by result (success; failure: the old certificates stay in force)."),
    (CLUSTER_TLS_HANDSHAKE_FAILURES_TOTAL, MetricType::Counter, "Node-to-node TLS handshakes that failed, by side (server: a caller without a valid certificate was refused; client: a peer's certificate was refused or unreachable)."),
    (TOMBSTONES, MetricType::Gauge, "Tombstones (deleted groups remembered so an older copy cannot bring them back) held by this node."),
    (INCOMPATIBLE_PEERS_TOTAL, MetricType::Counter, "Gossiping peers not placed on the ring because their cluster protocol version is more than one away from this node's (or missing); each counted once."),
    (PEER_REFUSED_TOTAL, MetricType::Counter, "Messages or items from other cluster nodes refused unapplied, by reason: future_version (a version, tombstone or wipe dated beyond --cluster.max-clock-skew), invalid_family (a family that would not render as valid exposition), malformed (a group, grouping key or family layout that does not decode or check)."),
    (GOSSIP_DROPPED_TOTAL, MetricType::Counter, "Gossip datagrams dropped with --cluster.gossip-key-file set, by reason: received ones that do not open (unsealed: sent by a node without the gossip key; unopened: sealed with another key or for another cluster name, or altered; garbage: neither), and this node's own not sent (oversize: too large for a UDP datagram once sealed)."),
    (GOSSIP_KEY_RELOADS_TOTAL, MetricType::Counter, "Changes of the gossip key file seen by this node, by result (success: the new keys are in use; error: the file could not be read or parsed, the previous keys stay in use)."),
    (TOMBSTONE_BYTES, MetricType::Gauge, "Bytes the keys of the tombstones held by this node take, about."),
    (CLUSTER_REFUSED_TOTAL, MetricType::Counter, "What the cluster plane refused to bound its resources, by reason: concurrency (a peer's call over --cluster.grpc-max-concurrency), batch_items (a batched call over --cluster.max-batch-items), hints (a stand-in copy over --cluster.max-hints), scrape_bytes (a merged scrape over --cluster.max-scrape-bytes), tombstones (a tombstone for a group not held, over --cluster.max-tombstones or --cluster.max-tombstone-bytes), message_bytes (a peer's message over --cluster.grpc-max-message-bytes), timeout (a peer's call dropped unfinished: over --cluster.grpc-timeout, or its caller went away)."),
    ("process_cpu_seconds_total", MetricType::Counter, "Total user and system CPU time spent in seconds."),
    ("process_max_fds", MetricType::Gauge, "Maximum number of open file descriptors."),
    ("process_open_fds", MetricType::Gauge, "Number of open file descriptors."),
    ("process_resident_memory_bytes", MetricType::Gauge, "Resident memory size in bytes."),
    ("process_start_time_seconds", MetricType::Gauge, "Start time of the process since unix epoch in seconds."),
    ("process_virtual_memory_bytes", MetricType::Gauge, "Virtual memory size in bytes."),
    ("process_virtual_memory_max_bytes", MetricType::Gauge, "Maximum amount of virtual memory available in bytes."),
    (HINTS_OLDEST_AGE_SECONDS, MetricType::Gauge, "How long the oldest group or tombstone this node holds without owning it (pushgate_hints_pending) has been held so, as of the last reconciliation round; 0 with none. Growing past a few anti-entropy intervals: an owner does not take its copies (down, unreachable, or refusing)."),
    (CLUSTER_NODE_INFO, MetricType::Gauge, "A constant 1 labelled with this node's cluster id (node) and pushgate version: joins the per-node series of a scrape (instance) to the node ids other nodes' metrics name in their peer label."),
    (RING_CHANGES_TOTAL, MetricType::Counter, "Changes of this node's ring: members joined, left or lost, or changed state (joining, active, leaving)."),
    (MEMBERS_LOST_TOTAL, MetricType::Counter, "Members that left this node's ring without gossiping that they were leaving (crashed, killed, cut off); each is also logged as a warning naming it."),
    (MEMBERS_RETURNED_TOTAL, MetricType::Counter, "Members lost earlier that are back in this node's ring; each is also logged naming it."),
    (COLLECT_CALLS_TOTAL, MetricType::Counter, "Collect calls of merged scrapes to other nodes, by peer (node id) and result (success; error: failed or past the deadline, its groups came from their other owners)."),
    (PEER_CALL_DURATION_SECONDS, MetricType::Summary, "Time from a request to another node to its answer as this node waited for it, batching included, by peer (node id) and call (forward: a write sent to its primary; replicate: a replica sent to a holder; collect: a merged scrape's collect call)."),
];

/// Quantiles exposed for summaries (upstream's objectives).
pub const SUMMARY_QUANTILES: &[f64] = &[0.1, 0.5, 0.9];

pub fn lookup(name: &str) -> Option<(MetricType, &'static str)> {
    SELF_FAMILIES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, t, h)| (*t, *h))
}
