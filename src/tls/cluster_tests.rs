use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};

use super::*;

/// A CA (`ca.pem`) and a node certificate for 127.0.0.1 signed by it (`node.pem`, `node.key`),
/// usable as server and client, in `dir`; `tag` prefixes the file names.
fn write_pki(dir: &Path, tag: &str) {
    let ca_key = KeyPair::generate().expect("keygen");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("self-signed ca");
    let key = KeyPair::generate().expect("keygen");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &ca, &ca_key).expect("node cert");
    std::fs::write(dir.join(format!("{tag}ca.pem")), ca.pem()).expect("writable");
    std::fs::write(dir.join(format!("{tag}node.pem")), cert.pem()).expect("writable");
    std::fs::write(dir.join(format!("{tag}node.key")), key.serialize_pem()).expect("writable");
}

const GOOD: &str = "\
tls_server_config:
  cert_file: node.pem
  key_file: node.key
  client_ca_file: ca.pem
tls_client_config:
  ca_file: ca.pem
  cert_file: node.pem
  key_file: node.key
";

fn write(dir: &Path, content: &str) -> PathBuf {
    let path = dir.join("cluster-tls.yml");
    std::fs::write(&path, content).expect("writable");
    path
}

fn err(dir: &Path, content: &str) -> String {
    match ClusterTlsConfig::load(&write(dir, content)) {
        Ok(_) => panic!("loaded:\n{content}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_key_is_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_pki(dir.path(), "");
    let path = write(
        dir.path(),
        "\
tls_server_config:
  cert_file: node.pem
  key_file: node.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.pem
  min_version: TLS12
  max_version: TLS13
  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]
  curve_preferences: [X25519, CurveP256]
  client_allowed_sans: [127.0.0.1]
tls_client_config:
  ca_file: ca.pem
  cert_file: node.pem
  key_file: node.key
  server_name: node-1.pushgate
  insecure_skip_verify: false
",
    );
    let config = ClusterTlsConfig::load(&path).expect("valid config");
    assert_eq!(config.server.alpn_protocols, vec![b"h2".to_vec()]);
    assert_eq!(config.client.alpn_protocols, vec![b"h2".to_vec()]);
    assert_eq!(
        config.server_name,
        Some(ServerName::try_from("node-1.pushgate").expect("a dns name"))
    );
    // Without server_name, the caller checks the peer's address.
    let config = ClusterTlsConfig::load(&write(dir.path(), GOOD)).expect("valid config");
    assert!(config.server_name.is_none());
    assert_eq!(config.watched.len(), 7);
}

#[test]
fn only_mutual_tls_is_accepted() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_pki(dir.path(), "");
    for weaker in [
        "NoClientCert",
        "RequestClientCert",
        "RequireAnyClientCert",
        "VerifyClientCertIfGiven",
    ] {
        let content = GOOD.replace(
            "  client_ca_file: ca.pem\n",
            &format!("  client_ca_file: ca.pem\n  client_auth_type: {weaker}\n"),
        );
        let e = err(dir.path(), &content);
        assert!(
            e.contains("tls_server_config: client_auth_type") && e.contains("is refused"),
            "{e}"
        );
    }
    let e = err(
        dir.path(),
        &GOOD.replace(
            "  client_ca_file: ca.pem\n",
            "  client_ca_file: ca.pem\n  client_auth_type: Bogus\n",
        ),
    );
    assert!(
        e.contains("client_auth_type") && e.contains("\"Bogus\""),
        "{e}"
    );
    let e = err(dir.path(), &GOOD.replace("  client_ca_file: ca.pem\n", ""));
    assert!(e.contains("client_ca_file"), "{e}");
    let e = err(dir.path(), &format!("{GOOD}  insecure_skip_verify: true\n"));
    assert!(e.contains("insecure_skip_verify: is refused"), "{e}");
    let e = err(dir.path(), "tls_server_config:\n  cert_file: node.pem\n");
    assert!(e.contains("tls_client_config: required"), "{e}");
    let e = err(dir.path(), "");
    assert!(e.contains("tls_server_config: required"), "{e}");
    for key in ["ca_file", "cert_file", "key_file"] {
        let content = GOOD
            .split_once("tls_client_config:\n")
            .map(|(server, client)| {
                let client: String = client
                    .lines()
                    .filter(|l| !l.trim_start().starts_with(key))
                    .map(|l| format!("{l}\n"))
                    .collect();
                format!("{server}tls_client_config:\n{client}")
            })
            .expect("two sections");
        let e = err(dir.path(), &content);
        assert!(
            e.contains(&format!("tls_client_config: {key}: required")),
            "{key}: {e}"
        );
    }
}

