//! Multi-node tests of pushgate with real processes on loopback: `Cluster::start(n)` runs `n`
//! pushgate binaries (`PUSHGATE_BIN`, default `target/debug/pushgate` of this workspace), each
//! gossiping and serving gRPC on its own port, and waits until every node sees all of them.
//!
//! The container test bed (issue 5) lives in [`testbed`] (image, network, nodes), [`balancer`]
//! (haproxy in front), [`workload`] (pushing clients, scrape watcher, invariants) and
//! [`prometheus`] (a real Prometheus scraping the balancer and remote-writing to a second one).
#![forbid(unsafe_code)]

pub mod balancer;
pub mod pki;
pub mod prometheus;
pub mod testbed;
pub mod workload;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One running node.
pub struct Node {
    pub http_port: u16,
    pub cluster_port: u16,
    child: Option<Child>,
    /// Every flag it was started with, to restart it the same way.
    args: Vec<String>,
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

    /// Sends a signal (`TERM`, `STOP`, `CONT`) to the process.
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(c.id().to_string())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill -{sig} should work");
        }
    }

    /// SIGTERM (graceful shutdown), then waits up to `limit` for the process to exit; returns
    /// whether it exited with status 0.
    pub fn terminate(&mut self, limit: Duration) -> bool {
        self.signal("TERM");
        let deadline = Instant::now() + limit;
        let Some(mut c) = self.child.take() else {
            return false;
        };
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        panic!(
            "node {} did not exit within {limit:?} of SIGTERM",
            self.id()
        );
    }

    /// Starts the node again with the same ports and flags (after `kill9` or `terminate`).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart a stopped node only");
        self.child = Some(spawn(&self.args));
    }

    /// Whether `/-/ready` answers 200.
    pub fn is_ready(&self) -> bool {
        matches!(http("GET", &self.url(), "/-/ready", b""), Ok((200, _)))
    }

    /// An unlabelled self-metric of this node (its own, local value).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (status, body) = http("GET", &self.url(), "/metrics", b"").ok()?;
        if status != 200 {
            return None;
        }
        metric_value(&body, name)
    }
}

