//! Shared harness of the black-box suites: start a gateway binary (pushgate or the upstream oracle) on a
//! free loopback port in its own temp dir, talk raw HTTP/1.1 to it, and normalise its outputs so two
//! gateways can be compared.
//!
//! Environment:
//! - `PUSHGATE_BIN`: the binary under test (default: the crate's `pushgate` bin). Point it at
//!   `/usr/bin/prometheus-pushgateway` to validate the suites against upstream on both sides.
//! - `UPSTREAM_BIN`: the oracle (default `/usr/bin/prometheus-pushgateway`, Debian 12's 1.5.1).
//! - `PROMETHEUS_BIN`: the Prometheus server for the scrape suite (default `/usr/bin/prometheus`).
//! - `PYTHON`: the interpreter with `prometheus_client` (default `python3`).
//! - `PUSHGATE_CLUSTER_NODES`: when set to N > 1, the differential suite runs pushgate as an
//!   N-node cluster (replication factor N, so every conflict is visible to every node) behind a
//!   round-robin TCP proxy: consecutive requests of a scenario go to different nodes.
//! - `PUSHGATE_DIFF_CASES`, `PUSHGATE_DIFF_SECONDS`, `PUSHGATE_DIFF_SEED`: the generated
//!   differential cases' budgets and seed (`tests/compat/generated.rs`).
//!
//! The oracle must be upstream 1.5.1 ([`UPSTREAM_VERSION`]): checked once per test process.
//!
//! A missing binary is a test failure with a clear message, never a silent pass: CI installs them.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const UPSTREAM_DEFAULT: &str = "/usr/bin/prometheus-pushgateway";

/// The name prefixes of the families each implementation adds to `/metrics` (the differential
/// suites tell those apart by their missing `job` label instead, see [`normalise_metrics`]).
pub const SELF_METRIC_PREFIXES: &[&str] = &["pushgateway_", "process_", "go_", "pushgate_"];

/// The consistency-check error prefix (see [`error_texts_match`] for the rest of such bodies).
pub const CONSISTENCY_PREFIX: &str =
    "pushed metrics are invalid or inconsistent with existing metrics: ";

pub fn pushgate_bin() -> PathBuf {
    match std::env::var_os("PUSHGATE_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_BIN_EXE_pushgate")),
    }
}

/// The upstream release tests/ORACLE_NOTES.md and docs/compatibility.md were written against:
/// another release answers differently in places (error texts, bugs since fixed), which would
/// show as differences that are not pushgate's, so the oracle must be this one.
pub const UPSTREAM_VERSION: &str = "1.5.1";

pub fn upstream_bin() -> PathBuf {
    let p = std::env::var_os("UPSTREAM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(UPSTREAM_DEFAULT));
    assert!(
        p.exists(),
        "the upstream oracle {} is missing: install Debian's `prometheus-pushgateway` \
         (apt-get install -y prometheus-pushgateway) or set UPSTREAM_BIN",
        p.display()
    );
    if let Err(e) = check_upstream_version(&p) {
        panic!("{e}");
    }
    p
}

/// Runs `<oracle> --version` once per test process and checks it is [`UPSTREAM_VERSION`];
/// prints the version it found (visible with `--no-capture`, and in a failing test's output).
fn check_upstream_version(bin: &Path) -> &'static Result<(), String> {
    static CHECKED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    CHECKED.get_or_init(|| {
        let out = Command::new(bin)
            .arg("--version")
            .output()
            .map_err(|e| format!("cannot run {} --version: {e}", bin.display()))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // "pushgateway, version 1.5.1 (branch: ..., revision: ...)"
        let found = text
            .split_whitespace()
            .skip_while(|w| *w != "version")
            .nth(1)
            .map(str::to_owned);
        match found {
            Some(v) if v == UPSTREAM_VERSION => {
                eprintln!("upstream oracle: {} version {v}", bin.display());
                Ok(())
            }
            Some(v) => Err(format!(
                "the upstream oracle {} is version {v}, but the differential suites are written \
                 against {UPSTREAM_VERSION} (tests/ORACLE_NOTES.md, docs/compatibility.md): install \
                 Debian 12's prometheus-pushgateway 1.5.1 or point UPSTREAM_BIN at that release",
                bin.display()
            )),
            None => Err(format!(
                "cannot tell the version of the upstream oracle {}: `--version` printed {text:?}",
                bin.display()
            )),
        }
    })
}

