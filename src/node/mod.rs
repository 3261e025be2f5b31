//! One pushgate node: builds the store from flags (loading the persistence file), chooses a
//! single node or a cluster node, serves the HTTP API on pre-bound listeners, persists
//! periodically and on shutdown.

mod cluster;
mod persistence;
pub mod readiness;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use self::cluster::{lifecycle_settings, ClusterNode};
use self::readiness::Readiness;
use crate::cluster::ClusterGateway;
use crate::config::{route_prefix, Config};
use crate::exposition::names::NameScheme;
use crate::gateway::{Gateway, LocalGateway};
use crate::http::grouping::GroupingLimits;
use crate::http::web_config::{AuthLimits, SharedWebConfig};
use crate::http::{app, AppState, HttpConfig, ServerLimits};
use crate::ingest::inflight::InflightBytes;
use crate::store::{Limits, Store, StoreOptions, Validation};
use crate::telemetry::{self, SelfRecorder};
use crate::time::unix_seconds;
use crate::tls::ClusterTls;

pub struct Node {
    cfg: Config,
    store: Arc<Store>,
    http: Arc<HttpConfig>,
    recorder: SelfRecorder,
    persistence: Option<PathBuf>,
    /// The store holds groups the persistence file does not (an upstream file was loaded).
    persistence_dirty: bool,
    /// `--cluster.tls-config`, loaded (and checked) before anything is bound.
    cluster_tls: Option<ClusterTls>,
}

