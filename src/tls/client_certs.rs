//! Client certificates (`client_auth_type`, `client_allowed_sans`): Go's client auth modes
//! mapped to rustls verifiers, the one that takes any certificate, and the SAN allow-list.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use super::file::{ConfigError, Ctx};

/// `client_auth_type`, Go's `tls.ClientAuthType`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum ClientAuth {
    None,
    Request,
    RequireAny,
    VerifyIfGiven,
    RequireAndVerify,
}

impl ClientAuth {
    /// Parses Go's name (`NoClientCert` when unset).
    pub(super) fn from_file(ctx: &Ctx<'_>, value: Option<&str>) -> Result<ClientAuth, ConfigError> {
        Ok(match value.unwrap_or("NoClientCert") {
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
        })
    }
}

/// The verifier `client_auth_type` asks for (none for `NoClientCert`), restricted to
/// `client_allowed_sans` when that is set; `roots` are the client CAs.
pub(super) fn client_verifier(
    ctx: &Ctx<'_>,
    client_auth: ClientAuth,
    roots: Option<Arc<RootCertStore>>,
    provider: &Arc<CryptoProvider>,
    allowed_sans: Option<Vec<String>>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, ConfigError> {
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
            let builder = WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(provider));
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
    Ok(match (allowed_sans, verifier) {
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
    })
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
