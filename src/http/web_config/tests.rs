//! The web config through its facade: loading and its errors, basic auth, the request wrapper,
//! and TLS handshakes over loopback.

use std::time::Duration;

use axum::body::Body;
use axum::response::IntoResponse;
use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::auth::{AuthCache, AUTH_CACHE_CAPACITY};
use super::bcrypt_queue::BcryptQueue;
use super::*;

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
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
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
    assert_eq!(config.auth.cache.len(), 0);
    assert_eq!(
        config.authorize(Some(&basic("dave", "dave123"))),
        AuthOutcome::Allowed
    );
    assert_eq!(config.auth.cache.len(), 1);
    // Counted, not timed: none of a thousand checks of the cached credentials reaches bcrypt,
    // while a wrong password for the same user still does.
    let good = basic("dave", "dave123");
    let bcrypt_runs = (0..1000)
        .filter(|_| {
            let needed = config.auth.needs_bcrypt(Some(&good));
            assert_eq!(config.authorize(Some(&good)), AuthOutcome::Allowed);
            needed
        })
        .count();
    assert_eq!(bcrypt_runs, 0, "cached checks should skip bcrypt");
    assert!(config.auth.needs_bcrypt(Some(&basic("dave", "nope"))));
    assert_eq!(config.auth.cache.len(), 1);
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
    let queue = BcryptQueue::new(AuthLimits::default());
    // Concurrent first checks on a single-threaded runtime: they only finish if bcrypt runs
    // elsewhere, and the cache ends up with the one entry. No client address: only the
    // queue's total bounds them.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let config = Arc::clone(&config);
        let queue = Arc::clone(&queue);
        tasks.spawn(async move {
            config
                .authorize_async(Some(&basic("dave", "dave123")), None, &queue)
                .await
        });
    }
    while let Some(outcome) = tasks.join_next().await {
        assert_eq!(
            outcome.expect("task should not panic"),
            AuthOutcome::Allowed
        );
    }
    assert_eq!(config.auth.cache.len(), 1);
    assert_eq!(
        config
            .authorize_async(Some(&basic("bob", "dave123")), None, &queue)
            .await,
        AuthOutcome::Denied
    );
    assert_eq!(
        config.authorize_async(None, None, &queue).await,
        AuthOutcome::Denied
    );
}

#[tokio::test]
async fn checks_over_the_queue_or_the_client_share_are_refused_at_once() {
    let (_dir, path) = dave_config();
    let config = Arc::new(WebConfig::load(&path).expect("valid config"));
    let queue = BcryptQueue::new(AuthLimits {
        max_pending: 2,
        max_pending_per_client: 1,
    });
    let attacker = Some(std::net::IpAddr::from([127, 0, 0, 2]));
    let _held = queue.enter(attacker).expect("a place");
    // The attacker's share is taken: refused without bcrypt, whatever the password.
    assert_eq!(
        config
            .authorize_async(Some(&basic("dave", "wrong")), attacker, &queue)
            .await,
        AuthOutcome::ClientBusy
    );
    let _other = queue
        .enter(Some(std::net::IpAddr::from([127, 0, 0, 3])))
        .expect("a place");
    // The whole queue is taken.
    assert_eq!(
        config
            .authorize_async(Some(&basic("dave", "dave123")), None, &queue)
            .await,
        AuthOutcome::Busy
    );
    drop(_other);
    assert_eq!(
        config
            .authorize_async(Some(&basic("dave", "dave123")), None, &queue)
            .await,
        AuthOutcome::Allowed
    );
    // Cached now: no queue needed even when it is full.
    let _full = queue.enter(None).expect("a place");
    assert_eq!(
        config
            .authorize_async(Some(&basic("dave", "dave123")), attacker, &queue)
            .await,
        AuthOutcome::Allowed
    );
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
    std::fs::write(dir.path().join("server.key"), server_key.serialize_pem()).expect("writable");
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

/// The acceptor of a TLS config written beside the PKI's files.
fn tls_acceptor(pki: &Pki, content: &str) -> TlsAcceptor {
    let path = write_config(pki.dir.path(), content);
    let config = WebConfig::load(&path).expect("valid tls config");
    config.tls_acceptor().expect("tls configured")
}

#[tokio::test]
async fn tls_handshake_over_loopback() {
    let pki = pki();
    let acceptor = tls_acceptor(
        &pki,
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  min_version: TLS12\n  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n",
    );
    let (server, client) = handshake(acceptor, client_config(&pki, false)).await;
    assert_eq!(server, Ok(()));
    assert_eq!(client, Ok(b"hello".to_vec()));
}

#[tokio::test]
async fn required_client_cert_rejects_clients_without_one() {
    let pki = pki();
    let acceptor = tls_acceptor(
        &pki,
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  client_ca_file: ca.pem\n  client_auth_type: RequireAndVerifyClientCert\n  client_allowed_sans: [client.example]\n",
    );

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
    let acceptor = tls_acceptor(
        &pki,
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  client_ca_file: ca.pem\n  client_auth_type: RequireAnyClientCert\n  client_allowed_sans: [someone.else]\n",
    );
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
    let load_error = |content: &str, why: &str| {
        let path = write_config(pki.dir.path(), content);
        WebConfig::load(&path).expect_err(why).to_string()
    };
    let error = load_error(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: other.key\n",
        "key does not match",
    );
    assert!(error.contains("key_file \"other.key\""), "{error}");

    let error = load_error(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  client_ca_file: ca.pem\n  client_auth_type: VerifyClientCertIfGiven\n  client_allowed_sans: [a]\n",
        "sans need a required cert",
    );
    assert!(error.contains("client_allowed_sans"), "{error}");

    let error = load_error(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  client_ca_file: ca.pem\n",
        "ca without auth type",
    );
    assert!(error.contains("client_auth_type"), "{error}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
    /// Any file, valid ones edited included: a config or a clear error, never a panic.
    #[test]
    fn any_web_config_file_loads_or_is_refused(
        which in 0usize..5,
        edits in proptest::collection::vec((0usize..512, proptest::prelude::any::<u8>(), 0u8..4), 0..6),
    ) {
        let valid = [
            format!("basic_auth_users:\n  dave: {DAVE_HASH}\n"),
            "http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n".to_owned(),
            "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  client_auth_type: RequireAndVerifyClientCert\n  min_version: TLS12\n".to_owned(),
            "rate_limit:\n  interval: 1s\n  burst: 10\n".to_owned(),
            "basic_auth_users: {}\ntls_server_config: {}\n".to_owned(),
        ];
        let bytes = crate::testsupport::mutate(valid[which].as_bytes(), &edits);
        let content = String::from_utf8_lossy(&bytes);
        let dir = tempfile::tempdir().unwrap();
        let _ = WebConfig::parse(&content, &dir.path().join("web.yml"), dir.path());
    }
}