impl Node {
    /// Validates flags and loads the persistence file. Nothing is bound yet.
    pub fn build(cfg: Config, recorder: SelfRecorder) -> anyhow::Result<Node> {
        telemetry::preregister_node();
        let names = if cfg.enable_utf8_names {
            NameScheme::Utf8
        } else {
            NameScheme::Legacy
        };
        let prefix =
            route_prefix(&cfg.route_prefix, &cfg.external_url).map_err(anyhow::Error::msg)?;
        if !cfg.telemetry_path.starts_with('/') {
            anyhow::bail!(
                "--web.telemetry-path {:?} must start with /",
                cfg.telemetry_path
            );
        }
        if cfg.group_ttl.as_secs_f64() > crate::store::codec::MAX_TTL_SECONDS {
            anyhow::bail!("--push.group-ttl must be at most 100 years");
        }
        if cfg.max_body_bytes == 0 || cfg.max_body_bytes > (1 << 30) {
            anyhow::bail!("--push.max-body-bytes must be between 1 and 1073741824");
        }
        check_bounds(&cfg)?;
        let limits = limits(&cfg);
        let store = Arc::new(Store::new(StoreOptions {
            consistency_check: !cfg.disable_consistency_check,
            max_groups: cfg.max_groups,
            reserved: telemetry::reserved_names(),
            group_ttl: cfg.group_ttl.as_secs_f64(),
        }));
        let persistence =
            (!cfg.persistence_file.is_empty()).then(|| PathBuf::from(&cfg.persistence_file));
        let mut persistence_dirty = false;
        if let Some(path) = &persistence {
            persistence_dirty =
                persistence::load(&store, path, names, cfg.persistence_start_empty_on_error)?;
        }
        let http = Arc::new(HttpConfig {
            route_prefix: prefix,
            telemetry_path: cfg.telemetry_path.clone(),
            enable_lifecycle: cfg.enable_lifecycle,
            enable_admin_api: cfg.enable_admin_api,
            consistency_check: !cfg.disable_consistency_check,
            names,
            max_body_bytes: cfg.max_body_bytes,
            group_ttl: cfg.group_ttl.as_secs_f64(),
            inflight: InflightBytes::new(cfg.max_inflight_bytes),
            grouping: GroupingLimits {
                max_labels: limits.max_grouping_labels,
                max_name_bytes: limits.max_label_name_bytes,
                max_value_bytes: limits.max_label_value_bytes,
            },
            flags: cfg.flag_values().to_vec(),
            start_time: unix_seconds(),
        });
        cfg.cluster().map_err(anyhow::Error::msg)?;
        let cluster_tls = match &cfg.cluster_tls_config {
            Some(path) => Some(ClusterTls::load(path)?),
            None => None,
        };
        Ok(Node {
            cfg,
            store,
            http,
            recorder,
            persistence,
            persistence_dirty,
            cluster_tls,
        })
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn validation(&self) -> Validation {
        Validation {
            names: self.http.names,
            limits: limits(&self.cfg),
        }
    }

    /// What the HTTP handlers share, over `gateway`.
    fn app_state<G: Gateway>(
        &self,
        gateway: G,
        quit: &Arc<Notify>,
        ready: &Readiness,
    ) -> AppState<G> {
        AppState {
            gateway: Arc::new(gateway),
            config: self.http.clone(),
            recorder: self.recorder.clone(),
            quit: quit.clone(),
            ready: ready.flag(),
        }
    }

    /// Serves until `shutdown` resolves or `/-/quit` is called, then persists a last time.
    pub async fn serve(
        self,
        listeners: Vec<TcpListener>,
        web: SharedWebConfig,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let web = web.with_auth_limits(AuthLimits {
            max_pending: self.cfg.auth_max_pending,
            max_pending_per_client: self.cfg.auth_max_pending_per_client,
        });
        let quit = Arc::new(Notify::new());
        let settings = self.cfg.cluster().map_err(anyhow::Error::msg)?;
        // A cluster node turns ready once it joined and pulled its groups (see ClusterNode).
        let ready = Readiness::new(settings.is_none());
        let mut cluster = None;
        let app = match settings {
            None => {
                let gateway = LocalGateway::new(self.store.clone(), self.validation());
                app(self.app_state(gateway, &quit, &ready), web.clone())
            }
            Some(settings) => {
                let running = ClusterNode::start(
                    &settings,
                    lifecycle_settings(&self.cfg),
                    self.store.clone(),
                    self.validation(),
                    ready.clone(),
                    self.cluster_tls.clone(),
                )
                .await?;
                let gateway = ClusterGateway::new(running.core.clone());
                cluster = Some(running);
                app(self.app_state(gateway, &quit, &ready), web.clone())
            }
        };

        // One signal for everything that must stop: flags, signals, /-/quit. A cluster node
        // first drains: unready at once (balancers stop sending), gossiping `leaving` (its
        // groups start moving to their next owners), and still serving HTTP for the drain
        // period, so that no client is refused while a balancer notices.
        let http_stop = Arc::new(Notify::new());
        {
            let http_stop = http_stop.clone();
            let draining = cluster.as_ref().map(|c| (c.lifecycle.clone(), c.drain));
            let ready = ready.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = shutdown => {}
                    _ = quit.notified() => tracing::info!("shutdown requested via /-/quit"),
                }
                if let Some((lifecycle, _)) = &draining {
                    lifecycle.stop_joining();
                }
                ready.set_not_ready();
                if let Some((lifecycle, drain)) = draining {
                    lifecycle.begin_leave().await;
                    tracing::info!(drain = ?drain, "draining: unready, still serving HTTP (--cluster.drain-period)");
                    tokio::time::sleep(drain).await;
                }
                http_stop.notify_waiters();
                http_stop.notify_one();
            });
        }

        // The final snapshot is written once the HTTP side stopped and, on a cluster node,
        // the last handover is done.
        let persist_stop = Arc::new(Notify::new());
        let persister = self.persistence.clone().map(|path| {
            let store = self.store.clone();
            let interval = self.cfg.persistence_interval;
            let stop = persist_stop.clone();
            let dirty = self.persistence_dirty;
            tokio::spawn(persistence::persist_loop(store, path, interval, dirty, stop))
        });

        let expiry = tokio::spawn(expiry_loop(self.store.clone()));
        let server_limits = server_limits(&self.cfg);

        let mut servers = Vec::new();
        for l in listeners {
            if let Ok(addr) = l.local_addr() {
                tracing::info!(address = %addr, "listening");
            }
            let app = app.clone();
            let web = web.clone();
            let stop = http_stop.clone();
            servers.push(tokio::spawn(crate::http::server::serve(
                l,
                app,
                web,
                server_limits.clone(),
                async move { stop.notified().await },
            )));
        }
        for s in servers {
            let _ = s.await;
        }
        expiry.abort();
        ready.set_not_ready();
        if let Some(c) = cluster.as_mut() {
            c.finish_leave().await;
        }
        persist_stop.notify_waiters();
        persist_stop.notify_one();
        let persisted = match persister {
            Some(p) => p.await.context("persistence task failed"),
            None => Ok(Ok(())),
        };
        if let Some(c) = cluster {
            c.stop().await;
        }
        persisted??;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The HTTP bounds' flags: each must leave legitimate use possible.
