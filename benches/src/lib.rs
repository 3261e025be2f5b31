//! Shared pieces of the pushgate benches: realistic push bodies, latency summaries and scrape readers.
//!
//! Everything here speaks the Pushgateway HTTP API only, so the load generator built on it measures any
//! Pushgateway-compatible server, upstream included; `placement` alone knows pushgate's cluster
//! placement, to pick groups by their owners.
#![forbid(unsafe_code)]

pub mod body;
pub mod cpu;
pub mod http1;
pub mod latency;
pub mod placement;
pub mod scrape;
