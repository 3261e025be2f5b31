//! Command-line flags: upstream's names and defaults, plus pushgate's limits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

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
    /// Most series (sample lines) in one push.
    #[arg(long = "push.max-series-per-push", default_value_t = 100_000)]
    pub max_series_per_push: usize,
    /// Longest label name, in bytes.
    #[arg(long = "push.max-label-name-length", default_value_t = 1024)]
    pub max_label_name_length: usize,
    /// Longest label value, in bytes.
    #[arg(long = "push.max-label-value-length", default_value_t = 1 << 20)]
    pub max_label_value_length: usize,
    /// Most labels in a grouping key, job included.
    #[arg(long = "push.max-grouping-labels", default_value_t = 50)]
    pub max_grouping_labels: usize,
    /// Most groups held; pushes creating more are refused.
    #[arg(long = "push.max-groups", default_value_t = 1_000_000)]
    pub max_groups: usize,
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
    /// Number of nodes holding each push group.
    #[arg(long = "cluster.replication-factor", default_value_t = 2)]
    pub cluster_replication_factor: usize,
    /// Interval between gossip rounds.
    #[arg(long = "cluster.gossip-interval", default_value = "200ms", value_parser = parse_go_duration)]
    pub cluster_gossip_interval: Duration,
    /// Deadline of each node-to-node gRPC call.
    #[arg(long = "cluster.peer-timeout", default_value = "2s", value_parser = parse_go_duration)]
    pub cluster_peer_timeout: Duration,
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
}

/// The cluster flags once validated: where to listen, what to advertise.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub listen: SocketAddr,
    pub advertise: SocketAddr,
    pub peers: Vec<String>,
    pub name: String,
    pub replication_factor: usize,
    pub gossip_interval: Duration,
    pub peer_timeout: Duration,
    pub lifecycle: crate::cluster::reconcile::LifecycleSettings,
}

impl Config {
    /// The cluster settings, `None` for a single node; refuses inconsistent cluster flags
    /// before anything is bound.
    pub fn cluster(&self) -> Result<Option<ClusterSettings>, String> {
        if self.cluster_listen_address.is_empty() {
            let stray =
                !self.cluster_advertise_address.is_empty() || !self.cluster_peers.is_empty();
            if stray {
                return Err(
                    "--cluster.advertise-address and --cluster.peer need --cluster.listen-address"
                        .into(),
                );
            }
            return Ok(None);
        }
        let first = |flag: &str, s: &str| -> Result<SocketAddr, String> {
            let addrs = parse_listen_address(s).map_err(|e| format!("--{flag}: {e}"))?;
            let addr = addrs
                .iter()
                .find(|a| a.is_ipv4())
                .or(addrs.first())
                .copied()
                .ok_or_else(|| format!("--{flag} {s:?} resolves to no address"))?;
            if addr.port() == 0 {
                return Err(format!("--{flag} {s:?} needs a non-zero port"));
            }
            Ok(addr)
        };
        let listen = first("cluster.listen-address", &self.cluster_listen_address)?;
        let advertise = if self.cluster_advertise_address.is_empty() {
            listen
        } else {
            first("cluster.advertise-address", &self.cluster_advertise_address)?
        };
        if advertise.ip().is_unspecified() {
            return Err(format!(
                "cluster address {advertise} is unspecified: set --cluster.advertise-address to an address the other nodes can reach"
            ));
        }
        if self.cluster_replication_factor == 0 {
            return Err("--cluster.replication-factor must be at least 1".into());
        }
        if self.cluster_name.is_empty() {
            return Err("--cluster.name must not be empty".into());
        }
        if self.cluster_gossip_interval.is_zero() {
            return Err("--cluster.gossip-interval must be positive".into());
        }
        if self.cluster_peer_timeout.is_zero() {
            return Err("--cluster.peer-timeout must be positive".into());
        }
        if self.cluster_anti_entropy_interval.is_zero() {
            return Err("--cluster.anti-entropy-interval must be positive".into());
        }
        if self.cluster_tombstone_lifetime < self.cluster_anti_entropy_interval * 3 {
            return Err("--cluster.tombstone-lifetime must be at least 3 anti-entropy intervals (a tombstone must reach every co-owner before it is forgotten)".into());
        }
        if self.cluster_rebalance_rate == 0 {
            return Err("--cluster.rebalance-rate must be positive".into());
        }
        for p in &self.cluster_peers {
            match p.rsplit_once(':') {
                Some((h, port)) if !h.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
                _ => return Err(format!("--cluster.peer {p:?} is not host:port")),
            }
        }
        Ok(Some(ClusterSettings {
            listen,
            advertise,
            peers: self.cluster_peers.clone(),
            name: self.cluster_name.clone(),
            replication_factor: self.cluster_replication_factor,
            gossip_interval: self.cluster_gossip_interval,
            peer_timeout: self.cluster_peer_timeout,
            lifecycle: crate::cluster::reconcile::LifecycleSettings {
                anti_entropy_interval: self.cluster_anti_entropy_interval,
                tombstone_lifetime: self.cluster_tombstone_lifetime,
                max_hints: self.cluster_max_hints,
                rebalance_rate: self.cluster_rebalance_rate,
                join_timeout: self.cluster_join_timeout,
                shutdown_timeout: self.cluster_shutdown_timeout,
            },
        }))
    }
}

