//! `--cluster.tls-config`: Alertmanager's cluster TLS file (`tls_server_config`,
//! `tls_client_config`) for mutual TLS between nodes, and its re-reading when the files change.
//!
//! Only mutual TLS is accepted: the server verifies every caller's certificate against
//! `client_ca_file` (`client_auth_type` defaults to, and must be, `RequireAndVerifyClientCert`)
//! and the client verifies every peer's certificate against `ca_file` and presents its own.
//! Anything weaker would let a process on the network call the cluster's RPCs (wipe included).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use serde::Deserialize;

use super::client::build_client_config;
use super::file::{nonempty, ConfigError, Ctx, RawClientTls, RawServerTls};
use super::server::build_server_config;
use crate::telemetry::metrics as m;

/// How often the watcher looks at the files' metadata: a rotated certificate is in force for
/// new handshakes within this long, at the cost of a few `stat` calls.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// The only `client_auth_type` a cluster accepts.
const REQUIRED_CLIENT_AUTH: &str = "RequireAndVerifyClientCert";

/// Node-to-node gRPC is HTTP/2 only.
const ALPN: &[&[u8]] = &[b"h2"];

const KIND: &str = "cluster tls config";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClusterTls {
    tls_server_config: Option<RawServerTls>,
    tls_client_config: Option<RawClientTls>,
}

/// One load of the file: both rustls configs and the files they came from.
pub struct ClusterTlsConfig {
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
    /// `tls_client_config.server_name`: the name every peer's certificate must carry; `None`
    /// means the host of the peer's advertised address.
    pub server_name: Option<ServerName<'static>>,
    /// The config file and every file it names, whose changes trigger a reload.
    watched: Vec<PathBuf>,
}

impl ClusterTlsConfig {
    /// Reads and checks the file and every certificate and key it names.
    pub fn load(path: &Path) -> Result<ClusterTlsConfig, ConfigError> {
        let dir = path.parent().unwrap_or_else(|| Path::new(""));
        let ctx = Ctx {
            kind: KIND,
            path,
            dir,
        };
        let content = std::fs::read_to_string(path).map_err(|e| ctx.read_error(&e))?;
        let raw: Option<RawClusterTls> =
            serde_yaml::from_str(&content).map_err(|e| ctx.parse_error(e))?;
        let raw = raw.unwrap_or_default();
        let mut server = raw.tls_server_config.ok_or_else(|| {
            ctx.invalid(
                "tls_server_config",
                "required: nodes accept only mutual tls",
            )
        })?;
        let client = raw.tls_client_config.ok_or_else(|| {
            ctx.invalid(
                "tls_client_config",
                "required: nodes call each other with mutual tls",
            )
        })?;
        match nonempty(&server.client_auth_type) {
            None => server.client_auth_type = Some(REQUIRED_CLIENT_AUTH.to_owned()),
            Some(REQUIRED_CLIENT_AUTH) => {}
            Some(other) => {
                return Err(ctx.invalid(
                    "tls_server_config: client_auth_type",
                    format!("{other:?} is refused: the cluster needs {REQUIRED_CLIENT_AUTH}, so that only nodes with a certificate from client_ca_file can call it"),
                ))
            }
        }
        let mut watched = vec![path.to_path_buf()];
        for name in [
            &server.cert_file,
            &server.key_file,
            &server.client_ca_file,
            &client.ca_file,
            &client.cert_file,
            &client.key_file,
        ]
        .into_iter()
        .filter_map(nonempty)
        {
            watched.push(ctx.resolve(name));
        }
        let server_config = build_server_config(&ctx, server, ALPN)?
            .ok_or_else(|| ctx.invalid("tls_server_config", "missing one of cert or cert_file"))?;
        let client = build_client_config(&ctx, client, ALPN)?;
        Ok(ClusterTlsConfig {
            server: server_config,
            client: client.config,
            server_name: client.server_name,
            watched,
        })
    }
}

/// The cluster TLS config in force, swapped whole when its files change: connections keep the
/// config they were made with, new handshakes take the new one. Cloning shares it.
#[derive(Clone)]
pub struct ClusterTls {
    current: Arc<ArcSwap<ClusterTlsConfig>>,
    path: Arc<PathBuf>,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTls")
            .field("path", &self.path)
            .finish()
    }
}

/// What the watcher saw of each watched file (`None`: it could not be read).
type Fingerprint = Vec<Option<(SystemTime, u64, u64)>>;

fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    use std::os::unix::fs::MetadataExt;
    paths
        .iter()
        .map(|p| {
            let meta = std::fs::metadata(p).ok()?;
            // The inode too: a file renamed into place may keep the old one's size and time.
            Some((meta.modified().ok()?, meta.len(), meta.ino()))
        })
        .collect()
}

impl ClusterTls {
    /// Loads `path`; an error here stops the node before it binds anything.
    pub fn load(path: &Path) -> Result<ClusterTls, ConfigError> {
        let config = ClusterTlsConfig::load(path)?;
        Ok(ClusterTls {
            current: Arc::new(ArcSwap::from_pointee(config)),
            path: Arc::new(path.to_path_buf()),
        })
    }

    /// The config for the next handshake.
    pub fn current(&self) -> Arc<ClusterTlsConfig> {
        self.current.load_full()
    }

    /// Re-reads the files. On error the config in force stays, and the error is returned.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let config = ClusterTlsConfig::load(&self.path)?;
        self.current.store(Arc::new(config));
        Ok(())
    }

    /// Checks the files every `interval` and reloads when any changed (a new time, size or
    /// inode, or one appearing or disappearing). A failed reload is logged and counted; it is
    /// tried again at the next change.
    pub fn watch(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut watched = tls.current().watched.clone();
            let mut seen = fingerprint(&watched);
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let now = fingerprint(&watched);
                if now == seen {
                    continue;
                }
                match tls.reload() {
                    Ok(()) => {
                        metrics::counter!(m::CLUSTER_TLS_RELOADS_TOTAL, "result" => "success")
                            .increment(1);
                        tracing::info!(path = %tls.path.display(), "reloaded the cluster tls config");
                        watched = tls.current().watched.clone();
                        seen = fingerprint(&watched);
                    }
                    Err(e) => {
                        metrics::counter!(m::CLUSTER_TLS_RELOADS_TOTAL, "result" => "failure")
                            .increment(1);
                        tracing::error!(err = %e, "cannot reload the cluster tls config; the previous certificates stay in force");
                        seen = now;
                    }
                }
            }
        })
    }
}

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod tests;