/// How long a read from pushgate may lag a write that pushgate acknowledged: zero on a single
/// node; on a cluster behind the round-robin proxy the bound docs/operations.md documents
/// (measured by `cluster_read_after_write_lag`, figures in docs/benchmarks.md). Only pushgate's
/// reads are retried, and only within this bound.
pub fn pushgate_read_bound() -> Duration {
    if cluster_nodes() > 1 {
        Duration::from_millis(CLUSTER_READ_AFTER_WRITE_BOUND_MS)
    } else {
        Duration::ZERO
    }
}

/// The documented read-after-write bound of a cluster with the default write quorum
/// (docs/operations.md): none. A write is acknowledged once every owner holds it, so a read
/// through any node after the acknowledgement sees it (no stale read measured).
pub const CLUSTER_READ_AFTER_WRITE_BOUND_MS: u64 = 0;

/// Whether pushgate's error body `pushgate` stands for upstream's `upstream`. The one place the
/// differential suites map error texts (listed in docs/compatibility.md, "Error texts"):
/// equal texts, except that in a consistency error
/// - upstream describes the offending metric in Go's protobuf text format
///   (`{ label:<name:"job" value:"a" > gauge:<value:1 > }`), pushgate by its labels
///   (`{ job="a" }`, values in Rust's string escaping, cut after 64 characters with `...`);
/// - where upstream lists several errors (`N error(s) occurred:` then `* ` items, in random
///   order), pushgate reports one of them;
/// - upstream merges the groups' families in Go's random map order before checking them, so
///   for a type conflict between groups it names either group's metric against the other's
///   type, and for a histogram or summary suffix collision either name as the one "previously
///   collected": these are compared by the names involved (pushgate always names the pushed
///   metric against the stored type, and the pushed name as the colliding one).
pub fn error_texts_match(upstream: &str, pushgate: &str) -> bool {
    if upstream == pushgate {
        return true;
    }
    let (Some(u), Some(p)) = (
        upstream.strip_prefix(CONSISTENCY_PREFIX),
        pushgate.strip_prefix(CONSISTENCY_PREFIX),
    ) else {
        return false;
    };
    let p = p.trim_end();
    let errors = consistency_errors(u);
    errors.iter().any(|e| {
        let e = map_go_metric_description(e);
        e == p || conflict_names(&e).is_some_and(|n| conflict_names(p) == Some(n))
    })
}

/// The names a conflict whose wording depends on Go's map order is about: the metric of a
/// type conflict (`collected metric "m" { ... } is not a COUNTER`), or the base and the
/// colliding name of a histogram or summary suffix collision, in either wording.
fn conflict_names(e: &str) -> Option<(String, String)> {
    let quoted = |s: &str| -> Option<(String, usize)> {
        let start = s.find('"')? + 1;
        let len = s[start..].find('"')?;
        Some((s[start..start + len].to_string(), start + len + 1))
    };
    if let Some(rest) = e.strip_prefix("collected metric named ") {
        // `collected metric named "h_sum" collides with previously collected histogram named "h"`
        let (other, at) = quoted(rest)?;
        let (base, _) = quoted(&rest[at..])?;
        return Some((base, other));
    }
    let base_first = ["histogram or summary", "histogram", "summary"]
        .iter()
        .find_map(|k| e.strip_prefix(&format!("collected {k} named ")));
    if let Some(rest) = base_first {
        // `collected histogram or summary named "h" collides with previously collected metric
        // named "h_sum"` (or `collected histogram named ...`)
        let (base, at) = quoted(rest)?;
        let (other, _) = quoted(&rest[at..])?;
        return Some((base, other));
    }
    let rest = e.strip_prefix("collected metric ")?;
    let (name, _) = quoted(rest)?;
    let tail = e.rsplit_once(" } is not a ")?.1;
    tail.chars()
        .all(|c| c.is_ascii_uppercase() || c == '_')
        .then(|| (name, "type".to_string()))
}

