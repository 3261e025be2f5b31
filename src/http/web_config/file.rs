//! The file as written: exporter-toolkit's YAML shape (serde, unknown keys refused; the
//! `tls_server_config` section and the errors are `crate::tls`'s, shared with the cluster's TLS
//! config), and the checks that need no other part of the config (the extra response headers).

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

pub use crate::tls::ConfigError as WebConfigError;
pub(super) use crate::tls::{Ctx, RawServerTls};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) tls_server_config: Option<RawServerTls>,
    pub(super) http_server_config: Option<RawHttp>,
    pub(super) rate_limit: Option<RawRateLimit>,
    pub(super) basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    pub(super) http2: Option<bool>,
    pub(super) headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    pub(super) burst: Option<u32>,
    pub(super) interval: Option<String>,
}

/// exporter-toolkit allows only these headers, and for two of them only these values.
const ALLOWED_HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// `http_server_config.headers`, checked against exporter-toolkit's list.
pub(super) fn build_headers(
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
