//! The `--web.config.file` of the Prometheus exporter-toolkit: TLS, basic auth, extra response headers
//! and the rate limit, validated up front so a bad file stops the process before any port is bound.
//!
//! The file format is exporter-toolkit's (`docs/web-configuration.md`), parsed strictly: an unknown key
//! is an error. Relative paths are relative to the directory of the file. An empty file, or one without
//! a certificate, means plain HTTP.
//!
//! [`web_config_middleware`] covers every route:
//! - `429 Too Many Requests` when `rate_limit` is set and the bucket is empty;
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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use parking_lot::Mutex;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CipherSuite, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme, SupportedProtocolVersion,
};
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// Why a web config file was rejected. Every message names the file; most also name the field.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    /// The file itself could not be read.
    #[error("web config file \"{}\": {message}", path.display())]
    Read { path: PathBuf, message: String },
    /// The file is not valid YAML or does not have the exporter-toolkit shape (unknown key, wrong type).
    #[error("web config file \"{}\": {message}", path.display())]
    Parse { path: PathBuf, message: String },
    /// A field has a value pushgate cannot use (missing file, bad certificate, unsupported cipher, ...).
    #[error("web config file \"{}\": {field}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        field: String,
        message: String,
    },
}

/// The result of checking a request's `Authorization` header against `basic_auth_users`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    Allowed,
    Denied,
}

// ---------------------------------------------------------------------------------------------------
// The file as written.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<RawHttp>,
    rate_limit: Option<RawRateLimit>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_ca_file: Option<String>,
    client_auth_type: Option<String>,
    cipher_suites: Option<Vec<String>>,
    curve_preferences: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    // Go ignores it since 1.17; accepted so existing files still load.
    #[allow(dead_code)]
    prefer_server_cipher_suites: Option<bool>,
    client_allowed_sans: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    burst: Option<u32>,
    interval: Option<String>,
}

/// Builds errors that name the file being loaded.
struct Ctx<'a> {
    path: &'a Path,
    dir: &'a Path,
}

impl Ctx<'_> {
    fn invalid(&self, field: impl Into<String>, message: impl fmt::Display) -> WebConfigError {
        WebConfigError::Invalid {
            path: self.path.to_path_buf(),
            field: field.into(),
            message: message.to_string(),
        }
    }

    /// Reads a file named in the config, relative to the config file's directory.
    fn read(&self, field: &str, name: &str) -> Result<Vec<u8>, WebConfigError> {
        let full = self.dir.join(name);
        std::fs::read(&full)
            .map_err(|e| self.invalid(format!("{field} \"{name}\""), io_message(&e)))
    }
}

fn io_message(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        std::io::ErrorKind::IsADirectory => "is a directory".to_owned(),
        _ => error.to_string().to_lowercase(),
    }
}

// ---------------------------------------------------------------------------------------------------
// The validated config.

/// A loaded, validated web config. Cheap to share behind an `Arc`; see [`SharedWebConfig`].
pub struct WebConfig {
    tls: Option<TlsAcceptor>,
    http2: bool,
    headers: HeaderMap,
    users: HashMap<String, String>,
    /// Hash checked for unknown users so they take as long as known ones (the costliest configured).
    dummy_hash: Option<String>,
    auth_cache: Arc<AuthCache>,
    rate_limiter: Option<RateLimiter>,
}

impl fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut users: Vec<&String> = self.users.keys().collect();
        users.sort();
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("http2", &self.http2)
            .field("headers", &self.headers)
            .field("users", &users)
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
            users: HashMap::new(),
            dummy_hash: None,
            auth_cache: Arc::new(AuthCache::new()),
            rate_limiter: None,
        }
    }
}

