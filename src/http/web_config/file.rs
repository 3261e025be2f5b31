//! The file as written: exporter-toolkit's YAML shape (serde, unknown keys refused), the errors
//! that name the file and the field, and the checks that need no other part of the config
//! (the extra response headers).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) tls_server_config: Option<RawTls>,
    pub(super) http_server_config: Option<RawHttp>,
    pub(super) rate_limit: Option<RawRateLimit>,
    pub(super) basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: Option<String>,
    pub(super) key: Option<String>,
    pub(super) client_ca: Option<String>,
    pub(super) cert_file: Option<String>,
    pub(super) key_file: Option<String>,
    pub(super) client_ca_file: Option<String>,
    pub(super) client_auth_type: Option<String>,
    pub(super) cipher_suites: Option<Vec<String>>,
    pub(super) curve_preferences: Option<Vec<String>>,
    pub(super) min_version: Option<String>,
    pub(super) max_version: Option<String>,
    // Go ignores it since 1.17; accepted so existing files still load.
    #[allow(dead_code)]
    prefer_server_cipher_suites: Option<bool>,
    pub(super) client_allowed_sans: Option<Vec<String>>,
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

/// Builds errors that name the file being loaded.
pub(super) struct Ctx<'a> {
    pub(super) path: &'a Path,
    pub(super) dir: &'a Path,
}

impl Ctx<'_> {
    pub(super) fn invalid(
        &self,
        field: impl Into<String>,
        message: impl fmt::Display,
    ) -> WebConfigError {
        WebConfigError::Invalid {
            path: self.path.to_path_buf(),
            field: field.into(),
            message: message.to_string(),
        }
    }

    /// Reads a file named in the config, relative to the config file's directory.
    pub(super) fn read(&self, field: &str, name: &str) -> Result<Vec<u8>, WebConfigError> {
        let full = self.dir.join(name);
        std::fs::read(&full)
            .map_err(|e| self.invalid(format!("{field} \"{name}\""), io_message(&e)))
    }
}

pub(super) fn io_message(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        std::io::ErrorKind::IsADirectory => "is a directory".to_owned(),
        _ => error.to_string().to_lowercase(),
    }
}

/// A string field that is set and not empty.
pub(super) fn nonempty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
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