#[test]
fn unknown_keys_and_bad_yaml_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_pki(dir.path(), "");
    let e = err(dir.path(), &format!("{GOOD}  ca: inline\n"));
    assert!(e.contains("unknown field `ca`"), "{e}");
    let e = err(dir.path(), &format!("{GOOD}gossip: {{}}\n"));
    assert!(e.contains("unknown field `gossip`"), "{e}");
    let e = err(dir.path(), "tls_server_config: [");
    assert!(e.starts_with("cluster tls config file"), "{e}");
    let missing = ClusterTlsConfig::load(&dir.path().join("nope.yml"))
        .err()
        .expect("a missing file is an error")
        .to_string();
    assert!(
        missing.contains("nope.yml") && missing.contains("no such file"),
        "{missing}"
    );
}

#[test]
fn missing_and_bad_files_are_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_pki(dir.path(), "");
    write_pki(dir.path(), "other-");
    std::fs::write(dir.path().join("garbage.pem"), "not a pem").expect("writable");
    let cases = [
        (
            "cert_file: node.pem",
            "cert_file: gone.pem",
            "cert_file \"gone.pem\": no such file",
        ),
        (
            "key_file: node.key",
            "key_file: gone.key",
            "key_file \"gone.key\": no such file",
        ),
        (
            "client_ca_file: ca.pem",
            "client_ca_file: gone.pem",
            "client_ca_file \"gone.pem\": no such file",
        ),
        (
            "ca_file: ca.pem\n  cert",
            "ca_file: gone.pem\n  cert",
            "tls_client_config: ca_file \"gone.pem\": no such file",
        ),
        (
            "cert_file: node.pem",
            "cert_file: garbage.pem",
            "cert_file \"garbage.pem\": no certificate found",
        ),
        (
            "key_file: node.key",
            "key_file: garbage.pem",
            "key_file \"garbage.pem\": no private key found",
        ),
        (
            "key_file: node.key",
            "key_file: other-node.key",
            "does not fit the certificate",
        ),
        (
            "ca_file: ca.pem\n  cert",
            "ca_file: garbage.pem\n  cert",
            "ca_file \"garbage.pem\": no certificate found",
        ),
    ];
    for (from, to, want) in cases {
        // Each case in the server section, then (for the keys both have) in the client one.
        let server = GOOD.replacen(from, to, 1);
        if server != GOOD {
            let e = err(dir.path(), &server);
            assert!(e.contains(want), "{to} (server): {e}");
        }
        let (head, client) = GOOD.split_once("tls_client_config:").expect("two sections");
        let client = format!("{head}tls_client_config:{}", client.replacen(from, to, 1));
        if client != GOOD && !from.starts_with("client_ca") {
            let e = err(dir.path(), &client);
            assert!(e.contains(want), "{to} (client): {e}");
        }
    }
}

#[test]
fn a_bad_reload_keeps_the_config_in_force_and_a_good_one_replaces_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_pki(dir.path(), "");
    let tls = ClusterTls::load(&write(dir.path(), GOOD)).expect("valid config");
    let before = tls.current();
    std::fs::write(dir.path().join("node.key"), "broken").expect("writable");
    assert!(tls.reload().is_err());
    assert!(Arc::ptr_eq(&before, &tls.current()), "the old config stays");
    write_pki(dir.path(), "");
    tls.reload().expect("the new files load");
    assert!(!Arc::ptr_eq(&before, &tls.current()));
}

#[tokio::test]
async fn the_watcher_reloads_when_a_file_changes() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_pki(dir.path(), "");
    let tls = ClusterTls::load(&write(dir.path(), GOOD)).expect("valid config");
    let watcher = tls.watch(Duration::from_millis(50));
    let first = tls.current();
    // A broken file is not taken.
    std::fs::write(dir.path().join("node.key"), "broken").expect("writable");
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        assert!(Arc::ptr_eq(&first, &tls.current()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // New files from a new CA are.
    write_pki(dir.path(), "");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Arc::ptr_eq(&first, &tls.current()) {
        assert!(Instant::now() < deadline, "the watcher did not reload");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watcher.abort();
}