impl WebConfig {
    /// Reads and validates the file: YAML shape, certificates and key, client CAs, cipher suites,
    /// headers and bcrypt hashes. Nothing is left to fail later at handshake or request time.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let content = std::fs::read_to_string(path).map_err(|e| WebConfigError::Read {
            path: path.to_path_buf(),
            message: io_message(&e),
        })?;
        let dir = path.parent().unwrap_or_else(|| Path::new(""));
        Self::parse(&content, path, dir)
    }

    fn parse(content: &str, path: &Path, dir: &Path) -> Result<WebConfig, WebConfigError> {
        let ctx = Ctx { path, dir };
        // An empty file (or only comments) is a YAML null document: no settings at all.
        let raw: Option<RawConfig> =
            serde_yaml::from_str(content).map_err(|e| WebConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let raw = raw.unwrap_or_default();

        let http = raw.http_server_config.unwrap_or_default();
        let http2 = http.http2.unwrap_or(true);
        let headers = build_headers(&ctx, http.headers.unwrap_or_default())?;
        let tls = build_tls(&ctx, raw.tls_server_config.unwrap_or_default(), http2)?;
        let users: HashMap<String, String> = raw
            .basic_auth_users
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut dummy: Option<(u32, &String)> = None;
        let mut names: Vec<&String> = users.keys().collect();
        names.sort();
        for name in names {
            let hash = &users[name];
            let parts: bcrypt::HashParts = hash.parse().map_err(|e| {
                ctx.invalid(
                    format!("basic_auth_users: {name:?}"),
                    format!("not a bcrypt hash: {e}").to_lowercase(),
                )
            })?;
            if dummy.is_none_or(|(cost, _)| parts.get_cost() > cost) {
                dummy = Some((parts.get_cost(), hash));
            }
        }
        let dummy_hash = dummy.map(|(_, hash)| hash.clone());
        let rate_limiter = build_rate_limiter(&ctx, raw.rate_limit.unwrap_or_default())?;

        Ok(WebConfig {
            tls,
            http2,
            headers,
            users,
            dummy_hash,
            auth_cache: Arc::new(AuthCache::new()),
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
        !self.users.is_empty()
    }

    /// Checks basic auth on the calling thread. bcrypt takes tens of milliseconds on a miss, so async
    /// code must use [`WebConfig::authorize_async`] instead.
    pub fn authorize(&self, authorization_header: Option<&HeaderValue>) -> AuthOutcome {
        match self.prepare(authorization_header) {
            AuthCheck::Done(outcome) => outcome,
            AuthCheck::Verify(job) => job.run(),
        }
    }

    /// Checks basic auth, running bcrypt on the blocking pool (at most one per core at a time, like
    /// exporter-toolkit's mutex) and remembering successes so a busy pusher pays it once.
    pub async fn authorize_async(&self, authorization_header: Option<&HeaderValue>) -> AuthOutcome {
        let job = match self.prepare(authorization_header) {
            AuthCheck::Done(outcome) => return outcome,
            AuthCheck::Verify(job) => job,
        };
        let Ok(_permit) = BCRYPT_SLOTS.acquire().await else {
            return AuthOutcome::Denied;
        };
        // A burst of requests with the same good credentials waits here; only the first pays bcrypt.
        if job.known_user && job.cache.contains(&job.cache_key) {
            return AuthOutcome::Allowed;
        }
        tokio::task::spawn_blocking(move || job.run())
            .await
            .unwrap_or(AuthOutcome::Denied)
    }

    fn prepare(&self, authorization_header: Option<&HeaderValue>) -> AuthCheck {
        if self.users.is_empty() {
            return AuthCheck::Done(AuthOutcome::Allowed);
        }
        let Some((user, password)) = authorization_header.and_then(parse_basic_auth) else {
            return AuthCheck::Done(AuthOutcome::Denied);
        };
        let known = std::str::from_utf8(&user)
            .ok()
            .and_then(|user| self.users.get(user));
        let (hash, known_user) = match (known, &self.dummy_hash) {
            (Some(hash), _) => (hash.clone(), true),
            (None, Some(dummy)) => (dummy.clone(), false),
            (None, None) => return AuthCheck::Done(AuthOutcome::Denied),
        };
        let cache_key = self.auth_cache.key(&user, &hash, &password);
        if known_user && self.auth_cache.contains(&cache_key) {
            return AuthCheck::Done(AuthOutcome::Allowed);
        }
        AuthCheck::Verify(BcryptJob {
            password,
            hash,
            known_user,
            cache_key,
            cache: Arc::clone(&self.auth_cache),
        })
    }
}

// ---------------------------------------------------------------------------------------------------
// Basic auth.

/// Concurrent bcrypt checks, process-wide: a flood of bad passwords must not take every core.
static BCRYPT_SLOTS: LazyLock<Semaphore> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Semaphore::new(cores)
});

/// `Basic <base64(user:password)>`, scheme case-insensitive as in Go's `Request.BasicAuth`.
fn parse_basic_auth(header: &HeaderValue) -> Option<(Vec<u8>, Vec<u8>)> {
    let bytes = header.as_bytes();
    let prefix = b"basic ";
    if bytes.len() < prefix.len() || !bytes[..prefix.len()].eq_ignore_ascii_case(prefix) {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&bytes[prefix.len()..])
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let password = decoded[colon + 1..].to_vec();
    let mut user = decoded;
    user.truncate(colon);
    Some((user, password))
}

enum AuthCheck {
    Done(AuthOutcome),
    Verify(BcryptJob),
}

struct BcryptJob {
    password: Vec<u8>,
    hash: String,
    known_user: bool,
    cache_key: CacheKey,
    cache: Arc<AuthCache>,
}

impl BcryptJob {
    fn run(self) -> AuthOutcome {
        // Unknown users are checked against a real hash too, then denied whatever the result.
        let matches = bcrypt::verify(&self.password, &self.hash).unwrap_or(false);
        if matches && self.known_user {
            self.cache.insert(self.cache_key);
            AuthOutcome::Allowed
        } else {
            AuthOutcome::Denied
        }
    }
}

type CacheKey = [u8; 32];

/// Successful (user, password, hash) checks, stored as HMAC-SHA256 under a random per-process key so
/// neither the passwords nor an unsalted digest of them sit in memory. Only successes are stored, so
/// wrong guesses cannot push good entries out.
struct AuthCache {
    key: ring::hmac::Key,
    entries: Mutex<HashSet<CacheKey>>,
}

const AUTH_CACHE_CAPACITY: usize = 1024;

impl AuthCache {
    fn new() -> Self {
        let rng = ring::rand::SystemRandom::new();
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .expect("the system random generator should be available");
        AuthCache {
            key,
            entries: Mutex::new(HashSet::new()),
        }
    }

    fn key(&self, user: &[u8], hash: &str, password: &[u8]) -> CacheKey {
        let mut ctx = ring::hmac::Context::with_key(&self.key);
        // Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        for part in [user, hash.as_bytes(), password] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(ctx.sign().as_ref());
        key
    }

    fn contains(&self, key: &CacheKey) -> bool {
        self.entries.lock().contains(key)
    }

    fn insert(&self, key: CacheKey) {
        let mut entries = self.entries.lock();
        if entries.len() >= AUTH_CACHE_CAPACITY && !entries.contains(&key) {
            if let Some(victim) = entries.iter().next().copied() {
                entries.remove(&victim);
            }
        }
        entries.insert(key);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().len()
    }
}

// ---------------------------------------------------------------------------------------------------
// Response headers and rate limit.

/// exporter-toolkit allows only these headers, and for two of them only these values.
const ALLOWED_HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