/// `GET /metrics` of the node at `base`, which must answer 200.
pub fn scrape(base: &str) -> String {
    let (status, body) = http("GET", base, "/metrics", b"").expect("scrape");
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of the sample line `name <value>` in a scrape.
pub fn metric_value(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn spawn(args: &[String]) -> Child {
    Command::new(binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("pushgate should start")
}

fn node_args(http: u16, cl: u16, peers: &[u16], extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        format!("--web.listen-address=127.0.0.1:{http}"),
        format!("--cluster.listen-address=127.0.0.1:{cl}"),
        "--web.enable-admin-api".to_owned(),
        "--log.level=warn".to_owned(),
    ];
    for p in peers {
        args.push(format!("--cluster.peer=127.0.0.1:{p}"));
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
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

/// `python3`, ready to run a script that uses the Prometheus Python client. Checked once per
/// test process: without python3 or without `prometheus_client` the test fails here, saying
/// what to install, instead of with the script's traceback (or a skip).
pub fn python_with_client() -> Command {
    static CHECKED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let checked = CHECKED.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import prometheus_client"])
            .output()
            .map_err(|e| format!("python3 cannot be run ({e}): install python3"))?;
        if out.status.success() {
            return Ok(());
        }
        Err(format!(
            "python3 cannot import prometheus_client: pip install prometheus_client \
             (or apt-get install python3-prometheus-client)\n{}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    });
    if let Err(e) = checked {
        panic!("{e}");
    }
    Command::new("python3")
}

/// A loopback port free for TCP and UDP, below the kernel's ephemeral range (see there why).
pub use pushgate::testsupport::free_port;

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
    /// `{n}` in an extra flag is replaced by the node's index (e.g. a persistence file name).
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        let c = Cluster::spawn(n, extra);
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

    /// Starts `n` nodes (peers of each other) without waiting for anything.
    pub fn spawn(n: usize, extra: &[&str]) -> Cluster {
        let bin = binary();
        assert!(
            bin.exists(),
            "pushgate binary not found at {} (set PUSHGATE_BIN or cargo build)",
            bin.display()
        );
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let peers: Vec<u16> = ports.iter().map(|(_, p)| *p).collect();
        let mut nodes = Vec::new();
        for (i, (http, cl)) in ports.iter().enumerate() {
            let extra: Vec<String> = extra
                .iter()
                .map(|e| e.replace("{n}", &i.to_string()))
                .collect();
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            let args = node_args(*http, *cl, &peers, &extra);
            nodes.push(Node {
                http_port: *http,
                cluster_port: *cl,
                child: Some(spawn(&args)),
                args,
            });
        }
        Cluster { nodes }
    }

    /// The indexes of the `r` owners of the group `{job="<job>"}`, in rendezvous order (every
    /// node counted, running or not).
    pub fn owners(&self, job: &str, r: usize) -> Vec<usize> {
        use pushgate::cluster::ring::score;
        use pushgate::cluster::NodeId;
        let h = pushgate::store::GroupKey::new([("job".to_owned(), job.to_owned())]).stable_hash();
        let mut idx: Vec<usize> = (0..self.nodes.len()).collect();
        idx.sort_by(|&a, &b| {
            let (ia, ib) = (self.nodes[a].id(), self.nodes[b].id());
            score(h, &NodeId::new(ib.as_str()))
                .cmp(&score(h, &NodeId::new(ia.as_str())))
                .then(ia.cmp(&ib))
        });
        idx.truncate(r);
        idx
    }

    pub fn live(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.is_running())
    }

    /// Starts one more node, with the running nodes as its peers, and waits until it is ready.
    /// `{n}` in an extra flag is replaced by the node's index (e.g. a persistence file name).
    pub fn add_node(&mut self, extra: &[&str]) -> usize {
        let index = self.spawn_node(extra);
        let node = &self.nodes[index];
        wait_for("the new node to be ready", Duration::from_secs(60), || {
            node.is_ready()
        });
        index
    }

    /// Starts one more node, with the running nodes as its peers, without waiting for anything
    /// (e.g. a node that must not get in). `{n}` as in [`Cluster::add_node`].
    pub fn spawn_node(&mut self, extra: &[&str]) -> usize {
        self.spawn_node_on(free_port(), extra)
    }

    /// [`Cluster::spawn_node`] with the cluster (gossip and gRPC) port given, e.g. one that an
    /// earlier node was told to seed from before anything listened there.
    pub fn spawn_node_on(&mut self, cl: u16, extra: &[&str]) -> usize {
        let http = free_port();
        let mut peers: Vec<u16> = self.live().map(|n| n.cluster_port).collect();
        peers.push(cl);
        let index = self.nodes.len();
        let extra: Vec<String> = extra
            .iter()
            .map(|e| e.replace("{n}", &index.to_string()))
            .collect();
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let args = node_args(http, cl, &peers, &extra);
        self.nodes.push(Node {
            http_port: http,
            cluster_port: cl,
            child: Some(spawn(&args)),
            args,
        });
        index
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
    http_answer(method, base, path, body, timeout).map(|a| (a.status, a.body))
}

/// A response: status, header lines (names lowercased) and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// The first header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// [`http_timeout`] with the response's headers.
pub fn http_answer(
    method: &str,
    base: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<Answer> {
    http_answer_with(method, base, path, &[], body, timeout)
}

/// [`http_answer`] with request headers (`name`, `value`).
pub fn http_answer_with(
    method: &str,
    base: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<Answer> {
    use std::net::ToSocketAddrs;
    let addr = base.trim_start_matches("http://");
    let sock = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{addr} resolves to no address")))?;
    let mut s = TcpStream::connect_timeout(&sock, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let extra: String = headers
        .iter()
        .map(|(n, v)| format!("{n}: {v}\r\n"))
        .collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
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
        dechunk(body).ok_or_else(|| {
            std::io::Error::other(format!(
                "{method} {path}: status {status}, but the chunked body ended before its last chunk (the response was cut short)"
            ))
        })?
    } else {
        body.to_owned()
    };
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// The body of a chunked response; None when it ends before the terminating empty chunk (a
/// response cut short must not pass for a complete one).
fn dechunk(mut s: &str) -> Option<String> {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).ok()?;
        if n == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..n)?);
        s = rest[n..].trim_start_matches("\r\n");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::dechunk;

    #[test]
    fn a_chunked_body_is_read_to_its_last_chunk_and_a_cut_one_is_refused() {
        let whole = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        assert_eq!(dechunk(whole).as_deref(), Some("hello world"));
        assert_eq!(dechunk("0\r\n\r\n").as_deref(), Some(""));
        // Cut anywhere before the terminating empty chunk: not a complete body.
        for cut in 0..whole.find("0\r\n\r\n").unwrap() {
            assert_eq!(dechunk(&whole[..cut]), None, "cut at {cut}");
        }
        assert_eq!(dechunk("zz\r\nhello\r\n0\r\n\r\n"), None);
    }
}
