//! Certificates for clusters with `--cluster.tls-config`: a CA, node certificates for
//! 127.0.0.1 (server and client usage, as every node is both), and the config files.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};

/// A certificate authority.
pub struct Ca {
    cert: Certificate,
    key: KeyPair,
}

impl Ca {
    pub fn new() -> Ca {
        let key = KeyPair::generate().expect("keygen");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("self-signed ca");
        Ca { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate for `sans` (IP addresses become IP SANs), usable as server and client:
    /// (certificate PEM, key PEM).
    pub fn issue(&self, sans: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("keygen");
        let mut params =
            CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .expect("params");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("node cert");
        (cert.pem(), key.serialize_pem())
    }
}

impl Default for Ca {
    fn default() -> Self {
        Ca::new()
    }
}

/// The cluster TLS config of node `n` in `dir`: `node{n}.pem`, `node{n}.key`, trusting `ca.pem`.
pub const CONFIG: &str = "\
tls_server_config:
  cert_file: node{n}.pem
  key_file: node{n}.key
  client_ca_file: ca.pem
tls_client_config:
  ca_file: ca.pem
  cert_file: node{n}.pem
  key_file: node{n}.key
";

/// Writes `ca.pem` (every CA of `trusted`), and a certificate for 127.0.0.1 from `issuer` and a
/// config for each of `nodes` nodes; returns the flag to pass (with `{n}` for the node index).
pub fn write_cluster(dir: &Path, issuer: &Ca, trusted: &[&Ca], nodes: usize) -> String {
    write_ca_bundle(dir, trusted);
    for n in 0..nodes {
        write_node_cert(dir, n, issuer);
        std::fs::write(config_path(dir, n), CONFIG.replace("{n}", &n.to_string()))
            .expect("writable");
    }
    format!("--cluster.tls-config={}/tls{{n}}.yml", dir.display())
}

pub fn config_path(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("tls{n}.yml"))
}

/// Replaces `ca.pem` with the bundle of `trusted`, atomically (a rename: a node reading it sees
/// the old or the new file, never half of one).
pub fn write_ca_bundle(dir: &Path, trusted: &[&Ca]) {
    let bundle: String = trusted.iter().map(|c| c.pem()).collect();
    replace(&dir.join("ca.pem"), &bundle);
}

/// Replaces node `n`'s certificate and key with new ones from `issuer`; the key first and the
/// certificate second, as a rotation script would, each atomically.
pub fn write_node_cert(dir: &Path, n: usize, issuer: &Ca) {
    let (cert, key) = issuer.issue(&["127.0.0.1"]);
    replace(&dir.join(format!("node{n}.key")), &key);
    replace(&dir.join(format!("node{n}.pem")), &cert);
}

fn replace(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).expect("writable");
    std::fs::rename(&tmp, path).expect("rename");
}