fn build_headers(
    ctx: &Ctx<'_>,
    raw: BTreeMap<String, String>,
) -> Result<HeaderMap, WebConfigError> {
    let mut headers = HeaderMap::new();
    for (name, value) in raw {
        let field = format!("http_server_config: headers: {name:?}");
        let Some((_, allowed)) = ALLOWED_HEADERS
            .iter()
            .find(|(allowed, _)| allowed.eq_ignore_ascii_case(&name))
        else {
            return Err(ctx.invalid(field, "this header can not be configured"));
        };
        if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
            return Err(ctx.invalid(
                field,
                format!("invalid value {value:?}, expected one of {allowed:?}"),
            ));
        }
        let header_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ctx.invalid(field.clone(), "invalid header name"))?;
        let header_value = HeaderValue::from_str(&value)
            .map_err(|_| ctx.invalid(field, format!("invalid header value {value:?}")))?;
        headers.insert(header_name, header_value);
    }
    Ok(headers)
}

/// A token bucket like Go's `rate.NewLimiter(rate.Every(interval), burst)`.
struct RateLimiter {
    interval: Duration,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    fn allow(&self) -> bool {
        let mut state = self.state.lock();
        let now = Instant::now();
        let refill = now.duration_since(state.1).as_secs_f64() / self.interval.as_secs_f64();
        state.0 = (state.0 + refill).min(self.burst);
        state.1 = now;
        if state.0 >= 1.0 {
            state.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

fn build_rate_limiter(
    ctx: &Ctx<'_>,
    raw: RawRateLimit,
) -> Result<Option<RateLimiter>, WebConfigError> {
    let interval = match raw.interval.as_deref() {
        None | Some("") => return Ok(None),
        Some(text) => crate::time::parse_go_duration(text).map_err(|_| {
            ctx.invalid("rate_limit: interval", format!("invalid duration {text:?}"))
        })?,
    };
    if interval.is_zero() {
        return Ok(None);
    }
    let burst = f64::from(raw.burst.unwrap_or(0));
    Ok(Some(RateLimiter {
        interval,
        burst,
        state: Mutex::new((burst, Instant::now())),
    }))
}

// ---------------------------------------------------------------------------------------------------
// TLS.

fn parse_version(
    ctx: &Ctx<'_>,
    field: &str,
    value: Option<&str>,
) -> Result<Option<&'static SupportedProtocolVersion>, WebConfigError> {
    match value {
        None | Some("") => Ok(None),
        Some("TLS12") => Ok(Some(&rustls::version::TLS12)),
        Some("TLS13") => Ok(Some(&rustls::version::TLS13)),
        Some(v @ ("TLS10" | "TLS11")) => Err(ctx.invalid(
            format!("tls_server_config: {field}"),
            format!("{v} is unsupported, use TLS12 or TLS13"),
        )),
        Some(v) => Err(ctx.invalid(
            format!("tls_server_config: {field}"),
            format!("unknown tls version {v:?}"),
        )),
    }
}

/// Go's `tls.CipherSuites()` names mapped to rustls; `None` for the suites rustls does not implement.
fn cipher_suite_by_go_name(name: &str) -> Option<Option<CipherSuite>> {
    use CipherSuite as C;
    let suite = match name {
        "TLS_AES_128_GCM_SHA256" => Some(C::TLS13_AES_128_GCM_SHA256),
        "TLS_AES_256_GCM_SHA384" => Some(C::TLS13_AES_256_GCM_SHA384),
        "TLS_CHACHA20_POLY1305_SHA256" => Some(C::TLS13_CHACHA20_POLY1305_SHA256),
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => {
            Some(C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
        }
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => {
            Some(C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384)
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => Some(C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => Some(C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384),
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
        | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => {
            Some(C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)
        }
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" => {
            Some(C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256)
        }
        "TLS_RSA_WITH_AES_128_CBC_SHA"
        | "TLS_RSA_WITH_AES_256_CBC_SHA"
        | "TLS_RSA_WITH_AES_128_GCM_SHA256"
        | "TLS_RSA_WITH_AES_256_GCM_SHA384"
        | "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"
        | "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA" => None,
        _ => return None,
    };
    Some(suite)
}

fn build_provider(ctx: &Ctx<'_>, raw: &RawTls) -> Result<CryptoProvider, WebConfigError> {
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(names) = raw.cipher_suites.as_ref().filter(|n| !n.is_empty()) {
        // As in Go, the list only governs TLS 1.2; TLS 1.3 suites stay on.
        let mut suites: Vec<_> = provider
            .cipher_suites
            .iter()
            .filter(|s| s.tls13().is_some())
            .copied()
            .collect();
        for name in names {
            let field = "tls_server_config: cipher_suites";
            let id = match cipher_suite_by_go_name(name) {
                None => return Err(ctx.invalid(field, format!("unknown cipher suite {name:?}"))),
                Some(None) => {
                    return Err(ctx.invalid(
                        field,
                        format!("cipher suite {name:?} is unsupported (rustls has no cbc or rsa key exchange suites)"),
                    ))
                }
                Some(Some(id)) => id,
            };
            if let Some(suite) = provider.cipher_suites.iter().find(|s| s.suite() == id) {
                if suite.tls13().is_none() && !suites.iter().any(|s| s.suite() == id) {
                    suites.push(*suite);
                }
            }
        }
        provider.cipher_suites = suites;
    }
    if let Some(names) = raw.curve_preferences.as_ref().filter(|n| !n.is_empty()) {
        let mut groups = Vec::new();
        for name in names {
            let group = match name.as_str() {
                "X25519" => rustls::crypto::ring::kx_group::X25519,
                "CurveP256" => rustls::crypto::ring::kx_group::SECP256R1,
                "CurveP384" => rustls::crypto::ring::kx_group::SECP384R1,
                "CurveP521" => {
                    return Err(ctx.invalid(
                        "tls_server_config: curve_preferences",
                        "CurveP521 is unsupported",
                    ))
                }
                other => {
                    return Err(ctx.invalid(
                        "tls_server_config: curve_preferences",
                        format!("unknown curve {other:?}"),
                    ))
                }
            };
            groups.push(group);
        }
        provider.kx_groups = groups;
    }
    Ok(provider)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ClientAuth {
    None,
    Request,
    RequireAny,
    VerifyIfGiven,
    RequireAndVerify,
}

fn nonempty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

fn build_tls(
    ctx: &Ctx<'_>,
    raw: RawTls,
    http2: bool,
) -> Result<Option<TlsAcceptor>, WebConfigError> {
    let min = parse_version(ctx, "min_version", raw.min_version.as_deref())?;
    let max = parse_version(ctx, "max_version", raw.max_version.as_deref())?;
    let provider = build_provider(ctx, &raw)?;

    let enabled = [
        &raw.cert,
        &raw.key,
        &raw.cert_file,
        &raw.key_file,
        &raw.client_ca,
        &raw.client_ca_file,
        &raw.client_auth_type,
    ]
    .iter()
    .any(|v| nonempty(v).is_some());
    if !enabled {
        return Ok(None);
    }

    let rank = |v: &SupportedProtocolVersion| {
        if v.version == rustls::ProtocolVersion::TLSv1_2 {
            0
        } else {
            1
        }
    };
    let (lo, hi) = (min.map_or(0, rank), max.map_or(1, rank));
    if lo > hi {
        return Err(ctx.invalid(
            "tls_server_config",
            "min_version is greater than max_version",
        ));
    }
    let versions: Vec<&'static SupportedProtocolVersion> =
        [&rustls::version::TLS12, &rustls::version::TLS13][lo..=hi].to_vec();
    if versions.contains(&&rustls::version::TLS12)
        && !provider.cipher_suites.iter().any(|s| s.tls13().is_none())
    {
        return Err(ctx.invalid(
            "tls_server_config: cipher_suites",
            "no tls 1.2 cipher suite listed while tls 1.2 is allowed",
        ));
    }

    let cert_pem = match (nonempty(&raw.cert_file), nonempty(&raw.cert)) {
        (Some(file), _) => ctx.read("tls_server_config: cert_file", file)?,
        (None, Some(text)) => text.as_bytes().to_vec(),
        (None, None) => {
            return Err(ctx.invalid("tls_server_config", "missing one of cert or cert_file"))
        }
    };
    let key_pem = match (nonempty(&raw.key_file), nonempty(&raw.key)) {
        (Some(file), _) => ctx.read("tls_server_config: key_file", file)?,
        (None, Some(text)) => text.as_bytes().to_vec(),
        (None, None) => {
            return Err(ctx.invalid("tls_server_config", "missing one of key or key_file"))
        }
    };
    let cert_field = match nonempty(&raw.cert_file) {
        Some(file) => format!("tls_server_config: cert_file \"{file}\""),
        None => "tls_server_config: cert".to_owned(),
    };
    let key_field = match nonempty(&raw.key_file) {
        Some(file) => format!("tls_server_config: key_file \"{file}\""),
        None => "tls_server_config: key".to_owned(),
    };
    let chain = parse_certs(&cert_pem).map_err(|m| ctx.invalid(cert_field.clone(), m))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| ctx.invalid(key_field.clone(), format!("invalid pem: {e}")))?
        .ok_or_else(|| ctx.invalid(key_field.clone(), "no private key found"))?;

    let client_auth = match nonempty(&raw.client_auth_type).unwrap_or("NoClientCert") {
        "NoClientCert" => ClientAuth::None,
        "RequestClientCert" => ClientAuth::Request,
        "RequireAnyClientCert" | "RequireClientCert" => ClientAuth::RequireAny,
        "VerifyClientCertIfGiven" => ClientAuth::VerifyIfGiven,
        "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerify,
        other => {
            return Err(ctx.invalid(
                "tls_server_config: client_auth_type",
                format!("invalid client auth type {other:?}"),
            ))
        }
    };

    let client_ca = match (nonempty(&raw.client_ca_file), nonempty(&raw.client_ca)) {
        (Some(file), _) => {
            let field = format!("tls_server_config: client_ca_file \"{file}\"");
            let pem = ctx.read("tls_server_config: client_ca_file", file)?;
            Some((field, pem))
        }
        (None, Some(text)) => Some((
            "tls_server_config: client_ca".to_owned(),
            text.as_bytes().to_vec(),
        )),
        (None, None) => None,
    };
    if client_ca.is_some() && client_auth == ClientAuth::None {
        return Err(ctx.invalid(
            "tls_server_config",
            "client CA's have been configured without a client_auth_type",
        ));
    }
    let roots = match client_ca {
        Some((field, pem)) => {
            let mut store = RootCertStore::empty();
            for cert in parse_certs(&pem).map_err(|m| ctx.invalid(field.clone(), m))? {
                store.add(cert).map_err(|e| {
                    ctx.invalid(field.clone(), format!("invalid ca certificate: {e}"))
                })?;
            }
            Some(Arc::new(store))
        }
        None => None,
    };

    let provider = Arc::new(provider);
    let signature_algorithms = provider.signature_verification_algorithms;
    let verifier: Option<Arc<dyn ClientCertVerifier>> = match client_auth {
        ClientAuth::None => None,
        ClientAuth::Request | ClientAuth::RequireAny => Some(Arc::new(AnyClientCert {
            mandatory: client_auth == ClientAuth::RequireAny,
            algorithms: signature_algorithms,
        })),
        ClientAuth::VerifyIfGiven | ClientAuth::RequireAndVerify => {
            let Some(roots) = roots else {
                return Err(ctx.invalid(
                    "tls_server_config: client_ca_file",
                    "required when client_auth_type verifies client certificates",
                ));
            };
            let builder = WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&provider));
            let builder = if client_auth == ClientAuth::VerifyIfGiven {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            Some(builder.build().map_err(|e| {
                ctx.invalid(
                    "tls_server_config: client_ca_file",
                    e.to_string().to_lowercase(),
                )
            })?)
        }
    };
    let verifier = match (raw.client_allowed_sans, verifier) {
        (Some(sans), Some(inner))
            if matches!(client_auth, ClientAuth::RequireAny | ClientAuth::RequireAndVerify) =>
        {
            Some(Arc::new(AllowedSans { inner, sans }) as Arc<dyn ClientCertVerifier>)
        }
        (Some(_), _) => {
            return Err(ctx.invalid(
                "tls_server_config: client_allowed_sans",
                "requires client_auth_type to be one of RequireAnyClientCert or RequireAndVerifyClientCert",
            ))
        }
        (None, verifier) => verifier,
    };

    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| ctx.invalid("tls_server_config", e.to_string().to_lowercase()))?;
    let builder = match verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        ctx.invalid(
            key_field,
            format!("does not fit the certificate: {e}").to_lowercase(),
        )
    })?;
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid pem: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate found".to_owned());
    }
    for cert in &certs {
        x509_parser::parse_x509_certificate(cert)
            .map_err(|e| format!("invalid certificate: {e}").to_lowercase())?;
    }
    Ok(certs)
}