/// The errors of an upstream consistency-error body (after the prefix).
fn consistency_errors(rest: &str) -> Vec<&str> {
    let multi = rest
        .split_once(" error(s) occurred:\n")
        .filter(|(n, _)| n.chars().all(|c| c.is_ascii_digit()));
    match multi {
        Some((_, list)) => list
            .split("\n* ")
            .map(|e| e.trim_start_matches("* ").trim_end())
            .filter(|e| !e.is_empty())
            .collect(),
        None => vec![rest.trim_end()],
    }
}

/// Replaces Go's protobuf text of a metric (`{ label:<name:"a" value:"b" > ... }`) in an
/// upstream error by pushgate's description of its labels (`{ a="b" }`).
fn map_go_metric_description(e: &str) -> String {
    let (Some(start), Some(end)) = (e.find(" { "), e.rfind(" } ")) else {
        return e.to_string();
    };
    if end < start {
        return e.to_string();
    }
    let inner = &e[start + 3..end];
    let mut pairs = Vec::new();
    let mut rest = inner;
    while let Some(i) = rest.find("label:<name:\"") {
        rest = &rest[i + "label:<name:\"".len()..];
        let Some((name, after)) = go_unquote(rest) else {
            return e.to_string();
        };
        let Some(after) = after.strip_prefix(" value:\"") else {
            return e.to_string();
        };
        let Some((value, after)) = go_unquote(after) else {
            return e.to_string();
        };
        let shown: String = value.chars().take(64).collect();
        let cut = if shown.len() < value.len() { "..." } else { "" };
        pairs.push(format!("{name}={shown:?}{cut}"));
        rest = after;
    }
    format!("{} {{ {} }}{}", &e[..start], pairs.join(","), &e[end + 2..])
}

/// Reads a Go-quoted string body up to its closing quote: the unescaped text and what follows.
fn go_unquote(s: &str) -> Option<(String, &str)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => return Some((String::from_utf8_lossy(&out).into_owned(), &s[i + 1..])),
            b'\\' => {
                let c = *b.get(i + 1)?;
                i += 2;
                match c {
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'a' => out.push(7),
                    b'b' => out.push(8),
                    b'f' => out.push(12),
                    b'v' => out.push(11),
                    b'0'..=b'7' => {
                        let oct = s.get(i - 1..i + 2)?;
                        out.push(u8::from_str_radix(oct, 8).ok()?);
                        i += 2;
                    }
                    b'x' => {
                        out.push(u8::from_str_radix(s.get(i..i + 2)?, 16).ok()?);
                        i += 2;
                    }
                    other => out.push(other),
                }
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    None
}

/// True when the binary under test is the upstream oracle itself (validation mode).
pub fn testing_upstream() -> bool {
    let pg = pushgate_bin();
    let up = std::env::var_os("UPSTREAM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(UPSTREAM_DEFAULT));
    std::fs::canonicalize(&pg).ok() == std::fs::canonicalize(&up).ok()
}

/// Sends `sig` (e.g. `TERM`) to the process `pid` (one the test started).
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .expect("kill should run")
        .success();
    assert!(ok, "kill -{sig} {pid} failed");
}

