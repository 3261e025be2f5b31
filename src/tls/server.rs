//! `tls_server_config`: the rustls server config, from Go's names for versions, cipher suites
//! and curves, the certificate and key, and the client CAs; the client-certificate verifiers
//! themselves are in [`super::client_certs`]. One builder for the HTTP listeners and the
//! cluster's gRPC listener.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{CipherSuite, RootCertStore, ServerConfig, SupportedProtocolVersion};

use super::client_certs::{client_verifier, ClientAuth};
use super::file::{nonempty, ConfigError, Ctx, RawServerTls};

fn parse_version(
    ctx: &Ctx<'_>,
    field: &str,
    value: Option<&str>,
) -> Result<Option<&'static SupportedProtocolVersion>, ConfigError> {
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

fn build_provider(ctx: &Ctx<'_>, raw: &RawServerTls) -> Result<CryptoProvider, ConfigError> {
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

/// The server config `tls_server_config` asks for, offering `alpn` in that order; `None` when it
/// sets no certificate, key or client authentication (plain text).
pub fn build_server_config(
    ctx: &Ctx<'_>,
    raw: RawServerTls,
    alpn: &[&[u8]],
) -> Result<Option<Arc<ServerConfig>>, ConfigError> {
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

    let (cert_field, cert_pem) = pem_source(ctx, "cert", &raw.cert_file, &raw.cert)?
        .ok_or_else(|| ctx.invalid("tls_server_config", "missing one of cert or cert_file"))?;
    let (key_field, key_pem) = pem_source(ctx, "key", &raw.key_file, &raw.key)?
        .ok_or_else(|| ctx.invalid("tls_server_config", "missing one of key or key_file"))?;
    let chain = parse_certs(&cert_pem).map_err(|m| ctx.invalid(cert_field.clone(), m))?;
    let key = parse_key(&key_pem).map_err(|m| ctx.invalid(key_field.clone(), m))?;

    let client_auth = ClientAuth::from_file(ctx, nonempty(&raw.client_auth_type))?;

    let client_ca = pem_source(ctx, "client_ca", &raw.client_ca_file, &raw.client_ca)?;
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
    let verifier = client_verifier(ctx, client_auth, roots, &provider, raw.client_allowed_sans)?;

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
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Some(Arc::new(config)))
}

/// The certificates of a PEM file, each checked to be a parseable X.509 certificate.
pub(super) fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
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

/// The private key of a PEM file.
pub(super) fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| format!("invalid pem: {e}"))?
        .ok_or_else(|| "no private key found".to_owned())
}

/// A PEM given as a file (`<name>_file`, relative to the config file) or inline (`<name>`): the
/// field to name in errors about its content, and its bytes; `None` when neither is set.
fn pem_source(
    ctx: &Ctx<'_>,
    name: &str,
    file: &Option<String>,
    inline: &Option<String>,
) -> Result<Option<(String, Vec<u8>)>, ConfigError> {
    Ok(match (nonempty(file), nonempty(inline)) {
        (Some(file), _) => {
            let pem = ctx.read(&format!("tls_server_config: {name}_file"), file)?;
            Some((format!("tls_server_config: {name}_file \"{file}\""), pem))
        }
        (None, Some(text)) => Some((
            format!("tls_server_config: {name}"),
            text.as_bytes().to_vec(),
        )),
        (None, None) => None,
    })
}
