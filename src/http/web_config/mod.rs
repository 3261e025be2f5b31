//! The `--web.config.file` of the Prometheus exporter-toolkit: TLS, basic auth, extra response headers
//! and the rate limit, validated up front so a bad file stops the process before any port is bound.
//!
//! The file format is exporter-toolkit's (`docs/web-configuration.md`), parsed strictly: an unknown key
//! is an error. Relative paths are relative to the directory of the file. An empty file, or one without
//! a certificate, means plain HTTP.
//!
//! [`with_web_config`] wraps every route:
//! - `429 Too Many Requests` when `rate_limit` is set and the bucket is empty, or when the client's
//!   address has `--web.auth.max-pending-per-client` password checks pending;
//! - `503 Service Unavailable` (with `Retry-After`) when `--web.auth.max-pending` password checks
//!   are pending;
//! - `401 Unauthorized` with `WWW-Authenticate: Basic` when `basic_auth_users` is set and the request
//!   has no, or wrong, credentials;
//! - otherwise the inner route's response.
//!
//! Every response, the two errors included, carries the configured `http_server_config.headers`.
//!
//! Differences from exporter-toolkit: TLS 1.0 and 1.1, the CBC and RSA-key-exchange cipher suites and
//! `CurveP521` are rejected as unsupported (rustls has none of them); the verifying client auth modes
//! need a `client_ca_file` (Go falls back to the system roots); certificates are re-read on
//! [`SharedWebConfig::reload`] rather than on every handshake.
//!
//! The parts: `file` (the YAML as written; its errors and `tls_server_config`, with the server
//! config built from it, are `crate::tls`'s), `auth` (basic auth and its bcrypt cache),
//! `rate_limit`; this file holds them together, swaps them on reload and wraps requests.

mod auth;
mod bcrypt_queue;
mod file;
mod rate_limit;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::Request;
use axum::response::Response;
use http::header::{AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio_rustls::TlsAcceptor;

use self::auth::BasicAuth;
use self::file::{build_headers, Ctx, RawConfig};
use self::rate_limit::{build_rate_limiter, RateLimiter};
use self::bcrypt_queue::BcryptQueue;
use super::conn::ClientAddr;
use super::response::plain;
use crate::tls::build_server_config;

pub use self::auth::AuthOutcome;
pub use self::bcrypt_queue::AuthLimits;
pub use self::file::WebConfigError;

/// A loaded, validated web config. Cheap to share behind an `Arc`; see [`SharedWebConfig`].
pub struct WebConfig {
    tls: Option<TlsAcceptor>,
    http2: bool,
    headers: HeaderMap,
    auth: BasicAuth,
    rate_limiter: Option<RateLimiter>,
}

impl fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("http2", &self.http2)
            .field("headers", &self.headers)
            .field("users", &self.auth.user_names())
            .field("rate_limit", &self.rate_limiter.is_some())
            .finish()
    }
}

impl Default for WebConfig {
    /// No TLS, no auth, no extra headers: what runs without `--web.config.file`.
    fn default() -> Self {
        WebConfig {
            tls: None,
            http2: true,
            headers: HeaderMap::new(),
            auth: BasicAuth::default(),
            rate_limiter: None,
        }
    }
}

impl WebConfig {
    /// Reads and validates the file: YAML shape, certificates and key, client CAs, cipher suites,
    /// headers and bcrypt hashes. Nothing is left to fail later at handshake or request time.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let dir = path.parent().unwrap_or_else(|| Path::new(""));
        let ctx = Ctx {
            kind: "web config",
            path,
            dir,
        };
        let content = std::fs::read_to_string(path).map_err(|e| ctx.read_error(&e))?;
        Self::parse(&content, path, dir)
    }

    fn parse(content: &str, path: &Path, dir: &Path) -> Result<WebConfig, WebConfigError> {
        let ctx = Ctx {
            kind: "web config",
            path,
            dir,
        };
        // An empty file (or only comments) is a YAML null document: no settings at all.
        let raw: Option<RawConfig> =
            serde_yaml::from_str(content).map_err(|e| ctx.parse_error(e))?;
        let raw = raw.unwrap_or_default();

        let http = raw.http_server_config.unwrap_or_default();
        let http2 = http.http2.unwrap_or(true);
        let headers = build_headers(&ctx, http.headers.unwrap_or_default())?;
        let alpn: &[&[u8]] = if http2 {
            &[b"h2", b"http/1.1"]
        } else {
            &[b"http/1.1"]
        };
        let tls = build_server_config(&ctx, raw.tls_server_config.unwrap_or_default(), alpn)?
            .map(TlsAcceptor::from);
        let auth = BasicAuth::from_file(&ctx, raw.basic_auth_users)?;
        let rate_limiter = build_rate_limiter(&ctx, raw.rate_limit.unwrap_or_default())?;

        Ok(WebConfig {
            tls,
            http2,
            headers,
            auth,
            rate_limiter,
        })
    }

    /// The acceptor for TLS listeners, `None` when the file configures no certificate (plain HTTP).
    pub fn tls_acceptor(&self) -> Option<TlsAcceptor> {
        self.tls.clone()
    }

    /// `http_server_config.http2` (default true). With TLS it decides whether `h2` is offered in ALPN.
    pub fn http2_enabled(&self) -> bool {
        self.http2
    }

    /// `http_server_config.headers`, added to every response that does not already set them.
    pub fn extra_headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// Whether `basic_auth_users` is set, so requests need credentials.
    pub fn auth_required(&self) -> bool {
        self.auth.required()
    }

    /// Checks basic auth on the calling thread. bcrypt takes tens of milliseconds on a miss, so async
    /// code must use [`WebConfig::authorize_async`] instead.
    pub fn authorize(&self, authorization_header: Option<&HeaderValue>) -> AuthOutcome {
        self.auth.authorize(authorization_header)
    }

    /// Checks basic auth, running bcrypt on the blocking pool through the bounded queue (see
    /// [`AuthLimits`]) and remembering successes so a busy pusher pays it once.
    async fn authorize_async(
        &self,
        authorization_header: Option<&HeaderValue>,
        client: Option<IpAddr>,
        queue: &Arc<BcryptQueue>,
    ) -> AuthOutcome {
        self.auth
            .authorize_async(authorization_header, client, queue)
            .await
    }
}

