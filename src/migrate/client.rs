//! The HTTP(S) client of `pushgate import`: one endpoint (a base URL with its route prefix,
//! basic auth or a bearer token, TLS) and connections to it that are kept open between
//! requests.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

use crate::config::import::Access;
use crate::tls::build_http_client_config;

/// A base URL and how to reach it.
pub struct Endpoint {
    /// As given, without credentials, for messages.
    pub shown: String,
    host: String,
    port: u16,
    /// The `Host` header.
    authority: String,
    /// The URL's path without its trailing `/` (a route prefix), empty for none.
    prefix: String,
    auth: Option<HeaderValue>,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
}

impl Endpoint {
    pub fn new(url: &str, access: &Access, timeout: Duration) -> Result<Endpoint, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("{url:?}: the URL must start with http:// or https://")),
        };
        let raw_authority = uri
            .authority()
            .ok_or(format!("{url:?} has no host"))?
            .as_str();
        let (userinfo, authority) = match raw_authority.rsplit_once('@') {
            Some((u, a)) => (Some(u), a),
            None => (None, raw_authority),
        };
        let parsed: http::uri::Authority = authority
            .parse()
            .map_err(|e| format!("{url:?}: bad host: {e}"))?;
        let host = parsed.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = parsed.port_u16().unwrap_or(if https { 443 } else { 80 });
        let read = |what: &str, p: &std::path::Path| {
            std::fs::read_to_string(p)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
                .map_err(|e| format!("{what} {}: {e}", p.display()))
        };
        let basic = |user: &str, pass: &str| {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            HeaderValue::from_str(&format!("Basic {token}")).map_err(|e| e.to_string())
        };
        let auth = if let Some(user) = &access.username {
            let pass = match &access.password_file {
                Some(p) => read("password file", p)?,
                None => String::new(),
            };
            Some(basic(user, &pass)?)
        } else if let Some(p) = &access.bearer_token_file {
            let token = read("bearer token file", p)?;
            Some(HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())?)
        } else if let Some(info) = userinfo {
            let (user, pass) = info.split_once(':').unwrap_or((info, ""));
            Some(basic(user, pass)?)
        } else {
            None
        };
        let tls = if https {
            Some(build_http_client_config(&access.tls).map_err(|e| format!("{url:?}: {e}"))?)
        } else {
            None
        };
        let scheme = if https { "https" } else { "http" };
        let prefix = uri.path().trim_end_matches('/').to_owned();
        Ok(Endpoint {
            shown: format!("{scheme}://{authority}{prefix}"),
            host,
            port,
            authority: authority.to_owned(),
            prefix,
            auth,
            tls,
            timeout,
        })
    }

    pub fn connection(self: &Arc<Self>) -> Connection {
        Connection {
            endpoint: self.clone(),
            sender: None,
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.shown))?;
        let _ = tcp.set_nodelay(true);
        let failed = |e: hyper::Error| format!("HTTP handshake with {} failed: {e}", self.shown);
        match &self.tls {
            None => {
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .map_err(failed)?;
                tokio::spawn(conn);
                Ok(sender)
            }
            Some(config) => {
                let name = ServerName::try_from(self.host.clone())
                    .map_err(|e| format!("{}: {e}", self.shown))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS handshake with {} failed: {e}", self.shown))?;
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                    .await
                    .map_err(failed)?;
                tokio::spawn(conn);
                Ok(sender)
            }
        }
    }
}

/// A connection to an endpoint, opened on first use and again after it closes.
pub struct Connection {
    endpoint: Arc<Endpoint>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Connection {
    /// Sends a request to `path` under the endpoint's prefix; the status and a body of at most
    /// `max_body` bytes.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
        max_body: usize,
    ) -> Result<(StatusCode, Bytes), String> {
        let ep = self.endpoint.clone();
        let call = async {
            // A kept connection the server closed meanwhile fails at once: the request is then
            // sent once more on a new one (an import of a group may be repeated: it changes
            // nothing the second time).
            for retry in [true, false] {
                let (mut sender, reused) = match self.sender.take() {
                    Some(s) if !s.is_closed() => (s, true),
                    _ => (ep.connect().await?, false),
                };
                if sender.ready().await.is_err() && reused && retry {
                    continue;
                }
                let mut req = Request::builder()
                    .method(method.clone())
                    .uri(format!("{}{path}", ep.prefix))
                    .header(header::HOST, &ep.authority)
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .body(Full::new(body.clone()))
                    .map_err(|e| e.to_string())?;
                if let Some(auth) = &ep.auth {
                    req.headers_mut().insert(header::AUTHORIZATION, auth.clone());
                }
                let resp = match sender.send_request(req).await {
                    Ok(r) => r,
                    Err(e) if reused && retry && e.is_closed() => continue,
                    Err(e) => return Err(format!("request to {} failed: {e}", ep.shown)),
                };
                let status = resp.status();
                let bytes = Limited::new(resp.into_body(), max_body)
                    .collect()
                    .await
                    .map_err(|e| format!("reading the reply of {} failed: {e}", ep.shown))?
                    .to_bytes();
                self.sender = Some(sender);
                return Ok((status, bytes));
            }
            Err(format!("{} closed the connection", ep.shown))
        };
        tokio::time::timeout(ep.timeout, call)
            .await
            .unwrap_or_else(|_| Err(format!("{} did not answer within {:?}", ep.shown, ep.timeout)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(url: &str) -> Result<Endpoint, String> {
        Endpoint::new(url, &Access::default(), Duration::from_secs(1))
    }

    #[test]
    fn urls_give_host_port_prefix_and_credentials() {
        let e = endpoint("http://dave:dave123@old-gateway:9091/gw/").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("old-gateway", 9091));
        assert_eq!(e.prefix, "/gw");
        assert_eq!(e.shown, "http://old-gateway:9091/gw");
        assert_eq!(
            e.auth.unwrap(),
            HeaderValue::from_static("Basic ZGF2ZTpkYXZlMTIz")
        );
        let e = endpoint("http://[::1]").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.prefix.as_str()), ("::1", 80, ""));
        for bad in ["old-gateway:9091", "ftp://x", "http://"] {
            assert!(endpoint(bad).is_err(), "{bad}");
        }
    }
}