/// `:9091`, `0.0.0.0:9091`, `[::1]:9091`, `localhost:9091`: an empty host means every interface.
pub fn parse_listen_address(s: &str) -> Result<Vec<SocketAddr>, String> {
    use std::net::ToSocketAddrs;
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("listen address {s:?} has no port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("listen address {s:?} has an invalid port"))?;
    if host.is_empty() {
        return Ok(vec![SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 0], port))]);
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host, port)
        .to_socket_addrs()
        .map(|a| a.collect())
        .map_err(|e| format!("listen address {s:?}: {e}"))
}

/// The route prefix upstream derives: the flag, else the external URL's path; no trailing
/// slash; "" for none.
pub fn route_prefix(flag: &str, external_url: &str) -> Result<String, String> {
    let raw = if !flag.is_empty() {
        flag.to_owned()
    } else if external_url.is_empty() {
        String::new()
    } else {
        let after_scheme = external_url
            .split_once("://")
            .map(|(_, r)| r)
            .ok_or_else(|| format!("--web.external-url {external_url:?} is not an absolute URL"))?;
        after_scheme
            .find('/')
            .map(|i| after_scheme[i..].to_owned())
            .unwrap_or_default()
    };
    let trimmed = raw.trim_matches('/');
    Ok(if trimmed.is_empty() {
        String::new()
    } else {
        format!("/{trimmed}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen_address(":9091").unwrap()[0].port(), 9091);
        assert_eq!(
            parse_listen_address("127.0.0.1:80").unwrap()[0].to_string(),
            "127.0.0.1:80"
        );
        assert!(parse_listen_address("nope").is_err());
    }

    #[test]
    fn cluster_flags() {
        let parse = |args: &[&str]| {
            Config::try_parse_from(std::iter::once("pushgate").chain(args.iter().copied()))
                .unwrap()
                .cluster()
        };
        assert!(parse(&[]).unwrap().is_none());
        assert!(parse(&["--cluster.peer=a:1"]).is_err());
        let c = parse(&[
            "--cluster.listen-address=127.0.0.1:9094",
            "--cluster.peer=h:9094",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.advertise.to_string(), "127.0.0.1:9094");
        assert_eq!(c.replication_factor, 2);
        assert_eq!(c.gossip_interval, Duration::from_millis(200));
        assert_eq!(c.peer_timeout, Duration::from_secs(2));
        assert!(parse(&["--cluster.listen-address=0.0.0.0:9094"]).is_err());
        assert!(parse(&[
            "--cluster.listen-address=0.0.0.0:9094",
            "--cluster.advertise-address=10.0.0.1:9094"
        ])
        .unwrap()
        .is_some());
        assert!(parse(&[
            "--cluster.listen-address=127.0.0.1:9094",
            "--cluster.replication-factor=0"
        ])
        .is_err());
        assert!(parse(&[
            "--cluster.listen-address=127.0.0.1:9094",
            "--cluster.peer=nope"
        ])
        .is_err());
    }

    #[test]
    fn lifecycle_flags() {
        let parse = |args: &[&str]| {
            Config::try_parse_from(
                ["pushgate", "--cluster.listen-address=127.0.0.1:9094"]
                    .into_iter()
                    .chain(args.iter().copied()),
            )
            .unwrap()
            .cluster()
        };
        let c = parse(&[]).unwrap().unwrap();
        assert_eq!(c.lifecycle.anti_entropy_interval, Duration::from_secs(10));
        assert_eq!(c.lifecycle.tombstone_lifetime, Duration::from_secs(3600));
        assert_eq!(c.lifecycle.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(c.lifecycle.join_timeout, Duration::from_secs(30));
        assert_eq!(c.lifecycle.max_hints, 100_000);
        assert!(parse(&["--cluster.anti-entropy-interval=0s"]).is_err());
        assert!(parse(&["--cluster.rebalance-rate=0"]).is_err());
        // A tombstone must outlive a few rounds, or a co-owner may never see it.
        assert!(parse(&[
            "--cluster.anti-entropy-interval=1m",
            "--cluster.tombstone-lifetime=2m"
        ])
        .is_err());
        assert!(parse(&[
            "--cluster.anti-entropy-interval=1s",
            "--cluster.tombstone-lifetime=1m"
        ])
        .is_ok());
    }

    #[test]
    fn prefixes() {
        assert_eq!(route_prefix("", "").unwrap(), "");
        assert_eq!(route_prefix("/", "").unwrap(), "");
        assert_eq!(route_prefix("/foo/", "").unwrap(), "/foo");
        assert_eq!(route_prefix("", "http://h:9091/bar/").unwrap(), "/bar");
        assert_eq!(route_prefix("", "http://h:9091").unwrap(), "");
    }
}
