//! The cluster flags checked together: `None` for a single node, or the settings a cluster
//! node starts with, refused before anything is bound when they do not fit together.

use std::net::SocketAddr;
use std::time::Duration;

use super::addresses::parse_listen_address;
use super::Config;
use crate::cluster::gossip_key::GossipKeyFile;

/// The derived gRPC message limit is never below this (a collect chunk and a sync batch of
/// small groups must fit whatever the push body limit).
const MIN_GRPC_MESSAGE_BYTES: usize = 16 << 20;
/// Room around a forwarded push's body in its message (key, flags, framing).
const GRPC_MESSAGE_SLACK: usize = 1 << 20;

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
    /// `--cluster.max-clock-skew`.
    pub max_clock_skew: Duration,
    /// The gossip keys, read at start (`--cluster.gossip-key-file`); `None` gossips in the clear.
    pub gossip_key: Option<GossipKeyFile>,
    /// Largest gRPC message sent or accepted (`--cluster.grpc-max-message-bytes`, resolved).
    pub grpc_max_message_bytes: usize,
    pub grpc_max_streams: u32,
    pub grpc_max_concurrency: usize,
    pub grpc_timeout: Duration,
    pub max_batch_items: usize,
    pub max_scrape_bytes: usize,
    pub max_tombstones: usize,
    pub max_tombstone_bytes: usize,
    /// Nodes that must hold a write before it is acknowledged (`--cluster.write-quorum`,
    /// resolved: 1 to the replication factor).
    pub write_quorum: usize,
    /// `--cluster.drain-period`.
    pub drain_period: Duration,
}

/// The warning a cluster node logs at start when its cluster plane is open, naming what is
/// missing: `tls` is whether node-to-node gRPC is mutual TLS, `gossip_key` whether gossip is
/// sealed. `None` when both are on.
pub fn open_plane_warning(tls: bool, gossip_key: bool) -> Option<String> {
    let mut missing = Vec::new();
    if !tls {
        missing.push("no --cluster.tls-config: anyone who reaches the cluster port over TCP can call every node-to-node gRPC (read, write, delete and wipe groups)");
    }
    if !gossip_key {
        missing.push("no --cluster.gossip-key-file: anyone who reaches the cluster port over UDP can join the cluster, be given groups and their pushes, and see the members");
    }
    (!missing.is_empty()).then(|| {
        format!(
            "the cluster plane is open, fit for a local trial only: {}; see \"Securing a cluster\" in docs/operations.md",
            missing.join("; ")
        )
    })
}

