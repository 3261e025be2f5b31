//! pushgate: a drop-in, wire-compatible Prometheus Pushgateway that runs as one node or a cluster.
//!
//! Data flows one way: bytes -> `exposition` -> `store` -> `exposition` -> bytes; `http` knows
//! nothing of where groups live, it talks to a `gateway::Gateway`.
// One audited exception: `exposition::utf8` (an ASCII fast path for UTF-8 validation).
#![deny(unsafe_code)]

pub mod cluster;
pub mod config;
pub mod exposition;
pub mod gateway;
pub mod http;
pub mod ingest;
pub mod node;
pub mod scrape;
pub mod store;
pub mod telemetry;
#[cfg(any(test, feature = "testsuite"))]
pub mod testsupport;
pub mod time;

/// The hash map of hot paths: foldhash, seeded per process (HashDoS-resistant like std's
/// SipHash, several times faster on short keys such as names and label sets).
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
