//! TLS settings shared by the HTTP listeners (`--web.config.file`) and the cluster's gRPC
//! (`--cluster.tls-config`): one parser and builder of `tls_server_config`, the
//! `tls_client_config` of a node calling its peers, and the cluster's reloading config.
//!
//! The parts: `file` (the YAML sections as written, the errors that name the file and field),
//! `server` (the rustls server config: versions, cipher suites, curves, certificate, client CAs),
//! `client_certs` (client-certificate verifiers), `client` (the rustls client config) and
//! `cluster` (the cluster's file, mutual TLS only, re-read when its files change).

mod client;
mod client_certs;
mod cluster;
mod file;
mod http_client;
mod server;

pub use client::{build_client_config, ClientTls};
pub use cluster::{ClusterTls, ClusterTlsConfig, RELOAD_CHECK_INTERVAL};
pub use file::{ConfigError, Ctx, RawClientTls, RawServerTls};
pub use http_client::{build_http_client_config, HttpClientTls};
pub use server::build_server_config;
