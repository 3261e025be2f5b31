//! pushgate: a drop-in, wire-compatible Prometheus Pushgateway that runs as one node or a cluster.
#![forbid(unsafe_code)]

pub mod exposition;
pub mod gateway;
pub mod http;
pub mod store;
pub mod telemetry;