/// The current web config, swapped whole on reload (SIGHUP). Cloning shares the same config.
#[derive(Clone)]
pub struct SharedWebConfig {
    current: Arc<ArcSwap<WebConfig>>,
    path: Option<Arc<PathBuf>>,
    /// The bcrypt queue, kept across reloads.
    bcrypt: Arc<BcryptQueue>,
}

impl fmt::Debug for SharedWebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedWebConfig")
            .field("path", &self.path)
            .field("current", &*self.current.load())
            .finish()
    }
}

impl SharedWebConfig {
    /// Loads `path`, failing on an invalid file.
    pub fn load(path: &Path) -> Result<SharedWebConfig, WebConfigError> {
        let config = WebConfig::load(path)?;
        Ok(SharedWebConfig {
            current: Arc::new(ArcSwap::from_pointee(config)),
            path: Some(Arc::new(path.to_path_buf())),
            bcrypt: BcryptQueue::new(AuthLimits::default()),
        })
    }

    /// No `--web.config.file`: plain HTTP, no auth; [`SharedWebConfig::reload`] does nothing.
    pub fn disabled() -> SharedWebConfig {
        SharedWebConfig {
            current: Arc::new(ArcSwap::from_pointee(WebConfig::default())),
            path: None,
            bcrypt: BcryptQueue::new(AuthLimits::default()),
        }
    }

    /// Bounds the bcrypt checks of basic auth (`--web.auth.*` flags) for every clone made
    /// after this call.
    pub fn with_auth_limits(mut self, limits: AuthLimits) -> SharedWebConfig {
        self.bcrypt = BcryptQueue::new(limits);
        self
    }

    /// The file this config came from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref().map(PathBuf::as_path)
    }

    /// The config in force now.
    pub fn current(&self) -> Arc<WebConfig> {
        self.current.load_full()
    }

    /// Re-reads the file. On error the old config stays in force and the error is returned.
    pub fn reload(&self) -> Result<(), WebConfigError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let config = WebConfig::load(path)?;
        self.current.store(Arc::new(config));
        tracing::info!(path = %path.display(), "reloaded web config");
        Ok(())
    }
}

/// Answers `request` through the web config: the rate limit and basic auth first (refused
/// requests never reach `inner`), then the extra headers on whatever response comes back.
pub async fn with_web_config<F, Fut>(
    shared: &SharedWebConfig,
    request: Request,
    inner: F,
) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let config = shared.current();
    let client = request.extensions().get::<ClientAddr>().map(|c| c.0.ip());
    let mut response = if config.rate_limiter.as_ref().is_some_and(|l| !l.allow()) {
        status_text(StatusCode::TOO_MANY_REQUESTS)
    } else {
        match config
            .authorize_async(request.headers().get(AUTHORIZATION), client, &shared.bcrypt)
            .await
        {
            AuthOutcome::Allowed => inner(request).await,
            AuthOutcome::Busy => {
                let mut response = status_text(StatusCode::SERVICE_UNAVAILABLE);
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("1"));
                response
            }
            AuthOutcome::ClientBusy => status_text(StatusCode::TOO_MANY_REQUESTS),
            AuthOutcome::Denied => {
                let mut response = status_text(StatusCode::UNAUTHORIZED);
                response
                    .headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
                response
            }
        }
    };
    // Go sets these before the handler runs, so a handler's own value wins.
    for (name, value) in config.extra_headers() {
        response
            .headers_mut()
            .entry(name)
            .or_insert_with(|| value.clone());
    }
    response
}

/// What Go's `http.Error(w, http.StatusText(code), code)` writes.
fn status_text(status: StatusCode) -> Response {
    plain(status, status.canonical_reason().unwrap_or("Error"))
}
