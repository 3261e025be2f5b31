//! What every handler shares: the flags they read ([`HttpConfig`]) and the gateway, recorder
//! and lifecycle signals they act on ([`AppState`]).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::sync::Notify;

use super::grouping::GroupingLimits;
use crate::exposition::NameScheme;
use crate::ingest::inflight::InflightBytes;
use crate::telemetry::SelfRecorder;

/// Everything the handlers need to know about flags.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Route prefix without trailing slash ("" for none).
    pub route_prefix: String,
    pub telemetry_path: String,
    pub enable_lifecycle: bool,
    pub enable_admin_api: bool,
    pub consistency_check: bool,
    pub names: NameScheme,
    pub max_body_bytes: usize,
    /// `--push.group-ttl` in seconds (0: groups never expire).
    pub group_ttl: f64,
    /// The bytes of push bodies held at once, at most `--push.max-inflight-bytes`.
    pub inflight: Arc<InflightBytes>,
    pub grouping: GroupingLimits,
    /// Every flag with its value as a string, for `/api/v1/status`.
    pub flags: Vec<(String, String)>,
    pub start_time: f64,
}

/// Shared state of all handlers.
pub struct AppState<G> {
    pub gateway: Arc<G>,
    pub config: Arc<HttpConfig>,
    pub recorder: SelfRecorder,
    /// Notified by `/-/quit`.
    pub quit: Arc<Notify>,
    /// Whether `/-/ready` answers 200.
    pub ready: Arc<AtomicBool>,
}

impl<G> Clone for AppState<G> {
    fn clone(&self) -> Self {
        AppState {
            gateway: self.gateway.clone(),
            config: self.config.clone(),
            recorder: self.recorder.clone(),
            quit: self.quit.clone(),
            ready: self.ready.clone(),
        }
    }
}
