//! TLS for `pushgate import`'s HTTP calls, with the options the official Pushgateway clients
//! and Prometheus' `tls_config` offer: a CA file (else the system's roots), a client
//! certificate and key, and skipping verification when asked to.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::server::{parse_certs, parse_key};

/// Where the system's CA bundle is on Debian and its derivatives (`SSL_CERT_FILE` overrides).
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The TLS options of one endpoint (all files PEM).
#[derive(Debug, Clone, Default)]
pub struct HttpClientTls {
    pub ca_file: Option<std::path::PathBuf>,
    pub cert_file: Option<std::path::PathBuf>,
    pub key_file: Option<std::path::PathBuf>,
    pub insecure_skip_verify: bool,
}

/// Builds the rustls client config for `opts`, offering HTTP/1.1.
pub fn build_http_client_config(opts: &HttpClientTls) -> Result<Arc<ClientConfig>, String> {
    let read = |what: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if opts.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
    } else {
        let (what, path) = match &opts.ca_file {
            Some(p) => ("CA file", p.clone()),
            None => (
                "system CA bundle",
                std::env::var_os("SSL_CERT_FILE")
                    .map(Into::into)
                    .unwrap_or_else(|| SYSTEM_CA_BUNDLE.into()),
            ),
        };
        let pem = read(what, &path)?;
        let mut roots = RootCertStore::empty();
        for cert in parse_certs(&pem).map_err(|e| format!("{what} {}: {e}", path.display()))? {
            roots
                .add(cert)
                .map_err(|e| format!("{what} {}: invalid certificate: {e}", path.display()))?;
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match (&opts.cert_file, &opts.key_file) {
        (Some(cert), Some(key)) => {
            let chain = parse_certs(&read("certificate file", cert)?)
                .map_err(|e| format!("certificate file {}: {e}", cert.display()))?;
            let key_der = parse_key(&read("key file", key)?)
                .map_err(|e| format!("key file {}: {e}", key.display()))?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                format!(
                    "key file {} does not fit the certificate: {e}",
                    key.display()
                )
            })?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("a client certificate needs both its certificate and its key file".into()),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts any server certificate (`insecure_skip_verify`), still checking that the handshake
/// is signed by the certificate's key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
