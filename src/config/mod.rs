//! Command-line flags: upstream's names and defaults, plus pushgate's limits. The clap
//! definition below is the one flag table: parsing, `--help` and the flags that
//! `/api/v1/status` and the status page list (`flag_values`) all come from it.

pub mod addresses;
pub mod cluster;
pub mod flag_values;
pub mod import;

pub use addresses::{parse_listen_address, route_prefix};
pub use cluster::ClusterSettings;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};

use crate::telemetry::logging::{LogFormat, LogLevel};
use crate::time::parse_go_duration;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "pushgate",
    version,
    about = "A drop-in, clusterable Prometheus Pushgateway"
)]
pub struct Config {
    /// Addresses to listen on for the web interface, API and telemetry (repeatable).
    #[arg(long = "web.listen-address", default_value = ":9091")]
    pub listen_addresses: Vec<String>,
    /// Use systemd socket activation listeners instead of port listeners (Linux only): serve
    /// on the sockets systemd passes (LISTEN_FDS, LISTEN_PID); --web.listen-address is ignored.
    #[arg(long = "web.systemd-socket")]
    pub systemd_socket: bool,
    /// Path to a web configuration file (TLS, basic auth), exporter-toolkit format.
    #[arg(long = "web.config.file")]
    pub web_config_file: Option<PathBuf>,
    /// Path under which to expose metrics.
    #[arg(long = "web.telemetry-path", default_value = "/metrics")]
    pub telemetry_path: String,
    /// The URL under which the gateway is externally reachable.
    #[arg(long = "web.external-url", default_value = "")]
    pub external_url: String,
    /// Prefix for the internal routes; defaults to the path of --web.external-url.
    #[arg(long = "web.route-prefix", default_value = "")]
    pub route_prefix: String,
    /// Longest time a client has to send a request's headers, from the connection's start or
    /// the end of its previous request (so it also closes an idle HTTP/1 keep-alive connection).
    #[arg(long = "web.read-header-timeout", default_value = "30s", value_parser = parse_go_duration)]
    pub read_header_timeout: Duration,
    /// Longest time a connection stays open with no byte sent or received and no request in
    /// progress (HTTP/2 connections, and connections that never sent a request).
    #[arg(long = "web.idle-timeout", default_value = "2m", value_parser = parse_go_duration)]
    pub idle_timeout: Duration,
    /// Most client connections open at once (lowered to fit the open-file limit); connections
    /// over it are closed at once.
    #[arg(long = "web.max-connections", default_value_t = 8192)]
    pub max_connections: usize,
    /// Most bcrypt password checks running or waiting at once (basic auth); a check over it is
    /// answered 503 at once.
    #[arg(long = "web.auth.max-pending", default_value_t = 16)]
    pub auth_max_pending: usize,
    /// Most bcrypt password checks running or waiting at once for one client IP address; a
    /// check over it is answered 429 at once.
    #[arg(long = "web.auth.max-pending-per-client", default_value_t = 2)]
    pub auth_max_pending_per_client: usize,
    /// Enable shutdown via HTTP request (/-/quit).
    #[arg(long = "web.enable-lifecycle")]
    pub enable_lifecycle: bool,
    /// Enable the admin API (/api/v1/admin/wipe).
    #[arg(long = "web.enable-admin-api")]
    pub enable_admin_api: bool,
    /// File to persist metrics in; empty keeps them in memory only.
    #[arg(long = "persistence.file", default_value = "")]
    pub persistence_file: String,
    /// The minimum interval at which to write out the persistence file.
    #[arg(long = "persistence.interval", default_value = "5m", value_parser = parse_go_duration)]
    pub persistence_interval: Duration,
    /// Start with an empty store when the persistence file cannot be read; the unreadable file
    /// is kept, renamed with a `.corrupt-<unix time>` suffix.
    #[arg(long = "persistence.start-empty-on-error")]
    pub persistence_start_empty_on_error: bool,
    /// Do not check consistency of pushed metrics (answer 202).
    #[arg(long = "push.disable-consistency-check")]
    pub disable_consistency_check: bool,
    /// Allow UTF-8 characters in metric and label names.
    #[arg(long = "push.enable-utf8-names")]
    pub enable_utf8_names: bool,
    /// Largest push body accepted, in bytes, before and after decompression (413 above).
    #[arg(long = "push.max-body-bytes", default_value_t = 64 << 20)]
    pub max_body_bytes: usize,
    /// Most bytes of push bodies held at once (read, decompressed, waiting to be decoded); a
    /// push over it is answered 503 with Retry-After. At least three times
    /// --push.max-body-bytes (a compressed body and two decompressed copies while joined).
    #[arg(long = "push.max-inflight-bytes", default_value_t = 256 << 20)]
    pub max_inflight_bytes: usize,
    /// Most series (sample lines) in one push.
    #[arg(long = "push.max-series-per-push", default_value_t = 100_000)]
    pub max_series_per_push: usize,
    /// Longest label name, in bytes.
    #[arg(long = "push.max-label-name-length", default_value_t = 1024)]
    pub max_label_name_length: usize,
    /// Longest label value, in bytes.
    #[arg(long = "push.max-label-value-length", default_value_t = 1 << 20)]
    pub max_label_value_length: usize,
    /// Most labels in a grouping key, job included (upstream has no limit; this only bounds
    /// made-up URLs of hundreds of path segments).
    #[arg(long = "push.max-grouping-labels", default_value_t = 256)]
    pub max_grouping_labels: usize,
    /// Most groups held; pushes creating more are refused.
    #[arg(long = "push.max-groups", default_value_t = 1_000_000)]
    pub max_groups: usize,
    /// How long after its last successful push a group expires (0: never, as upstream); a
    /// push's `Pushgate-Group-TTL` header overrides it for its group.
    #[arg(long = "push.group-ttl", default_value = "0s", value_parser = parse_go_duration)]
    pub group_ttl: Duration,
    /// Only log messages with the given severity or above.
    #[arg(long = "log.level", value_enum, default_value = "info")]
    pub log_level: LogLevel,
    /// Output format of log messages.
    #[arg(long = "log.format", value_enum, default_value = "logfmt")]
    pub log_format: LogFormat,
    /// Listen address (host:port) for cluster gossip (UDP) and node-to-node gRPC (TCP, same
    /// port number); empty runs a single node.
    #[arg(long = "cluster.listen-address", default_value = "")]
    pub cluster_listen_address: String,
    /// Address (host:port) the other nodes reach this node at; defaults to the listen address
    /// (which must then not be unspecified, e.g. 0.0.0.0).
    #[arg(long = "cluster.advertise-address", default_value = "")]
    pub cluster_advertise_address: String,
    /// Initial peer (host:port, DNS names allowed; repeatable).
    #[arg(long = "cluster.peer")]
    pub cluster_peers: Vec<String>,
    /// Nodes gossiping under another cluster name are ignored.
    #[arg(long = "cluster.name", default_value = "pushgate")]
    pub cluster_name: String,
    /// File of base64 gossip keys (32 bytes each, one a line): every gossip datagram is sealed
    /// with the first and opened with any; re-read when it changes. Without it gossip is open to
    /// anyone who reaches the cluster port.
    #[arg(long = "cluster.gossip-key-file")]
    pub cluster_gossip_key_file: Option<PathBuf>,
    /// Number of nodes holding each push group.
    #[arg(long = "cluster.replication-factor", default_value_t = 2)]
    pub cluster_replication_factor: usize,
    /// Interval between gossip rounds.
    #[arg(long = "cluster.gossip-interval", default_value = "200ms", value_parser = parse_go_duration)]
    pub cluster_gossip_interval: Duration,
    /// Deadline of each node-to-node gRPC call.
    #[arg(long = "cluster.peer-timeout", default_value = "2s", value_parser = parse_go_duration)]
    pub cluster_peer_timeout: Duration,
    /// Alertmanager's cluster TLS file (tls_server_config, tls_client_config): every
    /// node-to-node gRPC call is then mutual TLS; its files are re-read when they change.
    #[arg(long = "cluster.tls-config")]
    pub cluster_tls_config: Option<PathBuf>,
    /// Interval between anti-entropy rounds (co-owners compare digests and repair; groups held
    /// by a non-owner are handed over); a ring change starts a round at once.
    #[arg(long = "cluster.anti-entropy-interval", default_value = "10s", value_parser = parse_go_duration)]
    pub cluster_anti_entropy_interval: Duration,
    /// How long a deleted group's tombstone is kept; must exceed the longest time a node may
    /// be away and come back with its old copy (a stale copy older than this can reappear).
    #[arg(long = "cluster.tombstone-lifetime", default_value = "1h", value_parser = parse_go_duration)]
    pub cluster_tombstone_lifetime: Duration,
    /// Most groups this node holds for unreachable owners (hints); a stand-in replica beyond it
    /// is refused, so the writer tries the next node.
    #[arg(long = "cluster.max-hints", default_value_t = 100_000)]
    pub cluster_max_hints: usize,
    /// How far in the future a peer's version (a write, a tombstone, a wipe) may be dated,
    /// against this node's clock; beyond it the message is refused and counted, so a peer
    /// cannot date a write past every later one.
    #[arg(long = "cluster.max-clock-skew", default_value = "1m", value_parser = parse_go_duration)]
    pub cluster_max_clock_skew: Duration,
    /// Tombstones held at most for groups this node does not hold (a DELETE of a group it
    /// has never seen); beyond it such a delete keeps no tombstone. A delete of a held group
    /// always keeps one.
    #[arg(long = "cluster.max-tombstones", default_value_t = 100_000)]
    pub cluster_max_tombstones: usize,
    /// Bytes of grouping keys that tombstones hold at most, like --cluster.max-tombstones.
    #[arg(long = "cluster.max-tombstone-bytes", default_value_t = 32 << 20)]
    pub cluster_max_tombstone_bytes: usize,
    /// Largest gRPC message a node accepts from a peer or sends; 0: twice
    /// --push.max-body-bytes (a forwarded push travels in one message).
    #[arg(long = "cluster.grpc-max-message-bytes", default_value_t = 0)]
    pub cluster_grpc_max_message_bytes: usize,
    /// Most concurrent gRPC streams (calls) on one peer connection (HTTP/2
    /// SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(long = "cluster.grpc-max-streams", default_value_t = 256)]
    pub cluster_grpc_max_streams: u32,
    /// Most gRPC calls this node serves at once, over all connections; a call beyond it is
    /// refused at once (RESOURCE_EXHAUSTED) and the peer retries or tries another node.
    #[arg(long = "cluster.grpc-max-concurrency", default_value_t = 2_048)]
    pub cluster_grpc_max_concurrency: usize,
    /// Longest a gRPC call from a peer is served before it is cancelled; at least
    /// --cluster.peer-timeout.
    #[arg(long = "cluster.grpc-timeout", default_value = "30s", value_parser = parse_go_duration)]
    pub cluster_grpc_timeout: Duration,
    /// Most items (forwarded writes and replicas) in one batched call; a call with more is
    /// refused whole, and this node never sends more in one.
    #[arg(long = "cluster.max-batch-items", default_value_t = 1_024)]
    pub cluster_max_batch_items: usize,
    /// Most bytes of peers' answers a merged scrape holds; a scrape over it answers 503.
    #[arg(long = "cluster.max-scrape-bytes", default_value_t = 2 << 30)]
    pub cluster_max_scrape_bytes: usize,
    /// Most groups per second a node sends when rebalancing or repairing.
    #[arg(long = "cluster.rebalance-rate", default_value_t = 2_000)]
    pub cluster_rebalance_rate: u32,
    /// Longest wait at start for the peers and the pull of this node's groups before it turns
    /// active (and ready) anyway, with a warning.
    #[arg(long = "cluster.join-timeout", default_value = "30s", value_parser = parse_go_duration)]
    pub cluster_join_timeout: Duration,
    /// Longest graceful shutdown (SIGTERM, /-/quit): handing the groups over to their next
    /// owners stops after this, the rest stays in the persistence file and on the co-owners.
    #[arg(long = "cluster.shutdown-timeout", default_value = "30s", value_parser = parse_go_duration)]
    pub cluster_shutdown_timeout: Duration,
    /// After SIGTERM or /-/quit, how long the node keeps serving HTTP (pushes, forwarding,
    /// scrapes) while /-/ready answers 503, so load balancers stop sending to it before its
    /// listeners close (haproxy's default checks take 6 s to notice).
    #[arg(long = "cluster.drain-period", default_value = "10s", value_parser = parse_go_duration)]
    pub cluster_drain_period: Duration,
    /// Nodes that must hold a write before it is acknowledged; 0: the replication factor.
    /// Below it (degraded mode, opt-in) fewer nodes than R can take writes, which then survive
    /// only the loss of this many nodes minus one until the missing copies are made.
    #[arg(long = "cluster.write-quorum", default_value_t = 0)]
    pub cluster_write_quorum: usize,
    /// Every flag's name and effective value, as `/api/v1/status` lists them; filled by
    /// [`Config::from_command_line`] and [`Config::try_from_args`] (clap's own `parse` leaves
    /// it empty: it keeps no record of the matches).
    #[arg(skip)]
    flag_values: Vec<(String, String)>,
}

impl Config {
    /// Parses the process's arguments; on bad flags, exits with clap's message (as
    /// `Parser::parse` does).
    pub fn from_command_line() -> Config {
        Config::try_from_args(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// Parses `args` (the program name first) and records every flag's effective value.
    pub fn try_from_args<I, T>(args: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let command = flag_values::with_negations(Config::command());
        let matches = command.clone().try_get_matches_from(args)?;
        let mut cfg =
            Config::from_arg_matches(&matches).map_err(|e| e.format(&mut command.clone()))?;
        cfg.flag_values = flag_values::effective_values(&command, &matches);
        Ok(cfg)
    }

    /// Every flag's name (without the dashes) and effective value, for `/api/v1/status`.
    pub fn flag_values(&self) -> &[(String, String)] {
        &self.flag_values
    }
}