/// `RequestClientCert` / `RequireAnyClientCert`: take any certificate without checking its chain, but
/// still check that the client holds its key.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `client_allowed_sans`: after the configured check, the client certificate must carry one of the
/// listed DNS, email, IP or URI subject alternative names.
#[derive(Debug)]
struct AllowedSans {
    inner: Arc<dyn ClientCertVerifier>,
    sans: Vec<String>,
}

fn certificate_sans(der: &[u8]) -> Result<Vec<String>, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("error parsing client certificate: {e}"))?;
    let Some(extension) = cert
        .subject_alternative_name()
        .map_err(|e| format!("error parsing client certificate: {e}"))?
    else {
        return Ok(Vec::new());
    };
    let mut sans = Vec::new();
    for name in &extension.value.general_names {
        match name {
            GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                sans.push((*s).to_owned())
            }
            GeneralName::IPAddress(bytes) => {
                if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                    sans.push(std::net::Ipv4Addr::from(v4).to_string());
                } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                    let ip = std::net::Ipv6Addr::from(v6);
                    // Go prints v4-mapped addresses as plain IPv4.
                    match ip.to_ipv4_mapped() {
                        Some(v4) => sans.push(v4.to_string()),
                        None => sans.push(ip.to_string()),
                    }
                }
            }
            _ => {}
        }
    }
    Ok(sans)
}