/// Polls `cond` until it returns `Some` or the deadline passes.
pub fn poll_until<T>(deadline: Duration, mut cond: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = cond() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub use pushgate::testsupport::free_port;

/// One gateway process. Killed (and reaped) on drop.
pub struct Gateway {
    pub name: String,
    pub port: u16,
    /// The route prefix the gateway was started with, without trailing `/` ("" for none).
    pub prefix: String,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    /// The other nodes of a cluster started by `start_cluster` (each killed on drop).
    others: Vec<Gateway>,
    /// Stops the round-robin proxy of a cluster.
    proxy_stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl Gateway {
    /// Starts `bin` with `flags` (plus a listen address and a persistence file in its temp dir, unless
    /// `flags` sets them). `prefix` is where `/-/ready` lives. Retries on a port race.
    pub fn start(name: &str, bin: &Path, flags: &[String], prefix: &str) -> Gateway {
        Gateway::try_start(name, bin, flags, prefix, 4).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Gateway::start`] with `attempts` tries, returning the last failure instead of panicking.
    pub fn try_start(
        name: &str,
        bin: &Path,
        flags: &[String],
        prefix: &str,
        attempts: usize,
    ) -> Result<Gateway, String> {
        assert!(
            bin.exists(),
            "gateway binary {} for {name} does not exist (set PUSHGATE_BIN / UPSTREAM_BIN?)",
            bin.display()
        );
        let mut last_err = String::new();
        for _attempt in 0..attempts {
            let dir = tempfile::tempdir().expect("creating a temp dir should work");
            let port = free_port();
            let mut args: Vec<String> = vec![format!("--web.listen-address=127.0.0.1:{port}")];
            if !flags.iter().any(|f| f.starts_with("--persistence.file")) {
                // Debian's build defaults to /var/lib/prometheus/pushgateway.data: never share it.
                args.push(format!(
                    "--persistence.file={}",
                    dir.path().join("persist.data").display()
                ));
            }
            args.extend(flags.iter().cloned());
            let log = std::fs::File::create(dir.path().join("log.txt"))
                .expect("log file should be creatable");
            let child = Command::new(bin)
                .args(&args)
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log file handle should clone"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", bin.display()));
            let mut gw = Gateway {
                name: name.to_string(),
                port,
                prefix: prefix.trim_end_matches('/').to_string(),
                dir,
                child: Some(child),
                others: Vec::new(),
                proxy_stop: None,
            };
            let ready = poll_until(Duration::from_secs(15), || {
                if gw.has_exited() {
                    return Some(false);
                }
                let r = gw.try_request(
                    &Req::get(&format!("{}/-/ready", gw.prefix)),
                    Duration::from_secs(2),
                );
                match r {
                    Ok(r) if r.status == 200 => Some(true),
                    _ => None,
                }
            });
            if ready == Some(true) {
                return Ok(gw);
            }
            last_err = format!(
                "{name} ({}) did not become ready on port {port} with {args:?}; log:\n{}",
                bin.display(),
                gw.log()
            );
        }
        Err(last_err)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log.txt")).unwrap_or_default()
    }

    pub fn has_exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().map(|s| s.is_some()).unwrap_or(true),
            None => true,
        }
    }

    /// Waits (with a deadline) for the process to exit by itself.
    pub fn wait_exit(&mut self, deadline: Duration) -> bool {
        poll_until(deadline, || if self.has_exited() { Some(()) } else { None }).is_some()
    }

    pub fn try_request(&self, req: &Req, timeout: Duration) -> std::io::Result<Resp> {
        http(&self.addr(), req, timeout)
    }

    /// Sends a request; panics (with the gateway's name) on a transport error or a 30 s timeout.
    pub fn request(&self, req: &Req) -> Resp {
        self.try_request(req, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{}: {} {} failed: {e}", self.name, req.method, req.path))
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request(&Req::get(&format!("{}{path}", self.prefix)))
    }

    pub fn put_text(&self, path: &str, body: &str) -> Resp {
        self.request(
            &Req::new("PUT", &format!("{}{path}", self.prefix)).body(body.as_bytes().to_vec()),
        )
    }

    pub fn post_text(&self, path: &str, body: &str) -> Resp {
        self.request(
            &Req::new("POST", &format!("{}{path}", self.prefix)).body(body.as_bytes().to_vec()),
        )
    }

    pub fn delete(&self, path: &str) -> Resp {
        self.request(&Req::new("DELETE", &format!("{}{path}", self.prefix)))
    }

    /// `GET /metrics` normalised (see [`normalise_metrics`]).
    pub fn scrape_normalised(&self) -> (u16, String) {
        let r = self.get("/metrics");
        (r.status, normalise_metrics(&r.text()))
    }

    /// `GET /api/v1/metrics` normalised (see [`normalise_api_metrics`]).
    pub fn api_metrics_normalised(&self) -> (u16, serde_json::Value) {
        let r = self.get("/api/v1/metrics");
        let v = serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::String(r.text()));
        (r.status, normalise_api_metrics(v))
    }
}

/// The cluster size asked for by `PUSHGATE_CLUSTER_NODES` (1 = a single node).
pub fn cluster_nodes() -> usize {
    std::env::var("PUSHGATE_CLUSTER_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

impl Gateway {
    /// Starts `n` pushgate nodes forming one cluster (replication factor `n`) and a round-robin
    /// TCP proxy in front of them; the returned gateway's port is the proxy's, so every request
    /// (one connection each) goes to the next node.
    pub fn start_cluster(
        name: &str,
        bin: &Path,
        flags: &[String],
        prefix: &str,
        n: usize,
    ) -> Gateway {
        // A node whose cluster port was taken between `free_port` and its bind exits at once;
        // its peers' flags name that port, so the whole cluster is started again on new ports.
        let mut last_err = String::new();
        let mut started = None;
        for _attempt in 0..3 {
            let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
            let peers: Vec<String> = cluster_ports
                .iter()
                .map(|p| format!("--cluster.peer=127.0.0.1:{p}"))
                .collect();
            // Started concurrently: a node is ready once it joined its peers, so they must all
            // be starting at once.
            let results: Vec<Result<Gateway, String>> = std::thread::scope(|scope| {
                let handles: Vec<_> = cluster_ports
                    .iter()
                    .map(|p| {
                        let mut f = flags.to_vec();
                        f.push(format!("--cluster.listen-address=127.0.0.1:{p}"));
                        f.push(format!("--cluster.replication-factor={n}"));
                        f.extend(peers.iter().cloned());
                        scope.spawn(move || Gateway::try_start(name, bin, &f, prefix, 1))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("starting a cluster node should not panic"))
                    .collect()
            });
            match results
                .into_iter()
                .collect::<Result<Vec<Gateway>, String>>()
            {
                Ok(nodes) => {
                    started = Some(nodes);
                    break;
                }
                // The nodes that did start are killed when `results` is dropped.
                Err(e) => last_err = e,
            }
        }
        let mut nodes =
            started.unwrap_or_else(|| panic!("a {n}-node cluster did not start: {last_err}"));
        // Ready means joined; writes with R = n also need every node to see all n active.
        let telemetry = flags
            .iter()
            .find_map(|f| f.strip_prefix("--web.telemetry-path="))
            .unwrap_or("/metrics")
            .to_owned();
        let want = format!("pushgate_cluster_members{{state=\"active\"}} {n}\n");
        for node in &nodes {
            let path = format!("{}{}", node.prefix, telemetry);
            let formed = poll_until(Duration::from_secs(30), || {
                node.try_request(&Req::get(&path), Duration::from_secs(2))
                    .ok()
                    .filter(|r| r.status == 200 && r.text().contains(&want))
                    .map(|_| ())
            });
            assert!(
                formed.is_some(),
                "cluster node on port {} never saw {n} active members",
                node.port
            );
        }
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy should work");
        let port = listener.local_addr().expect("bound").port();
        let targets: Vec<u16> = nodes.iter().map(|g| g.port).collect();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        std::thread::spawn(move || round_robin_proxy(listener, targets, stop2));
        let mut first = nodes.remove(0);
        first.port = port;
        first.others = nodes;
        first.proxy_stop = Some(stop);
        first
    }
}

/// Forwards each accepted connection to the next target port, both directions, passing on
/// half-closes (the harness's client shuts down its write side after the request).
fn round_robin_proxy(
    listener: TcpListener,
    targets: Vec<u16>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let mut next = 0usize;
    for conn in listener.incoming() {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let Ok(client) = conn else { continue };
        let port = targets[next % targets.len()];
        next += 1;
        std::thread::spawn(move || {
            let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
                return;
            };
            let (Ok(mut c_read), Ok(mut s_write)) = (client.try_clone(), server.try_clone()) else {
                return;
            };
            let up = std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_read, &mut s_write);
                let _ = s_write.shutdown(Shutdown::Write);
            });
            let (mut c_write, mut s_read) = (client, server);
            let _ = std::io::copy(&mut s_read, &mut c_write);
            let _ = c_write.shutdown(Shutdown::Write);
            let _ = up.join();
        });
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(stop) = self.proxy_stop.take() {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            // Wake the proxy's accept so it sees the flag.
            let _ = TcpStream::connect(("127.0.0.1", self.port));
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An HTTP request as sent on the wire: the path is sent verbatim (no normalisation of `//`, `%`).
#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn new(method: &str, path: &str) -> Req {
        Req {
            method: method.into(),
            path: path.into(),
            headers: vec![],
            body: vec![],
        }
    }
    pub fn get(path: &str) -> Req {
        Req::new("GET", path)
    }
    pub fn header(mut self, k: &str, v: &str) -> Req {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub fn body(mut self, b: impl Into<Vec<u8>>) -> Req {
        self.body = b.into();
        self
    }
}

#[derive(Clone, Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn first_line(&self) -> String {
        self.text().lines().next().unwrap_or("").to_string()
    }
}

/// A deliberately tiny HTTP/1.1 client: one connection per request, `Connection: close`, redirects
/// never followed, paths sent byte for byte.
pub fn http(addr: &str, req: &Req, timeout: Duration) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n",
        req.method, req.path
    );
    for (k, v) in &req.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !req.body.is_empty() || matches!(req.method.as_str(), "PUT" | "POST") {
        head.push_str(&format!("Content-Length: {}\r\n", req.body.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    // A server may answer (413) and close before reading the whole body: still read its reply.
    let write_res = s.write_all(&req.body);
    // Only after a body: a Go server (Prometheus 2.42 here) takes a half-closed connection for a
    // client gone away and cancels the request, e.g. a query answers 503 "query was canceled".
    if !req.body.is_empty() {
        let _ = s.shutdown(Shutdown::Write);
    }
    let mut raw = Vec::new();
    let read_res = s.read_to_end(&mut raw);
    if raw.is_empty() {
        write_res?;
        read_res?;
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "empty response",
        ));
    }
    parse_response(&raw, req.method == "HEAD")
}