fn check_bounds(cfg: &Config) -> anyhow::Result<()> {
    if cfg.max_inflight_bytes < cfg.max_body_bytes.saturating_mul(3) {
        anyhow::bail!(
            "--push.max-inflight-bytes ({}) must be at least three times --push.max-body-bytes ({}): \
             a compressed body and two decompressed copies must fit",
            cfg.max_inflight_bytes,
            cfg.max_body_bytes
        );
    }
    if cfg.max_connections == 0 {
        anyhow::bail!("--web.max-connections must be at least 1");
    }
    if cfg.read_header_timeout.is_zero() || cfg.idle_timeout.is_zero() {
        anyhow::bail!("--web.read-header-timeout and --web.idle-timeout must be above zero");
    }
    if cfg.auth_max_pending == 0 || cfg.auth_max_pending_per_client == 0 {
        anyhow::bail!(
            "--web.auth.max-pending and --web.auth.max-pending-per-client must be at least 1"
        );
    }
    Ok(())
}

/// File descriptors kept out of the connection limit: the listeners, the persistence file,
/// the cluster's sockets and peer connections, the runtime's own.
const RESERVED_FDS: usize = 256;

/// The connection bounds the flags set, the connection limit lowered to fit the open-file
/// limit (so that accept never fails for lack of descriptors).
fn server_limits(cfg: &Config) -> ServerLimits {
    let mut max = cfg.max_connections;
    if let Some(fds) = telemetry::process::read().max_fds.filter(|f| *f > 0.0) {
        let fit = (fds as usize).saturating_sub(RESERVED_FDS).max(1);
        if fit < max {
            tracing::warn!(
                flag = max,
                open_file_limit = fds as usize,
                effective = fit,
                "--web.max-connections lowered to fit the open-file limit"
            );
            max = fit;
        }
    }
    ServerLimits::new(cfg.read_header_timeout, cfg.idle_timeout, max)
}

/// The push limits the flags set.
fn limits(cfg: &Config) -> Limits {
    Limits {
        max_series_per_push: cfg.max_series_per_push,
        max_label_name_bytes: cfg.max_label_name_length,
        max_label_value_bytes: cfg.max_label_value_length,
        max_grouping_labels: cfg.max_grouping_labels,
        max_groups: cfg.max_groups,
    }
}

/// How often expired groups are looked for in a store nobody reads or writes (every read and
/// write removes them first), and the expired-groups counter is brought up to date.
const EXPIRY_SWEEP: std::time::Duration = std::time::Duration::from_millis(100);

/// Removes expired groups (`--push.group-ttl`, `Pushgate-Group-TTL`) and counts them.
async fn expiry_loop(store: Arc<Store>) {
    let mut tick = tokio::time::interval(EXPIRY_SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        store.expire(unix_seconds());
        // Reads and writes remove expired groups too: the store counts them all.
        metrics::counter!(telemetry::metrics::GROUPS_EXPIRED_TOTAL).absolute(store.expired_total());
    }
}