impl ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let found = certificate_sans(end_entity).map_err(rustls::Error::General)?;
        if found.iter().any(|san| self.sans.contains(san)) {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

// ---------------------------------------------------------------------------------------------------
// Reloading and the middleware.

/// The current web config, swapped whole on reload (SIGHUP). Cloning shares the same config.
#[derive(Clone)]
pub struct SharedWebConfig {
    current: Arc<ArcSwap<WebConfig>>,
    path: Option<Arc<PathBuf>>,
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
        })
    }

    /// No `--web.config.file`: plain HTTP, no auth; [`SharedWebConfig::reload`] does nothing.
    pub fn disabled() -> SharedWebConfig {
        SharedWebConfig {
            current: Arc::new(ArcSwap::from_pointee(WebConfig::default())),
            path: None,
        }
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
    let mut response = if config.rate_limiter.as_ref().is_some_and(|l| !l.allow()) {
        plain_error(StatusCode::TOO_MANY_REQUESTS)
    } else {
        match config
            .authorize_async(request.headers().get(AUTHORIZATION))
            .await
        {
            AuthOutcome::Allowed => inner(request).await,
            AuthOutcome::Denied => {
                let mut response = plain_error(StatusCode::UNAUTHORIZED);
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

/// The body Go's `http.Error` writes: the status text and a newline.
fn plain_error(status: StatusCode) -> Response {
    let body = format!("{}\n", status.canonical_reason().unwrap_or("Error"));
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response.headers_mut().insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// dave / dave123, from exporter-toolkit's `web/testdata/web_config_users_noTLS.good.yml`.
    const DAVE_HASH: &str = "$2y$10$2UXri9cIDdgeKjBo4Rlpx.U3ZLDV8X1IxKmsfOvhcM5oXQt/mLmXq";
    /// The hash COMPAT.md gives for dave: it is exporter-toolkit's timing dummy, the hash of
    /// "fakepassword", not of "dave123".
    const COMPAT_MD_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";

    fn write_config(dir: &Path, content: &str) -> PathBuf {
        let path = dir.join("web.yml");
        std::fs::write(&path, content).expect("temp dir should be writable");
        path
    }

    fn basic(user: &str, password: &str) -> HeaderValue {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {encoded}")).expect("base64 is a valid header")
    }

    fn dave_config() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write_config(
            dir.path(),
            &format!("basic_auth_users:\n  dave: {DAVE_HASH}\n"),
        );
        (dir, path)
    }

    #[test]
    fn empty_file_is_plain_http_without_auth() {
        let dir = tempfile::tempdir().expect("temp dir");
        for content in ["", "# only a comment\n", "{}", "tls_server_config:\n"] {
            let config = WebConfig::load(&write_config(dir.path(), content)).expect(content);
            assert!(config.tls_acceptor().is_none());
            assert!(config.http2_enabled());
            assert!(config.extra_headers().is_empty());
            assert_eq!(config.authorize(None), AuthOutcome::Allowed);
        }
    }

    #[test]
    fn dave_is_allowed_and_everything_else_denied() {
        let (_dir, path) = dave_config();
        let config = WebConfig::load(&path).expect("valid config");
        assert!(config.auth_required());
        assert_eq!(
            config.authorize(Some(&basic("dave", "dave123"))),
            AuthOutcome::Allowed
        );
        assert_eq!(
            config.authorize(Some(&basic("dave", "dave124"))),
            AuthOutcome::Denied
        );
        assert_eq!(
            config.authorize(Some(&basic("eve", "dave123"))),
            AuthOutcome::Denied
        );
        assert_eq!(config.authorize(Some(&basic("", ""))), AuthOutcome::Denied);
        assert_eq!(config.authorize(None), AuthOutcome::Denied);
        let lowercase = HeaderValue::from_static("basic ZGF2ZTpkYXZlMTIz");
        assert_eq!(config.authorize(Some(&lowercase)), AuthOutcome::Allowed);
        let malformed = [
            HeaderValue::from_static("Bearer ZGF2ZTpkYXZlMTIz"),
            HeaderValue::from_static("Basic"),
            HeaderValue::from_static("Basic "),
            HeaderValue::from_static("Basic !!!not-base64!!!"),
            HeaderValue::from_static("Basic ZGF2ZWRhdmUxMjM="), // no colon
            HeaderValue::from_bytes(b"Basic \xff\xfe").expect("obs-text is a valid header value"),
            HeaderValue::from_str(&format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(b"\xff\xfe:dave123")
            ))
            .expect("base64 is a valid header"),
        ];
        for header in &malformed {
            assert_eq!(
                config.authorize(Some(header)),
                AuthOutcome::Denied,
                "{header:?}"
            );
        }
    }

    #[test]
    fn compat_md_hash_is_fakepassword() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write_config(
            dir.path(),
            &format!("basic_auth_users:\n  dave: {COMPAT_MD_HASH}\n"),
        );
        let config = WebConfig::load(&path).expect("valid config");
        assert_eq!(
            config.authorize(Some(&basic("dave", "dave123"))),
            AuthOutcome::Denied
        );
        assert_eq!(
            config.authorize(Some(&basic("dave", "fakepassword"))),
            AuthOutcome::Allowed
        );
    }

    #[test]
    fn successes_are_cached_and_failures_are_not() {
        let (_dir, path) = dave_config();
        let config = WebConfig::load(&path).expect("valid config");
        assert_eq!(
            config.authorize(Some(&basic("dave", "nope"))),
            AuthOutcome::Denied
        );
        assert_eq!(
            config.authorize(Some(&basic("mallory", "x"))),
            AuthOutcome::Denied
        );
        assert_eq!(config.auth_cache.len(), 0);
        assert_eq!(
            config.authorize(Some(&basic("dave", "dave123"))),
            AuthOutcome::Allowed
        );
        assert_eq!(config.auth_cache.len(), 1);
        let started = Instant::now();
        for _ in 0..1000 {
            assert_eq!(
                config.authorize(Some(&basic("dave", "dave123"))),
                AuthOutcome::Allowed
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "cached checks should skip bcrypt"
        );
    }

    #[test]
    fn auth_cache_is_bounded() {
        let cache = AuthCache::new();
        for i in 0..(AUTH_CACHE_CAPACITY + 10) {
            cache.insert(cache.key(i.to_string().as_bytes(), "h", b"p"));
        }
        assert_eq!(cache.len(), AUTH_CACHE_CAPACITY);
        assert_ne!(cache.key(b"ab", "c", b""), cache.key(b"a", "bc", b""));
    }

    #[tokio::test]
    async fn authorize_async_runs_bcrypt_off_the_runtime() {
        let (_dir, path) = dave_config();
        let config = Arc::new(WebConfig::load(&path).expect("valid config"));
        // Concurrent first checks on a single-threaded runtime: they only finish if bcrypt runs
        // elsewhere, and the cache ends up with the one entry.
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let config = Arc::clone(&config);
            tasks.spawn(async move {
                config
                    .authorize_async(Some(&basic("dave", "dave123")))
                    .await
            });
        }
        while let Some(outcome) = tasks.join_next().await {
            assert_eq!(
                outcome.expect("task should not panic"),
                AuthOutcome::Allowed
            );
        }
        assert_eq!(config.auth_cache.len(), 1);
        assert_eq!(
            config.authorize_async(Some(&basic("bob", "dave123"))).await,
            AuthOutcome::Denied
        );
        assert_eq!(config.authorize_async(None).await, AuthOutcome::Denied);
    }

    fn load_err(content: &str) -> (String, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write_config(dir.path(), content);
        let error = WebConfig::load(&path).expect_err(content).to_string();
        (error, path)
    }

    #[test]
    fn unknown_keys_are_errors() {
        let (error, _) = load_err("tls_server_config:\n  cert_fle: a.pem\n");
        assert!(error.contains("cert_fle"), "{error}");
        let (error, _) = load_err("basic_auth_user:\n  dave: x\n");
        assert!(error.contains("basic_auth_user"), "{error}");
    }

    #[test]
    fn missing_cert_file_names_file_and_field() {
        let (error, path) = load_err("tls_server_config:\n  cert_file: a.pem\n  key_file: a.key\n");
        assert_eq!(
            error,
            format!(
                "web config file \"{}\": tls_server_config: cert_file \"a.pem\": no such file",
                path.display()
            )
        );
    }

    #[test]
    fn missing_config_file_is_an_error() {
        let error = WebConfig::load(Path::new("/nonexistent/web.yml")).expect_err("no file");
        assert_eq!(
            error.to_string(),
            "web config file \"/nonexistent/web.yml\": no such file"
        );
    }

    #[test]
    fn invalid_values_are_rejected() {
        for (content, expected) in [
            ("tls_server_config:\n  min_version: TLS10\n", "unsupported"),
            ("tls_server_config:\n  max_version: TLS11\n", "unsupported"),
            (
                "tls_server_config:\n  min_version: TLS99\n",
                "unknown tls version",
            ),
            (
                "tls_server_config:\n  cipher_suites: [TLS_RSA_WITH_AES_128_CBC_SHA]\n",
                "unsupported",
            ),
            (
                "tls_server_config:\n  cipher_suites: [TLS_FOO]\n",
                "unknown cipher suite",
            ),
            (
                "tls_server_config:\n  curve_preferences: [CurveP521]\n",
                "unsupported",
            ),
            (
                "tls_server_config:\n  client_auth_type: RequireAnyClientCert\n",
                "missing one of cert",
            ),
            (
                "http_server_config:\n  headers:\n    Server: x\n",
                "can not be configured",
            ),
            (
                "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
                "invalid value",
            ),
            (
                "basic_auth_users:\n  dave: plaintext\n",
                "not a bcrypt hash",
            ),
            ("rate_limit:\n  interval: soon\n", "invalid duration"),
            ("http_server_config:\n  http2: maybe\n", "http2"),
        ] {
            let (error, _) = load_err(content);
            assert!(error.contains(expected), "{content:?}: {error}");
            assert!(error.starts_with("web config file \""), "{error}");
        }
    }

    #[test]
    fn allowed_headers_are_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write_config(
            dir.path(),
            "http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n    Strict-Transport-Security: max-age=31536000\n",
        );
        let config = WebConfig::load(&path).expect("valid config");
        assert!(!config.http2_enabled());
        assert_eq!(config.extra_headers()["x-frame-options"], "deny");
        assert_eq!(
            config.extra_headers()["strict-transport-security"],
            "max-age=31536000"
        );
    }

    #[test]
    fn reload_keeps_old_config_on_error() {
        let (dir, path) = dave_config();
        let shared = SharedWebConfig::load(&path).expect("valid config");
        assert!(shared.current().auth_required());
        std::fs::write(&path, "basic_auth_users:\n  dave: [oops\n").expect("writable");
        let error = shared.reload().expect_err("invalid yaml");
        assert!(error.to_string().contains("web.yml"), "{error}");
        assert_eq!(
            shared.current().authorize(Some(&basic("dave", "dave123"))),
            AuthOutcome::Allowed
        );
        write_config(dir.path(), "");
        shared.reload().expect("valid config");
        assert!(!shared.current().auth_required());
        SharedWebConfig::disabled()
            .reload()
            .expect("nothing to reload");
    }

    async fn call(
        shared: SharedWebConfig,
        auth: Option<HeaderValue>,
    ) -> (StatusCode, HeaderMap, String) {
        let mut request = http::Request::builder().uri("/metrics");
        if let Some(auth) = auth {
            request = request.header(AUTHORIZATION, auth);
        }
        let request = request.body(Body::empty()).expect("valid request");
        let response = with_web_config(&shared, request, |_| async { "ok".into_response() }).await;
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20)
            .await
            .expect("small body");
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    #[tokio::test]
    async fn middleware_enforces_basic_auth_and_adds_headers() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write_config(
            dir.path(),
            &format!(
                "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n    X-Frame-Options: sameorigin\nbasic_auth_users:\n  dave: {DAVE_HASH}\n"
            ),
        );
        let shared = SharedWebConfig::load(&path).expect("valid config");

        for auth in [
            None,
            Some(basic("dave", "wrong")),
            Some(HeaderValue::from_static("Basic %%")),
        ] {
            let (status, headers, body) = call(shared.clone(), auth).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            assert_eq!(headers[WWW_AUTHENTICATE], "Basic");
            assert_eq!(body.trim_end(), "Unauthorized");
            assert_eq!(headers["x-frame-options"], "sameorigin");
        }
        let (status, headers, body) = call(shared.clone(), Some(basic("dave", "dave123"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "ok");
        assert_eq!(headers["x-frame-options"], "sameorigin");
        assert_eq!(headers["x-content-type-options"], "nosniff");

        let (status, _, _) = call(SharedWebConfig::disabled(), None).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn middleware_rate_limits() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write_config(dir.path(), "rate_limit:\n  burst: 2\n  interval: 1h\n");
        let shared = SharedWebConfig::load(&path).expect("valid config");
        assert_eq!(call(shared.clone(), None).await.0, StatusCode::OK);
        assert_eq!(call(shared.clone(), None).await.0, StatusCode::OK);
        assert_eq!(
            call(shared.clone(), None).await.0,
            StatusCode::TOO_MANY_REQUESTS
        );
    }

    // --- TLS over loopback -------------------------------------------------------------------

    struct Pki {
        dir: tempfile::TempDir,
        ca_der: CertificateDer<'static>,
        client_chain: Vec<CertificateDer<'static>>,
        client_key: PrivateKeyDer<'static>,
    }

    /// A CA, a server cert for `localhost` and a client cert for `client.example`, written to a temp dir
    /// as ca.pem, server.pem, server.key.
    fn pki() -> Pki {
        let ca_key = KeyPair::generate().expect("keygen");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("self-signed ca");

        let server_key = KeyPair::generate().expect("keygen");
        let server = CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .signed_by(&server_key, &ca, &ca_key)
            .expect("server cert");

        let client_key = KeyPair::generate().expect("keygen");
        let mut client_params =
            CertificateParams::new(vec!["client.example".to_owned()]).expect("params");
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client = client_params
            .signed_by(&client_key, &ca, &ca_key)
            .expect("client cert");

        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("writable");
        std::fs::write(dir.path().join("server.pem"), server.pem()).expect("writable");
        std::fs::write(dir.path().join("server.key"), server_key.serialize_pem())
            .expect("writable");
        Pki {
            dir,
            ca_der: ca.der().clone(),
            client_chain: vec![client.der().clone()],
            client_key: PrivateKeyDer::try_from(client_key.serialize_der()).expect("pkcs8 key"),
        }
    }

    fn client_config(pki: &Pki, with_cert: bool) -> rustls::ClientConfig {
        let mut roots = RootCertStore::empty();
        roots.add(pki.ca_der.clone()).expect("valid ca");
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("default versions")
        .with_root_certificates(roots);
        if with_cert {
            builder
                .with_client_auth_cert(pki.client_chain.clone(), pki.client_key.clone_key())
                .expect("client cert")
        } else {
            builder.with_no_client_auth()
        }
    }

    /// One echo exchange over loopback; returns the server's and the client's view.
    async fn handshake(
        acceptor: TlsAcceptor,
        client: rustls::ClientConfig,
    ) -> (Result<(), String>, Result<Vec<u8>, String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("bound");
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
            let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 5];
            tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            tls.write_all(&buf).await.map_err(|e| e.to_string())?;
            tls.shutdown().await.map_err(|e| e.to_string())
        });
        let client = async move {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| e.to_string())?;
            let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("valid name");
            let mut tls = connector
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            tls.write_all(b"hello").await.map_err(|e| e.to_string())?;
            let mut buf = Vec::new();
            tls.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(buf)
        };
        let client = tokio::time::timeout(Duration::from_secs(10), client)
            .await
            .unwrap_or_else(|_| Err("client timed out".to_owned()));
        let server = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .map_err(|_| "server timed out".to_owned())
            .and_then(|joined| joined.map_err(|e| e.to_string()))
            .and_then(|r| r);
        (server, client)
    }

    #[tokio::test]
    async fn tls_handshake_over_loopback() {
        let pki = pki();
        let path = write_config(
            pki.dir.path(),
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  min_version: TLS12\n  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n",
        );
        let config = WebConfig::load(&path).expect("valid tls config");
        let acceptor = config.tls_acceptor().expect("tls configured");
        let (server, client) = handshake(acceptor, client_config(&pki, false)).await;
        assert_eq!(server, Ok(()));
        assert_eq!(client, Ok(b"hello".to_vec()));
    }

    #[tokio::test]
    async fn required_client_cert_rejects_clients_without_one() {
        let pki = pki();
        let path = write_config(
            pki.dir.path(),
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  client_ca_file: ca.pem\n  client_auth_type: RequireAndVerifyClientCert\n  client_allowed_sans: [client.example]\n",
        );
        let config = WebConfig::load(&path).expect("valid tls config");
        let acceptor = config.tls_acceptor().expect("tls configured");

        let (server, client) = handshake(acceptor.clone(), client_config(&pki, false)).await;
        assert!(
            server.is_err(),
            "server accepted a client without a certificate"
        );
        assert!(client.is_err());

        let (server, client) = handshake(acceptor, client_config(&pki, true)).await;
        assert_eq!(server, Ok(()));
        assert_eq!(client, Ok(b"hello".to_vec()));
    }

    #[tokio::test]
    async fn client_allowed_sans_rejects_other_names() {
        let pki = pki();
        let path = write_config(
            pki.dir.path(),
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  client_ca_file: ca.pem\n  client_auth_type: RequireAnyClientCert\n  client_allowed_sans: [someone.else]\n",
        );
        let config = WebConfig::load(&path).expect("valid tls config");
        let acceptor = config.tls_acceptor().expect("tls configured");
        let (server, _) = handshake(acceptor, client_config(&pki, true)).await;
        assert!(
            server.is_err(),
            "server accepted a certificate without an allowed san"
        );
    }

    #[test]
    fn mismatched_key_and_sans_without_required_cert_are_rejected() {
        let pki = pki();
        std::fs::write(
            pki.dir.path().join("other.key"),
            KeyPair::generate().expect("keygen").serialize_pem(),
        )
        .expect("writable");
        let path = write_config(
            pki.dir.path(),
            "tls_server_config:\n  cert_file: server.pem\n  key_file: other.key\n",
        );
        let error = WebConfig::load(&path)
            .expect_err("key does not match")
            .to_string();
        assert!(error.contains("key_file \"other.key\""), "{error}");

        let path = write_config(
            pki.dir.path(),
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  client_ca_file: ca.pem\n  client_auth_type: VerifyClientCertIfGiven\n  client_allowed_sans: [a]\n",
        );
        let error = WebConfig::load(&path)
            .expect_err("sans need a required cert")
            .to_string();
        assert!(error.contains("client_allowed_sans"), "{error}");

        let path = write_config(
            pki.dir.path(),
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  client_ca_file: ca.pem\n",
        );
        let error = WebConfig::load(&path)
            .expect_err("ca without auth type")
            .to_string();
        assert!(error.contains("client_auth_type"), "{error}");
    }
}
