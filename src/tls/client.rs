//! `tls_client_config`: the rustls client config of a node calling its peers, which verifies the
//! peer's certificate against `ca_file` and presents its own (`cert_file`, `key_file`).

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};

use super::file::{nonempty, ConfigError, Ctx, RawClientTls};
use super::server::{parse_certs, parse_key};

/// A built `tls_client_config`: the rustls config and the name every peer's certificate must
/// carry, when one is configured (otherwise the caller checks the address it dials).
pub struct ClientTls {
    pub config: Arc<ClientConfig>,
    pub server_name: Option<ServerName<'static>>,
}

/// Builds the client side of mutual TLS, offering `alpn`. Every key is required but
/// `server_name`; `insecure_skip_verify: true` is refused, since a node that does not check its
/// peers' certificates sends the groups to whoever answers at a peer's address.
pub fn build_client_config(
    ctx: &Ctx<'_>,
    raw: RawClientTls,
    alpn: &[&[u8]],
) -> Result<ClientTls, ConfigError> {
    if raw.insecure_skip_verify == Some(true) {
        return Err(ctx.invalid(
            "tls_client_config: insecure_skip_verify",
            "is refused: a node would send its groups to any server at a peer's address",
        ));
    }
    let file = |key: &str, value: &Option<String>| -> Result<(String, Vec<u8>), ConfigError> {
        let field = format!("tls_client_config: {key}");
        let name = nonempty(value).ok_or_else(|| {
            ctx.invalid(
                field.clone(),
                "required: nodes verify each other's certificates",
            )
        })?;
        let pem = ctx.read(&field, name)?;
        Ok((format!("{field} \"{name}\""), pem))
    };
    let (ca_field, ca_pem) = file("ca_file", &raw.ca_file)?;
    let (cert_field, cert_pem) = file("cert_file", &raw.cert_file)?;
    let (key_field, key_pem) = file("key_file", &raw.key_file)?;

    let mut roots = RootCertStore::empty();
    for cert in parse_certs(&ca_pem).map_err(|m| ctx.invalid(ca_field.clone(), m))? {
        roots
            .add(cert)
            .map_err(|e| ctx.invalid(ca_field.clone(), format!("invalid ca certificate: {e}")))?;
    }
    let chain = parse_certs(&cert_pem).map_err(|m| ctx.invalid(cert_field, m))?;
    let key = parse_key(&key_pem).map_err(|m| ctx.invalid(key_field.clone(), m))?;
    let server_name = match nonempty(&raw.server_name) {
        Some(name) => Some(ServerName::try_from(name.to_owned()).map_err(|_| {
            ctx.invalid(
                "tls_client_config: server_name",
                format!("invalid server name {name:?}"),
            )
        })?),
        None => None,
    };

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ctx.invalid("tls_client_config", e.to_string().to_lowercase()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            ctx.invalid(
                key_field,
                format!("does not fit the certificate: {e}").to_lowercase(),
            )
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(ClientTls {
        config: Arc::new(config),
        server_name,
    })
}