fn parse_response(raw: &[u8], head_only: bool) -> std::io::Result<Resp> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("no status line"))?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if head_only {
        body.clear();
    }
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    } else if let Some(len) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(len);
    }
    Ok(Resp {
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n")?;
        let size_str = std::str::from_utf8(&b[..nl]).ok()?;
        let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
        b = &b[nl + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// The metric family name a text exposition line belongs to (`None` for blank lines).
fn line_family(line: &str) -> Option<&str> {
    if let Some(rest) = line
        .strip_prefix("# HELP ")
        .or_else(|| line.strip_prefix("# TYPE "))
    {
        return rest.split(' ').next();
    }
    if line.starts_with('#') || line.is_empty() {
        return None;
    }
    let end = line.find(['{', ' ']).unwrap_or(line.len());
    Some(&line[..end])
}

fn is_push_time(family: &str) -> bool {
    family == "push_time_seconds" || family == "push_failure_time_seconds"
}

/// The marker that replaces a push-time value: keeps only whether it is zero.
pub fn time_marker(v: &str) -> &'static str {
    match v.parse::<f64>() {
        Ok(0.0) => "<zero>",
        Ok(_) => "<nonzero>",
        Err(_) => "<not-a-number>",
    }
}

/// Whether a text sample line carries a `job` label. Every series a user pushed does (the
/// gateway adds its group's `job`), and none of a gateway's own series do: that is how the two
/// are told apart, so that a user's family named `process_*`, `go_*`, `pushgateway_*` or
/// `pushgate_*` is compared like any other.
fn has_job_label(line: &str) -> bool {
    parse_samples(line)
        .first()
        .is_some_and(|(_, labels, _)| labels.iter().any(|(k, _)| k == "job"))
}

/// `/metrics` without the gateway's own series (those without a `job` label; a family left
/// without samples loses its HELP and TYPE lines too), push-time values replaced by a
/// zero/nonzero marker, line order kept.
pub fn normalise_metrics(text: &str) -> String {
    let mut out = String::new();
    // The HELP/TYPE lines of the current family, held until one of its samples is kept.
    let mut header = String::new();
    let mut family: Option<String> = None;
    let mut samples_seen = false;
    let flush_header_only = |out: &mut String, header: &mut String, samples_seen: bool| {
        // A family exposed without any sample at all is nobody's own family: keep it.
        if !samples_seen {
            out.push_str(header);
        }
        header.clear();
    };
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            let fam = line_family(line).unwrap_or("").to_string();
            if family.as_deref() != Some(fam.as_str()) {
                flush_header_only(&mut out, &mut header, samples_seen);
                family = Some(fam);
                samples_seen = false;
            }
            header.push_str(line);
            header.push('\n');
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        samples_seen = true;
        if !has_job_label(line) {
            continue;
        }
        out.push_str(&header);
        header.clear();
        if line_family(line).is_some_and(is_push_time) {
            if let Some((series, value)) = line.rsplit_once(' ') {
                out.push_str(&format!("{series} {}\n", time_marker(value)));
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    flush_header_only(&mut out, &mut header, samples_seen);
    out
}

/// A protobuf-delimited `/metrics` body decoded and normalised like [`normalise_metrics`]:
/// the gateway's own metrics (no `job` label) removed, push-time values replaced by 0 (zero) or
/// 1 (nonzero); one family per line in its `Debug` form, so NaN compares equal to NaN.
pub fn normalise_proto_scrape(mut body: &[u8]) -> Result<String, String> {
    use prost::Message;
    let mut out = String::new();
    while !body.is_empty() {
        let mut fam = pb::MetricFamily::decode_length_delimited(&mut body)
            .map_err(|e| format!("not a protobuf-delimited scrape: {e}"))?;
        let had_metrics = !fam.metric.is_empty();
        fam.metric
            .retain(|m| m.label.iter().any(|l| l.name.as_deref() == Some("job")));
        if had_metrics && fam.metric.is_empty() {
            continue;
        }
        if is_push_time(fam.name()) {
            for m in &mut fam.metric {
                if let Some(g) = m.gauge.as_mut() {
                    g.value = Some(if g.value() == 0.0 { 0.0 } else { 1.0 });
                }
            }
        }
        out.push_str(&format!("{fam:?}\n"));
    }
    Ok(out)
}

pub fn gunzip(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .map_err(|e| format!("not a gzip body: {e}"))?;
    Ok(out)
}

/// `/api/v1/metrics` with `time_stamp` dropped, push-time values replaced by markers, and groups sorted
/// by their labels (upstream emits them in random map order).
pub fn normalise_api_metrics(mut v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    if let Some(data) = v.get_mut("data").and_then(Value::as_array_mut) {
        for group in data.iter_mut() {
            let Some(obj) = group.as_object_mut() else {
                continue;
            };
            for (k, fam) in obj.iter_mut() {
                if k == "labels" || k == "last_push_successful" {
                    continue;
                }
                if let Some(f) = fam.as_object_mut() {
                    let had_ts = f.remove("time_stamp").is_some();
                    f.insert("time_stamp".into(), Value::Bool(had_ts));
                    if is_push_time(k) {
                        if let Some(ms) = f.get_mut("metrics").and_then(Value::as_array_mut) {
                            for m in ms {
                                if let Some(val) =
                                    m.get("value").and_then(Value::as_str).map(time_marker)
                                {
                                    m["value"] = Value::String(val.into());
                                }
                            }
                        }
                    }
                }
            }
        }
        data.sort_by_key(|g| g.get("labels").map(|l| l.to_string()).unwrap_or_default());
    }
    v
}

/// Parses a text exposition into `(name, sorted labels, value)` samples (enough for assertions).
/// One parsed sample line: name, label pairs, value text.
pub type Sample = (String, Vec<(String, String)>, String);

pub fn parse_samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let (name, labels) = match series.find('{') {
            None => (series.to_string(), vec![]),
            Some(i) => (
                series[..i].to_string(),
                parse_labels(&series[i + 1..series.len() - 1]),
            ),
        };
        out.push((name, labels, value.to_string()));
    }
    out
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            if c != ',' {
                name.push(c);
            }
            chars.next();
        }
        if chars.next().is_none() {
            break;
        }
        chars.next(); // opening quote
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(o) => value.push(o),
                    None => break,
                },
                '"' => break,
                o => value.push(o),
            }
        }
        out.push((name.trim().to_string(), value));
    }
    out.sort();
    out
}

