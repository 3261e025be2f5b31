//! Where the gateway is reached: listen addresses (`--web.listen-address`,
//! `--cluster.listen-address`) and the route prefix upstream derives from the external URL.

use std::net::SocketAddr;

/// `:9091`, `0.0.0.0:9091`, `[::1]:9091`, `localhost:9091`: an empty host means every interface.
pub fn parse_listen_address(s: &str) -> Result<Vec<SocketAddr>, String> {
    use std::net::ToSocketAddrs;
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("listen address {s:?} has no port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("listen address {s:?} has an invalid port"))?;
    if host.is_empty() {
        return Ok(vec![SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 0], port))]);
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host, port)
        .to_socket_addrs()
        .map(|a| a.collect())
        .map_err(|e| format!("listen address {s:?}: {e}"))
}

/// The route prefix upstream derives: the flag, else the external URL's path; no trailing
/// slash; "" for none.
pub fn route_prefix(flag: &str, external_url: &str) -> Result<String, String> {
    let raw = if !flag.is_empty() {
        flag.to_owned()
    } else if external_url.is_empty() {
        String::new()
    } else {
        let after_scheme = external_url
            .split_once("://")
            .map(|(_, r)| r)
            .ok_or_else(|| format!("--web.external-url {external_url:?} is not an absolute URL"))?;
        after_scheme
            .find('/')
            .map(|i| after_scheme[i..].to_owned())
            .unwrap_or_default()
    };
    let trimmed = raw.trim_matches('/');
    Ok(if trimmed.is_empty() {
        String::new()
    } else {
        format!("/{trimmed}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen_address(":9091").unwrap()[0].port(), 9091);
        assert_eq!(
            parse_listen_address("127.0.0.1:80").unwrap()[0].to_string(),
            "127.0.0.1:80"
        );
        assert!(parse_listen_address("nope").is_err());
    }

    #[test]
    fn prefixes() {
        assert_eq!(route_prefix("", "").unwrap(), "");
        assert_eq!(route_prefix("/", "").unwrap(), "");
        assert_eq!(route_prefix("/foo/", "").unwrap(), "/foo");
        assert_eq!(route_prefix("", "http://h:9091/bar/").unwrap(), "/bar");
        assert_eq!(route_prefix("", "http://h:9091").unwrap(), "");
    }
}
