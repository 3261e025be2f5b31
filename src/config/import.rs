//! `pushgate import`'s flags: where the groups come from (a running upstream Pushgateway, or a
//! persistence file), where they go (a pushgate node or cluster), and how to reach both
//! (basic auth, bearer token, TLS: the options the official clients have).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};

use crate::time::parse_go_duration;
use crate::tls::HttpClientTls;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "pushgate import",
    bin_name = "pushgate import",
    about = "Copies every group of an upstream Pushgateway (running, or its persistence file) into a \
             pushgate node or cluster, keeping each group's push and failure times. The target \
             needs --web.enable-admin-api."
)]
pub struct ImportArgs {
    /// The upstream Pushgateway to read, e.g. http://old-gateway:9091 (its /api/v1/metrics;
    /// a route prefix in the path is kept; user:password@ in the URL is basic auth).
    #[arg(long = "from", required_unless_present = "from_file", conflicts_with = "from_file")]
    pub from: Option<String>,
    /// An upstream Pushgateway persistence file (or a pushgate snapshot) to read instead; read
    /// only, never written.
    #[arg(long = "from-file")]
    pub from_file: Option<PathBuf>,
    /// The pushgate node to import into (any node of a cluster), e.g. http://pushgate:9091.
    #[arg(long = "to")]
    pub to: String,
    #[command(flatten)]
    pub from_access: FromAccess,
    #[command(flatten)]
    pub to_access: ToAccess,
    /// Groups sent at once.
    #[arg(long = "concurrency", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// Deadline of each HTTP request.
    #[arg(long = "timeout", default_value = "30s", value_parser = parse_go_duration)]
    pub timeout: Duration,
}

/// How to reach one endpoint.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub bearer_token_file: Option<PathBuf>,
    pub tls: HttpClientTls,
}

macro_rules! access_flags {
    ($name:ident, $side:literal) => {
        #[derive(Debug, Clone, Args)]
        pub struct $name {
            #[arg(id = concat!($side, "_username"), long = concat!($side, ".username"), value_name = "USER", help = concat!("Basic auth user for --", $side, "."))]
            pub username: Option<String>,
            #[arg(id = concat!($side, "_password_file"), long = concat!($side, ".password-file"), value_name = "FILE", requires = concat!($side, "_username"), help = concat!("File holding the basic auth password for --", $side, "."))]
            pub password_file: Option<PathBuf>,
            #[arg(id = concat!($side, "_bearer_token_file"), long = concat!($side, ".bearer-token-file"), value_name = "FILE", conflicts_with = concat!($side, "_username"), help = concat!("File holding a bearer token for --", $side, "."))]
            pub bearer_token_file: Option<PathBuf>,
            #[arg(id = concat!($side, "_ca_file"), long = concat!($side, ".tls.ca-file"), value_name = "FILE", help = concat!("CA certificates (PEM) that --", $side, "'s server certificate must chain to; default: the system's."))]
            pub ca_file: Option<PathBuf>,
            #[arg(id = concat!($side, "_cert_file"), long = concat!($side, ".tls.cert-file"), value_name = "FILE", requires = concat!($side, "_key_file"), help = concat!("Client certificate (PEM) presented to --", $side, "."))]
            pub cert_file: Option<PathBuf>,
            #[arg(id = concat!($side, "_key_file"), long = concat!($side, ".tls.key-file"), value_name = "FILE", requires = concat!($side, "_cert_file"), help = concat!("Key (PEM) of the client certificate presented to --", $side, "."))]
            pub key_file: Option<PathBuf>,
            #[arg(id = concat!($side, "_insecure_skip_verify"), long = concat!($side, ".tls.insecure-skip-verify"), help = concat!("Do not verify --", $side, "'s server certificate."))]
            pub insecure_skip_verify: bool,
        }

        impl From<&$name> for Access {
            fn from(a: &$name) -> Access {
                Access {
                    username: a.username.clone(),
                    password_file: a.password_file.clone(),
                    bearer_token_file: a.bearer_token_file.clone(),
                    tls: HttpClientTls {
                        ca_file: a.ca_file.clone(),
                        cert_file: a.cert_file.clone(),
                        key_file: a.key_file.clone(),
                        insecure_skip_verify: a.insecure_skip_verify,
                    },
                }
            }
        }
    };
}

access_flags!(FromAccess, "from");
access_flags!(ToAccess, "to");