/// Finds the value of the sample `name` whose labels include all of `want`.
pub fn sample_value(text: &str, name: &str, want: &[(&str, &str)]) -> Option<String> {
    parse_samples(text).into_iter().find_map(|(n, labels, v)| {
        let ok = n == name
            && want
                .iter()
                .all(|(k, wv)| labels.iter().any(|(lk, lv)| lk == k && lv == wv));
        ok.then_some(v)
    })
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use flate2::write::GzEncoder;
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("writing to a Vec should not fail");
    e.finish()
        .expect("finishing a gzip stream into a Vec should not fail")
}

/// Protobuf helpers: build `MetricFamily` messages with the crate's generated types.
/// A family's type as the generated bodies of the suites declare it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Counter,
    Gauge,
    Untyped,
    /// No TYPE line in text (rendered and parsed as untyped), `UNTYPED` in protobuf.
    NoType,
    Summary,
    Histogram,
}

/// Every [`Kind`], for generators to pick from.
pub const KINDS: &[Kind] = &[
    Kind::Counter,
    Kind::Gauge,
    Kind::Untyped,
    Kind::NoType,
    Kind::Summary,
    Kind::Histogram,
];

impl Kind {
    /// The word of its `# TYPE` line; none for [`Kind::NoType`].
    pub fn type_line(self) -> Option<&'static str> {
        match self {
            Kind::Counter => Some("counter"),
            Kind::Gauge => Some("gauge"),
            Kind::Untyped => Some("untyped"),
            Kind::NoType => None,
            Kind::Summary => Some("summary"),
            Kind::Histogram => Some("histogram"),
        }
    }

    /// Its protobuf type.
    pub fn metric_type(self) -> pb::MetricType {
        match self {
            Kind::Counter => pb::MetricType::Counter,
            Kind::Gauge => pb::MetricType::Gauge,
            Kind::Untyped | Kind::NoType => pb::MetricType::Untyped,
            Kind::Summary => pb::MetricType::Summary,
            Kind::Histogram => pb::MetricType::Histogram,
        }
    }
}