impl Config {
    /// The cluster settings, `None` for a single node; refuses inconsistent cluster flags
    /// before anything is bound.
    pub fn cluster(&self) -> Result<Option<ClusterSettings>, String> {
        if self.cluster_listen_address.is_empty() {
            let stray = !self.cluster_advertise_address.is_empty()
                || !self.cluster_peers.is_empty()
                || self.cluster_tls_config.is_some()
                || self.cluster_gossip_key_file.is_some();
            if stray {
                return Err(
                    "--cluster.advertise-address, --cluster.peer, --cluster.tls-config and --cluster.gossip-key-file need --cluster.listen-address"
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
        let write_quorum = match self.cluster_write_quorum {
            0 => self.cluster_replication_factor,
            w if w > self.cluster_replication_factor => {
                return Err("--cluster.write-quorum must not exceed --cluster.replication-factor (0: the replication factor)".into())
            }
            w => w,
        };
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
        if self.cluster_max_clock_skew < self.cluster_peer_timeout {
            return Err("--cluster.max-clock-skew must be at least --cluster.peer-timeout (a write stamped by its primary travels that long)".into());
        }
        if self.cluster_rebalance_rate == 0 {
            return Err("--cluster.rebalance-rate must be positive".into());
        }
        if self.cluster_grpc_timeout < self.cluster_peer_timeout {
            return Err("--cluster.grpc-timeout must be at least --cluster.peer-timeout (a peer's call would be cut before its own deadline)".into());
        }
        let positive = [
            (
                "cluster.grpc-max-streams",
                self.cluster_grpc_max_streams as usize,
            ),
            (
                "cluster.grpc-max-concurrency",
                self.cluster_grpc_max_concurrency,
            ),
            ("cluster.max-batch-items", self.cluster_max_batch_items),
            ("cluster.max-scrape-bytes", self.cluster_max_scrape_bytes),
        ];
        if let Some((flag, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("--{flag} must be positive"));
        }
        // A forwarded push travels in one message, with its key and framing around it.
        let grpc_max_message_bytes = match self.cluster_grpc_max_message_bytes {
            0 => self.max_body_bytes.saturating_mul(2).max(MIN_GRPC_MESSAGE_BYTES),
            n if n < self.max_body_bytes.saturating_add(GRPC_MESSAGE_SLACK) => {
                return Err(format!(
                    "--cluster.grpc-max-message-bytes must be at least --push.max-body-bytes plus {GRPC_MESSAGE_SLACK} (a forwarded push travels in one message)"
                ))
            }
            n => n,
        };
        for p in &self.cluster_peers {
            match p.rsplit_once(':') {
                Some((h, port)) if !h.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
                _ => return Err(format!("--cluster.peer {p:?} is not host:port")),
            }
        }
        let gossip_key = self
            .cluster_gossip_key_file
            .as_deref()
            .map(GossipKeyFile::load)
            .transpose()
            .map_err(|e| format!("--cluster.gossip-key-file: {e}"))?;
        Ok(Some(ClusterSettings {
            listen,
            advertise,
            peers: self.cluster_peers.clone(),
            name: self.cluster_name.clone(),
            replication_factor: self.cluster_replication_factor,
            gossip_interval: self.cluster_gossip_interval,
            peer_timeout: self.cluster_peer_timeout,
            max_clock_skew: self.cluster_max_clock_skew,
            gossip_key,
            grpc_max_message_bytes,
            grpc_max_streams: self.cluster_grpc_max_streams,
            grpc_max_concurrency: self.cluster_grpc_max_concurrency,
            grpc_timeout: self.cluster_grpc_timeout,
            max_batch_items: self.cluster_max_batch_items,
            max_scrape_bytes: self.cluster_max_scrape_bytes,
            max_tombstones: self.cluster_max_tombstones,
            max_tombstone_bytes: self.cluster_max_tombstone_bytes,
            write_quorum,
            drain_period: self.cluster_drain_period,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn cluster_flags() {
        let parse = |args: &[&str]| {
            Config::try_parse_from(std::iter::once("pushgate").chain(args.iter().copied()))
                .unwrap()
                .cluster()
        };
        assert!(parse(&[]).unwrap().is_none());
        assert!(parse(&["--cluster.peer=a:1"]).is_err());
        assert!(parse(&["--cluster.tls-config=tls.yml"]).is_err());
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
        // The write quorum is the replication factor unless lowered (degraded mode).
        assert_eq!(c.write_quorum, 2);
        assert_eq!(c.drain_period, Duration::from_secs(10));
        let quorum = |w: &str| {
            parse(&[
                "--cluster.listen-address=127.0.0.1:9094",
                "--cluster.replication-factor=3",
                &format!("--cluster.write-quorum={w}"),
            ])
            .map(|s| s.unwrap().write_quorum)
        };
        assert_eq!(quorum("0"), Ok(3));
        assert_eq!(quorum("1"), Ok(1));
        assert!(quorum("4").unwrap_err().contains("--cluster.write-quorum"));
    }

    #[test]
    fn the_gossip_key_file_is_read_before_anything_is_bound() {
        let parse = |args: &[&str]| {
            Config::try_parse_from(std::iter::once("pushgate").chain(args.iter().copied()))
                .unwrap()
                .cluster()
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gossip.keys");
        let flag = format!("--cluster.gossip-key-file={}", path.display());
        let listen = "--cluster.listen-address=127.0.0.1:9094";
        // Without a cluster the flag is a mistake, not ignored.
        assert!(parse(&[&flag])
            .unwrap_err()
            .contains("need --cluster.listen-address"));
        let missing = parse(&[listen, &flag]).unwrap_err();
        assert!(
            missing.starts_with("--cluster.gossip-key-file: "),
            "{missing}"
        );
        assert!(missing.contains("gossip.keys"), "{missing}");
        std::fs::write(&path, "# no key yet\n").unwrap();
        assert!(parse(&[listen, &flag]).unwrap_err().contains("no key"));
        std::fs::write(&path, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n").unwrap();
        let s = parse(&[listen, &flag]).unwrap().unwrap();
        let key = s.gossip_key.expect("keys loaded");
        assert_eq!(key.keys.load().ids().len(), 1);
        assert!(parse(&[listen]).unwrap().unwrap().gossip_key.is_none());
    }

    #[test]
    fn the_open_plane_warning_names_what_is_missing() {
        assert_eq!(open_plane_warning(true, true), None);
        let both = open_plane_warning(false, false).unwrap();
        assert!(both.contains("--cluster.tls-config"), "{both}");
        assert!(both.contains("--cluster.gossip-key-file"), "{both}");
        assert!(both.contains("Securing a cluster"), "{both}");
        let no_tls = open_plane_warning(false, true).unwrap();
        assert!(no_tls.contains("--cluster.tls-config"), "{no_tls}");
        assert!(!no_tls.contains("--cluster.gossip-key-file"), "{no_tls}");
        let no_key = open_plane_warning(true, false).unwrap();
        assert!(!no_key.contains("--cluster.tls-config"), "{no_key}");
        assert!(no_key.contains("--cluster.gossip-key-file"), "{no_key}");
    }

    #[test]
    fn lifecycle_flags() {
        let config = |args: &[&str]| {
            Config::try_parse_from(
                ["pushgate", "--cluster.listen-address=127.0.0.1:9094"]
                    .into_iter()
                    .chain(args.iter().copied()),
            )
            .unwrap()
        };
        let parse = |args: &[&str]| config(args).cluster();
        assert!(parse(&[]).unwrap().is_some());
        let c = config(&[]);
        assert_eq!(c.cluster_anti_entropy_interval, Duration::from_secs(10));
        assert_eq!(c.cluster_tombstone_lifetime, Duration::from_secs(3600));
        assert_eq!(c.cluster_shutdown_timeout, Duration::from_secs(30));
        assert_eq!(c.cluster_join_timeout, Duration::from_secs(30));
        assert_eq!(c.cluster_max_hints, 100_000);
        assert!(parse(&["--cluster.anti-entropy-interval=0s"]).is_err());
        let s = parse(&[]).unwrap().unwrap();
        assert_eq!(
            s.grpc_max_message_bytes,
            128 << 20,
            "twice the push body limit"
        );
        assert_eq!(s.grpc_max_streams, 256);
        assert_eq!(s.grpc_max_concurrency, 2_048);
        assert_eq!(s.grpc_timeout, Duration::from_secs(30));
        assert_eq!(s.max_batch_items, 1_024);
        assert_eq!(s.max_scrape_bytes, 2 << 30);
        assert_eq!(
            (s.max_tombstones, s.max_tombstone_bytes),
            (100_000, 32 << 20)
        );
        let s = parse(&["--push.max-body-bytes=1000"]).unwrap().unwrap();
        assert_eq!(s.grpc_max_message_bytes, 16 << 20, "never below the floor");
        // A message limit a forwarded push cannot fit in is refused.
        assert!(parse(&["--cluster.grpc-max-message-bytes=1000"]).is_err());
        assert!(parse(&["--cluster.grpc-max-message-bytes=200000000"]).is_ok());
        assert!(parse(&["--cluster.grpc-timeout=1s"]).is_err());
        assert!(parse(&["--cluster.max-batch-items=0"]).is_err());
        assert!(parse(&["--cluster.grpc-max-concurrency=0"]).is_err());
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
}
