//! pushgate: a drop-in, wire-compatible Prometheus Pushgateway that runs as one node or a cluster.
//!
//! # Layout
//!
//! Lowest layer first; a module uses only those listed before it (`ingest` and `scrape`, and
//! `cluster` and `http`, are siblings that do not use each other):
//!
//! - `time`: wall-clock readings and Go durations, for every layer.
//! - `exposition`: the wire formats: text format parse and encode, delimited protobuf, names.
//! - `store`: the groups of one node: prepare and check a push, apply it, the versioned replica
//!   API, the family layout, the persistence file, the local render and its cache.
//! - `telemetry`: the gateway's own metrics (recorder, process metrics), logging.
//! - `ingest`: a push between HTTP and the store: body reading, decompression, decoding
//!   (`ingest::body`), the `PushRequest` and when its work leaves the runtime.
//! - `scrape`: the merged render of groups from several nodes, the streamed response.
//! - `tls`: the TLS settings both `http` and `cluster` use: one `tls_server_config` builder,
//!   the node-to-node `tls_client_config`, the cluster's reloading mutual-TLS config.
//! - `gateway`: the `Gateway` trait the HTTP layer talks to, and the single node's gateway.
//! - `cluster`: membership (gossip), placement, the cluster gateway, peer gRPC, reconciliation.
//! - `http`: the routes and handlers, the server, the web config (TLS, auth).
//! - `config`: the flags (one table, also listed by `/api/v1/status`).
//! - `node`: builds and runs a node: store, single node or cluster, persistence loop, readiness.
//! - `migrate` (beside `node`): `pushgate import`, groups taken over from an upstream
//!   Pushgateway (its API or its file) into a node or cluster.
//! - `testsupport` (feature `testsuite`): helpers for the integration tests and the benches.
//!
//! A push: `http` -> `ingest` (decode) -> `store::prepare` (prepare, check) -> `store`; on a
//! cluster node, `cluster` placement -> gRPC forward to the group's primary and replicate to
//! its co-owners -> `store` on each.
//!
//! A scrape: `http` <- `scrape::stream` <- `store::render` (one node's store) or
//! `scrape::merged` (a cluster node's collected groups).
// One audited exception: `exposition::utf8` (an ASCII fast path for UTF-8 validation).
#![deny(unsafe_code)]

/// The layers are private to the crate: the binary uses the facade below. The integration
/// tests, the cluster test bed and the benches reach inside (in-process benches of the hot
/// paths, a placement oracle, wire encodings) with the `testsuite` feature, which makes the
/// layers public; nothing else changes with it.
macro_rules! layers {
    ($($name:ident),* $(,)?) => {$(
        #[cfg(feature = "testsuite")]
        pub mod $name;
        #[cfg(not(feature = "testsuite"))]
        mod $name;
    )*};
}

layers!(
    cluster, config, exposition, gateway, http, ingest, migrate, node, scrape, store, telemetry
);

#[cfg(any(test, feature = "testsuite"))]
pub mod testsupport;
pub mod time;
pub mod tls;

pub use self::config::import::ImportArgs;
pub use self::config::{parse_listen_address, Config};
pub use self::http::web_config::SharedWebConfig;
pub use self::migrate::{run as run_import, Summary as ImportSummary};
pub use self::node::Node;
pub use self::telemetry::{logging, SelfRecorder};

/// The hash map of hot paths: foldhash, seeded per process (HashDoS-resistant like std's
/// SipHash, several times faster on short keys such as names and label sets).
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
