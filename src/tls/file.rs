//! The YAML shapes shared by the TLS sections (`tls_server_config` as exporter-toolkit writes
//! it, `tls_client_config` as Prometheus' common config writes it), the errors that name the
//! file and the field, and reading the files a section names.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why a config file with TLS settings was rejected. Every message names the kind of file and
/// its path; most also name the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file itself could not be read.
    #[error("{kind} file \"{}\": {message}", path.display())]
    Read {
        kind: &'static str,
        path: PathBuf,
        message: String,
    },
    /// The file is not valid YAML or does not have the expected shape (unknown key, wrong type).
    #[error("{kind} file \"{}\": {message}", path.display())]
    Parse {
        kind: &'static str,
        path: PathBuf,
        message: String,
    },
    /// A field has a value pushgate cannot use (missing file, bad certificate, unsupported cipher, ...).
    #[error("{kind} file \"{}\": {field}: {message}", path.display())]
    Invalid {
        kind: &'static str,
        path: PathBuf,
        field: String,
        message: String,
    },
}

/// `tls_server_config`, exporter-toolkit's keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServerTls {
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

/// `tls_client_config`, the keys of Prometheus' common `TLSConfig` that a node-to-node client
/// uses.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientTls {
    pub(super) ca_file: Option<String>,
    pub(super) cert_file: Option<String>,
    pub(super) key_file: Option<String>,
    pub(super) server_name: Option<String>,
    pub(super) insecure_skip_verify: Option<bool>,
}

/// Builds errors that name the file being loaded, and reads the files it names.
pub struct Ctx<'a> {
    /// What the file is, for messages ("web config", "cluster tls config").
    pub kind: &'static str,
    pub path: &'a Path,
    /// The directory relative paths in the file are relative to.
    pub dir: &'a Path,
}

impl Ctx<'_> {
    pub fn invalid(&self, field: impl Into<String>, message: impl fmt::Display) -> ConfigError {
        ConfigError::Invalid {
            kind: self.kind,
            path: self.path.to_path_buf(),
            field: field.into(),
            message: message.to_string(),
        }
    }

    pub fn read_error(&self, error: &std::io::Error) -> ConfigError {
        ConfigError::Read {
            kind: self.kind,
            path: self.path.to_path_buf(),
            message: io_message(error),
        }
    }

    pub fn parse_error(&self, message: impl fmt::Display) -> ConfigError {
        ConfigError::Parse {
            kind: self.kind,
            path: self.path.to_path_buf(),
            message: message.to_string(),
        }
    }

    /// The full path of a file named in the config.
    pub fn resolve(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Reads a file named in the config, relative to the config file's directory.
    pub fn read(&self, field: &str, name: &str) -> Result<Vec<u8>, ConfigError> {
        std::fs::read(self.resolve(name))
            .map_err(|e| self.invalid(format!("{field} \"{name}\""), io_message(&e)))
    }
}

pub fn io_message(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        std::io::ErrorKind::IsADirectory => "is a directory".to_owned(),
        _ => error.to_string().to_lowercase(),
    }
}

/// A string field that is set and not empty.
pub fn nonempty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}
