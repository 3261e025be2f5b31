//! Multi-node tests of pushgate with real processes on loopback: `Cluster::start(n)` runs `n`
//! pushgate binaries (`PUSHGATE_BIN`, default `target/debug/pushgate` of this workspace), each
//! gossiping and serving gRPC on its own port, and waits until every node sees all of them.
//!
//! The container test bed (issue 5) lives in [`testbed`] (image, network, nodes), [`balancer`]
//! (haproxy in front), [`workload`] (pushing clients, scrape watcher, invariants) and
//! [`prometheus`] (a real Prometheus scraping the balancer and remote-writing to a second one).
#![forbid(unsafe_code)]

pub mod balancer;
pub mod prometheus;
pub mod testbed;
pub mod workload;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One running node.
pub struct Node {
    pub http_port: u16,
    pub cluster_port: u16,
    child: Option<Child>,
}

impl Node {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }
    /// The node's id in the ring: its advertised cluster address.
    pub fn id(&self) -> String {
        format!("127.0.0.1:{}", self.cluster_port)
    }
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
}

pub fn binary() -> PathBuf {
    std::env::var_os("PUSHGATE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/pushgate")
        })
}

/// A port free for both TCP and UDP right now.
fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("binding port 0 should work");
        let port = l.local_addr().expect("bound socket has an address").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding port 0 should work")
        .port()
}

/// Polls `cond` every 50 ms until it holds or `limit` passes.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

impl Cluster {
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        let bin = binary();
        assert!(
            bin.exists(),
            "pushgate binary not found at {} (set PUSHGATE_BIN or cargo build)",
            bin.display()
        );
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let mut nodes = Vec::new();
        for (http, cl) in &ports {
            let mut cmd = Command::new(&bin);
            cmd.arg(format!("--web.listen-address=127.0.0.1:{http}"))
                .arg(format!("--cluster.listen-address=127.0.0.1:{cl}"))
                .arg("--web.enable-admin-api")
                .arg("--log.level=warn");
            for (_, p) in &ports {
                cmd.arg(format!("--cluster.peer=127.0.0.1:{p}"));
            }
            cmd.args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit());
            let child = cmd.spawn().expect("pushgate should start");
            nodes.push(Node {
                http_port: *http,
                cluster_port: *cl,
                child: Some(child),
            });
        }
        let c = Cluster { nodes };
        for node in &c.nodes {
            let url = node.url();
            wait_for(
                "every node ready with the full ring",
                Duration::from_secs(30),
                || {
                    let want = format!("pushgate_cluster_members{{state=\"active\"}} {n}\n");
                    matches!(http("GET", &url, "/metrics", b""), Ok((200, body)) if body.contains(&want))
                },
            );
        }
        c
    }

    pub fn live(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.is_running())
    }
}

/// A minimal HTTP/1.1 client (one request per connection): (status, body).
pub fn http(method: &str, base: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
    http_timeout(method, base, path, body, Duration::from_secs(20))
}

/// [`http`] with a deadline for connecting and for each read and write.
pub fn http_timeout(
    method: &str,
    base: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    use std::net::ToSocketAddrs;
    let addr = base.trim_start_matches("http://");
    let sock = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{addr} resolves to no address")))?;
    let mut s = TcpStream::connect_timeout(&sock, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {head}")))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(len.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