pub mod pb {
    use prost::Message;
    pub use pushgate::exposition::proto::{
        Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType, Quantile,
        Summary, Untyped,
    };

    pub const CONTENT_TYPE: &str =
        "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

    pub fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
        pairs
            .iter()
            .map(|(n, v)| LabelPair {
                name: Some(n.to_string()),
                value: Some(v.to_string()),
            })
            .collect()
    }

    pub fn family(
        name: &str,
        help: Option<&str>,
        ty: MetricType,
        metric: Vec<Metric>,
    ) -> MetricFamily {
        MetricFamily {
            name: Some(name.into()),
            help: help.map(Into::into),
            r#type: Some(ty as i32),
            metric,
        }
    }

    pub fn gauge(pairs: &[(&str, &str)], v: f64) -> Metric {
        Metric {
            label: labels(pairs),
            gauge: Some(Gauge { value: Some(v) }),
            ..Default::default()
        }
    }

    pub fn counter(pairs: &[(&str, &str)], v: f64) -> Metric {
        Metric {
            label: labels(pairs),
            counter: Some(Counter {
                value: Some(v),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn untyped(pairs: &[(&str, &str)], v: f64) -> Metric {
        Metric {
            label: labels(pairs),
            untyped: Some(Untyped { value: Some(v) }),
            ..Default::default()
        }
    }

    pub fn summary(pairs: &[(&str, &str)], count: u64, sum: f64, q: &[(f64, f64)]) -> Metric {
        Metric {
            label: labels(pairs),
            summary: Some(
                Summary {
                    sample_count: Some(count),
                    sample_sum: Some(sum),
                    quantile: q
                        .iter()
                        .map(|&(quantile, value)| Quantile {
                            quantile: Some(quantile),
                            value: Some(value),
                        })
                        .collect(),
                }
                .into(),
            ),
            ..Default::default()
        }
    }

    pub fn histogram(pairs: &[(&str, &str)], count: u64, sum: f64, b: &[(f64, u64)]) -> Metric {
        Metric {
            label: labels(pairs),
            histogram: Some(
                Histogram {
                    sample_count: Some(count),
                    sample_sum: Some(sum),
                    bucket: b
                        .iter()
                        .map(|&(ub, c)| Bucket {
                            upper_bound: Some(ub),
                            cumulative_count: Some(c),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }
                .into(),
            ),
            ..Default::default()
        }
    }

    /// A varint-length-delimited stream, as the Go client sends it.
    pub fn delimited(fams: &[MetricFamily]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in fams {
            f.encode_length_delimited(&mut out)
                .expect("encoding into a Vec should not fail");
        }
        out
    }
}
