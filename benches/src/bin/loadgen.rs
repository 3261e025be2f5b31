//! `loadgen`: pushes realistic bodies to many groups of any Pushgateway-compatible server, then scrapes it.
//!
//! Each of `--connections` workers owns one keep-alive HTTP/1.1 connection and pushes in a closed loop
//! (send, wait for the response, send the next) to groups `/metrics/job/<job>/instance/i<N>`, for
//! `--duration` seconds (with `--owned-by`, only the instances a pushgate cluster places on the given
//! owners). Then it times `GET /metrics` a few times, counts the series it got back and
//! reads the server's resident memory. It prints a readable report, or one JSON line with `--json`.
//!
//! The client has to share the machine with the server, so it is kept cheap: bodies and request heads
//! are rendered before the run, a push is one `write` of head and body on a raw keep-alive connection
//! (`pushgate_benches::http1`, no general-purpose HTTP client), and latencies go into a preallocated
//! `Vec<u32>` per worker that is sorted once at the end. It measures its own CPU time and, with `--pid`,
//! the server's, and reports both per push: the server's CPU per push is the figure a noisy machine
//! disturbs least.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, ACCEPT, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use pushgate_benches::body::PushBodies;
use pushgate_benches::cpu::{process_cpu, total_cpu};
use pushgate_benches::http1::Conn;
use pushgate_benches::latency::LatencySummary;
use pushgate_benches::placement::instances_owned_by;
use pushgate_benches::scrape::{count_series, resident_memory_from_scrape, vm_rss_bytes};
use serde::Serialize;
use tokio::net::TcpStream;

const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Load generator for Pushgateway-compatible servers (pushgate, upstream, ...)"
)]
struct Args {
    /// Base URL of the server, with its route prefix if it has one.
    #[arg(long, default_value = "http://127.0.0.1:9091")]
    url: String,
    /// More base URLs to push through, e.g. the other nodes of a cluster (same route prefix):
    /// the connections are spread round-robin over --url and these, as behind a load balancer.
    /// Scrapes and the readiness wait use --url.
    #[arg(long = "also-url")]
    also_url: Vec<String>,
    /// Inserted before `/metrics` in push paths only: `/aggregate` pushes to aggregating
    /// groups (`<prefix>/aggregate/metrics/job/...`), which add up instead of replacing.
    #[arg(long = "push-path-prefix", default_value = "")]
    push_path_prefix: String,
    /// Distinct groups pushed to: /metrics/job/<job>/instance/i0 .. i<G-1>.
    #[arg(long, default_value_t = 10_000)]
    groups: usize,
    /// Concurrent keep-alive connections, one closed-loop worker each.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Seconds of measured pushing.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Series per push body (a 10-series histogram, then counters and gauges).
    #[arg(long, default_value_t = 20)]
    series: usize,
    /// PUT replaces the whole group, POST only the pushed metric families.
    #[arg(long, value_enum, default_value_t = PushMethod::Put)]
    method: PushMethod,
    /// Push every group once before measuring, so pushes, scrapes and memory see a full store.
    #[arg(long)]
    warmup: bool,
    /// Stop the warmup after this many seconds even if not every group was pushed (a server whose
    /// push cost grows with the store can take very long to fill); 0 means no limit.
    #[arg(long, default_value_t = 0.0)]
    warmup_limit: f64,
    /// Skip the measured pushes (after the warmup, if any) and only scrape.
    #[arg(long)]
    scrape_only: bool,
    /// Timed GET /metrics scrapes after the pushes; 0 skips scraping.
    #[arg(long, default_value_t = 3)]
    scrapes: usize,
    /// Server process id, to read its resident memory (/proc/<pid>/status) and CPU time
    /// (/proc/<pid>/stat); repeat it for a cluster (memory and CPU are then summed). Without it the
    /// process_resident_memory_bytes of the last scrape is used and no server CPU is reported.
    #[arg(long)]
    pid: Vec<u32>,
    /// Print one JSON line on stdout (the readable report goes to stderr).
    #[arg(long)]
    json: bool,
    /// Value of the job grouping label.
    #[arg(long, default_value = "loadgen")]
    job: String,
    /// Poll GET /-/ready for up to this many seconds before starting; 0 does not wait.
    #[arg(long, default_value_t = 0.0)]
    wait_ready: f64,
    /// Seconds one request may take before it counts as a timeout error.
    #[arg(long, default_value_t = 10.0)]
    request_timeout: f64,
    /// Hard limit on the whole run in seconds, warmup and scrapes included; exits 2 when hit.
    #[arg(long, default_value_t = 900.0)]
    timeout: f64,
    /// The node ids of a pushgate cluster (repeat for each; by default a node's id is its
    /// advertised cluster address, e.g. 127.0.0.1:9094), for --owned-by.
    #[arg(long = "cluster-member")]
    cluster_member: Vec<String>,
    /// Push only groups whose owners in that cluster are exactly these node ids, primary first
    /// (repeat; as many as the replication factor): the groups are then the first --groups
    /// instances i<N> placed so. E.g. push groups node 1 owns no copy of through node 1, then the
    /// same groups to their primary, to compare a push through a non-owner with a direct one.
    #[arg(long = "owned-by")]
    owned_by: Vec<String>,
    /// Runtime worker threads for the client.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print the push body of --series series (the first of the variants pushed) on stdout and
    /// exit, e.g. for another load generator (benches/limits.sh gives it to wrk).
    #[arg(long)]
    print_body: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum PushMethod {
    Put,
    Post,
}

impl PushMethod {
    fn http(self) -> Method {
        match self {
            Self::Put => Method::PUT,
            Self::Post => Method::POST,
        }
    }
}

/// Where the server is and the request targets, all resolved before the run.
struct Target {
    addr: SocketAddr,
    /// Where the pushes go: `addr`, then the --also-url addresses; worker i uses the i-th (mod n).
    push_addrs: Vec<SocketAddr>,
    host: HeaderValue,
    /// Route prefix without a trailing slash ("" for none).
    prefix: String,
    /// Per group, the request head up to the value of its Content-Length header.
    group_heads: Vec<Box<[u8]>>,
    request_timeout: Duration,
}

impl Target {
    async fn resolve(args: &Args) -> anyhow::Result<Self> {
        let (base, authority, addr) = resolve_url(&args.url, "--url").await?;
        let mut push_addrs = vec![addr];
        for url in &args.also_url {
            push_addrs.push(resolve_url(url, "--also-url").await?.2);
        }
        let prefix = base.path().trim_end_matches('/').to_owned();
        let method = args.method.http();
        let instances: Vec<usize> = if args.owned_by.is_empty() {
            (0..args.groups).collect()
        } else {
            instances_owned_by(&args.job, &args.cluster_member, &args.owned_by, args.groups)
                .map_err(|e| anyhow::anyhow!("--owned-by: {e}"))?
        };
        let group_heads = instances
            .into_iter()
            .map(|group| {
                let path = format!(
                    "{prefix}{}/metrics/job/{}/instance/i{group}",
                    args.push_path_prefix, args.job
                );
                path.parse::<Uri>()
                    .with_context(|| format!("job {:?} does not make a valid path", args.job))?;
                let head = format!(
                    "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: {TEXT_FORMAT}\r\nContent-Length: "
                );
                Ok(head.into_bytes().into_boxed_slice())
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            addr,
            push_addrs,
            host: HeaderValue::from_str(authority.as_str())
                .context("host is not a valid header")?,
            prefix,
            group_heads,
            request_timeout: Duration::from_secs_f64(args.request_timeout),
        })
    }

    async fn connect<B>(&self) -> anyhow::Result<SendRequest<B>>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // The connection task ends when the sender is dropped or the server closes the socket.
        tokio::spawn(connection);
        Ok(sender)
    }
}

/// A base URL's parts and the first address its host resolves to; `flag` names it in errors.
async fn resolve_url(
    url: &str,
    flag: &str,
) -> anyhow::Result<(Uri, hyper::http::uri::Authority, SocketAddr)> {
    let base: Uri = url
        .parse()
        .with_context(|| format!("invalid {flag} {url:?}"))?;
    if base.scheme_str() != Some("http") {
        bail!("{flag} must be an http:// URL (TLS is not supported by loadgen)");
    }
    let authority = base
        .authority()
        .with_context(|| format!("{flag} {url:?} has no host"))?
        .clone();
    let port = authority.port_u16().unwrap_or(80);
    let addr = tokio::net::lookup_host((authority.host(), port))
        .await
        .with_context(|| format!("cannot resolve {authority}"))?
        .next()
        .with_context(|| format!("{authority} resolves to no address"))?;
    Ok((base, authority, addr))
}

/// What the workers of one phase saw.
#[derive(Debug, Default)]
struct PhaseTally {
    ok: u64,
    latencies_us: Vec<u32>,
    /// Non-2xx responses by status code.
    statuses: BTreeMap<u16, u64>,
    /// Failures without a response, by kind.
    transport: BTreeMap<&'static str, u64>,
    first_error: Option<String>,
}

impl PhaseTally {
    fn merge(&mut self, other: Self) {
        self.ok += other.ok;
        self.latencies_us.extend_from_slice(&other.latencies_us);
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        for (kind, n) in other.transport {
            *self.transport.entry(kind).or_default() += n;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn errors(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.transport.values().sum::<u64>()
    }

    fn transport_error(&mut self, kind: &'static str, detail: impl std::fmt::Display) {
        *self.transport.entry(kind).or_default() += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{kind}: {detail}"));
        }
    }
}

/// Which groups a worker pushes and for how long.
#[derive(Debug, Clone, Copy)]
enum Schedule {
    /// Each group exactly once, split between the workers, unless the optional deadline passes first.
    EveryGroupOnce(Option<Instant>),
    /// Round-robin over the groups until the deadline.
    Until(Instant),
}

struct Worker {
    target: Arc<Target>,
    bodies: Arc<PushBodies>,
    index: usize,
    stride: usize,
}

impl Worker {
    async fn run(self, schedule: Schedule, record_latency: bool, capacity: usize) -> PhaseTally {
        let mut tally = PhaseTally {
            latencies_us: Vec::with_capacity(if record_latency { capacity } else { 0 }),
            ..PhaseTally::default()
        };
        let groups = self.target.group_heads.len();
        let mut conn: Option<Conn> = None;
        let mut head = Vec::with_capacity(256);
        // Workers start at different groups and step by the worker count, so two workers rarely
        // push to the same group at the same time.
        let mut next = self.index;
        let mut seq = self.index as u64;
        let addr = self.target.push_addrs[self.index % self.target.push_addrs.len()];
        loop {
            match schedule {
                Schedule::EveryGroupOnce(_) if next >= groups => break,
                Schedule::EveryGroupOnce(Some(deadline)) if Instant::now() >= deadline => break,
                Schedule::Until(deadline) if Instant::now() >= deadline => break,
                _ => {}
            }
            if groups == 0 {
                break;
            }
            let group = next % groups;
            if conn.is_none() {
                match Conn::connect(addr).await {
                    Ok(c) => conn = Some(c),
                    Err(err) => {
                        tally.transport_error("connect", err);
                        // Back off so a dead server does not turn the loop into a busy spin.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            let body = self.bodies.pick(seq);
            head.clear();
            head.extend_from_slice(&self.target.group_heads[group]);
            head.extend_from_slice(body.len().to_string().as_bytes());
            head.extend_from_slice(b"\r\n\r\n");
            let started = Instant::now();
            let outcome =
                tokio::time::timeout(self.target.request_timeout, c.request(&head, &body)).await;
            let elapsed = started.elapsed();
            match outcome {
                Ok(Ok(response)) => {
                    if (200..300).contains(&response.status) {
                        tally.ok += 1;
                        if record_latency {
                            tally
                                .latencies_us
                                .push(elapsed.as_micros().min(u32::MAX as u128) as u32);
                        }
                    } else {
                        *tally.statuses.entry(response.status).or_default() += 1;
                        if tally.first_error.is_none() {
                            let text = String::from_utf8_lossy(
                                &response.body[..response.body.len().min(300)],
                            );
                            tally.first_error =
                                Some(format!("{}: {}", response.status, text.trim()));
                        }
                    }
                    if response.close {
                        conn = None;
                    }
                }
                Ok(Err(err)) => {
                    tally.transport_error("http", err);
                    conn = None;
                }
                Err(_) => {
                    tally.transport_error("timeout", "no response within --request-timeout");
                    conn = None;
                }
            }
            next += self.stride;
            seq += 1;
        }
        tally
    }
}

/// Runs `connections` workers on one schedule and merges their tallies.
async fn run_phase(
    args: &Args,
    target: &Arc<Target>,
    bodies: &Arc<PushBodies>,
    schedule: Schedule,
    record_latency: bool,
) -> (PhaseTally, Duration) {
    let connections = args.connections.max(1);
    // Room for ~20k pushes/s over the duration without regrowing, split between the workers.
    let capacity = ((args.duration * 20_000.0) as usize / connections).clamp(1024, 1 << 20);
    let started = Instant::now();
    let handles: Vec<_> = (0..connections)
        .map(|index| {
            let worker = Worker {
                target: Arc::clone(target),
                bodies: Arc::clone(bodies),
                index,
                stride: connections,
            };
            tokio::spawn(worker.run(schedule, record_latency, capacity))
        })
        .collect();
    let mut tally = PhaseTally::default();
    for handle in handles {
        match handle.await {
            Ok(worker_tally) => tally.merge(worker_tally),
            Err(err) => tally.transport_error("worker-panic", err),
        }
    }
    (tally, started.elapsed())
}

#[derive(Debug, Serialize)]
struct WarmupReport {
    pushes_ok: u64,
    /// Whether every group was pushed successfully (false when --warmup-limit cut it short).
    complete: bool,
    seconds: f64,
    pushes_per_s: f64,
    errors: u64,
    first_error: Option<String>,
}

#[derive(Debug, Serialize)]
struct PushReport {
    seconds: f64,
    pushes_ok: u64,
    pushes_per_s: f64,
    latency: LatencySummary,
    errors: u64,
    errors_by_status: BTreeMap<u16, u64>,
    errors_by_kind: BTreeMap<&'static str, u64>,
    first_error: Option<String>,
    /// CPU time of the load generator itself per successful push, in microseconds.
    client_cpu_us_per_push: Option<f64>,
    /// CPU time of the server process(es) given with --pid per successful push, in microseconds.
    server_cpu_us_per_push: Option<f64>,
}

#[derive(Debug, Serialize)]
struct ScrapeReport {
    scrapes: usize,
    median_s: f64,
    min_s: f64,
    max_s: f64,
    bytes: usize,
    series: u64,
    /// Series carrying this run's job label.
    job_series: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    url: String,
    /// The --also-url base URLs the pushes were spread over besides `url`.
    also_urls: Vec<String>,
    method: PushMethod,
    groups: usize,
    connections: usize,
    series_per_push: usize,
    body_bytes: usize,
    warmup: Option<WarmupReport>,
    push: Option<PushReport>,
    scrape: Option<ScrapeReport>,
    rss_bytes: Option<u64>,
    rss_source: Option<String>,
}

async fn wait_ready(target: &Target, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    let path: Uri = format!("{}/-/ready", target.prefix).parse()?;
    let mut last = String::from("no attempt");
    while Instant::now() < deadline {
        match get(target, &path).await {
            Ok((status, _)) if status.is_success() => return Ok(()),
            Ok((status, _)) => last = format!("status {status}"),
            Err(err) => last = format!("{err:#}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("server not ready within {within:?}: {last}")
}

/// One GET on a fresh connection, body read to the end.
async fn get(target: &Target, path: &Uri) -> anyhow::Result<(hyper::StatusCode, Bytes)> {
    let mut sender: SendRequest<Empty<Bytes>> = target.connect().await?;
    let request = Request::get(path.clone())
        .header(HOST, target.host.clone())
        .header(ACCEPT, HeaderValue::from_static(TEXT_FORMAT))
        .body(Empty::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

async fn scrape(args: &Args, target: &Target) -> anyhow::Result<(ScrapeReport, Bytes)> {
    let path: Uri = format!("{}/metrics", target.prefix).parse()?;
    let mut times = Vec::with_capacity(args.scrapes);
    let mut last = Bytes::new();
    for _ in 0..args.scrapes {
        let started = Instant::now();
        // Scrapes of a big store can be slow; give them the run's hard limit rather than the push timeout.
        let (status, body) = get(target, &path).await?;
        times.push(started.elapsed().as_secs_f64());
        if !status.is_success() {
            bail!(
                "GET {path} returned {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            );
        }
        last = body;
    }
    times.sort_by(f64::total_cmp);
    let marker = format!(r#"job="{}""#, args.job);
    let count = count_series(&last, marker.as_bytes());
    let report = ScrapeReport {
        scrapes: times.len(),
        median_s: times[times.len() / 2],
        min_s: times[0],
        max_s: times[times.len() - 1],
        bytes: last.len(),
        series: count.total,
        job_series: count.marked,
    };
    Ok((report, last))
}

async fn run(args: &Args) -> anyhow::Result<Report> {
    if args.scrapes == 0 && args.scrape_only {
        bail!("--scrape-only with --scrapes 0 has nothing to do");
    }
    let target = Arc::new(Target::resolve(args).await?);
    if args.wait_ready > 0.0 {
        wait_ready(&target, Duration::from_secs_f64(args.wait_ready)).await?;
    }
    let bodies = Arc::new(PushBodies::new(args.series));
    let mut report = Report {
        url: args.url.clone(),
        also_urls: args.also_url.clone(),
        method: args.method,
        groups: args.groups,
        connections: args.connections,
        series_per_push: bodies.series(),
        body_bytes: bodies.typical_len(),
        warmup: None,
        push: None,
        scrape: None,
        rss_bytes: None,
        rss_source: None,
    };

    if args.warmup {
        let limit = (args.warmup_limit > 0.0)
            .then(|| Instant::now() + Duration::from_secs_f64(args.warmup_limit));
        let schedule = Schedule::EveryGroupOnce(limit);
        let (tally, elapsed) = run_phase(args, &target, &bodies, schedule, false).await;
        report.warmup = Some(WarmupReport {
            pushes_ok: tally.ok,
            complete: tally.ok == args.groups as u64,
            seconds: elapsed.as_secs_f64(),
            pushes_per_s: tally.ok as f64 / elapsed.as_secs_f64(),
            errors: tally.errors(),
            first_error: tally.first_error.clone(),
        });
    }

    if !args.scrape_only {
        let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
        let cpu_before = (process_cpu("self").ok(), server_cpu(&args.pid));
        let (mut tally, elapsed) =
            run_phase(args, &target, &bodies, Schedule::Until(deadline), true).await;
        let cpu_after = (process_cpu("self").ok(), server_cpu(&args.pid));
        let per_push = |before: Option<Duration>, after: Option<Duration>| match (before, after) {
            (Some(b), Some(a)) if tally.ok > 0 => {
                Some(a.saturating_sub(b).as_secs_f64() * 1e6 / tally.ok as f64)
            }
            _ => None,
        };
        report.push = Some(PushReport {
            seconds: elapsed.as_secs_f64(),
            pushes_ok: tally.ok,
            pushes_per_s: tally.ok as f64 / elapsed.as_secs_f64(),
            latency: LatencySummary::from_micros(&mut tally.latencies_us),
            errors: tally.errors(),
            errors_by_status: std::mem::take(&mut tally.statuses),
            errors_by_kind: std::mem::take(&mut tally.transport),
            first_error: tally.first_error.take(),
            client_cpu_us_per_push: per_push(cpu_before.0, cpu_after.0),
            server_cpu_us_per_push: per_push(cpu_before.1, cpu_after.1),
        });
    }

    let mut last_scrape = None;
    if args.scrapes > 0 {
        let (scrape_report, body) = scrape(args, &target).await?;
        report.scrape = Some(scrape_report);
        last_scrape = Some(body);
    }

    if !args.pid.is_empty() {
        let mut rss = 0;
        for &pid in &args.pid {
            rss += vm_rss_bytes(pid).with_context(|| format!("cannot read /proc/{pid}/status"))?;
        }
        report.rss_bytes = Some(rss);
        report.rss_source = Some(match args.pid.as_slice() {
            [pid] => format!("/proc/{pid}/status VmRSS"),
            pids => format!("VmRSS summed over {} processes", pids.len()),
        });
    } else if let Some(rss) = last_scrape.as_deref().and_then(resident_memory_from_scrape) {
        report.rss_bytes = Some(rss);
        report.rss_source = Some("process_resident_memory_bytes".to_owned());
    }
    Ok(report)
}

/// Summed CPU time of the server processes, when given and readable.
fn server_cpu(pids: &[u32]) -> Option<Duration> {
    if pids.is_empty() {
        return None;
    }
    total_cpu(pids).ok()
}

fn megabytes(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn print_report(report: &Report, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    writeln!(
        out,
        "loadgen -> {}{} {} groups={} connections={} series/push={} body={}B",
        report.url,
        report
            .also_urls
            .iter()
            .map(|u| format!(" + {u}"))
            .collect::<String>(),
        format!("{:?}", report.method).to_uppercase(),
        report.groups,
        report.connections,
        report.series_per_push,
        report.body_bytes
    )?;
    if let Some(w) = &report.warmup {
        writeln!(
            out,
            "warmup:  {} pushes in {:.2} s ({:.0}/s), {} errors{}",
            w.pushes_ok,
            w.seconds,
            w.pushes_per_s,
            w.errors,
            if w.complete {
                ""
            } else {
                " (INCOMPLETE: not every group was pushed)"
            }
        )?;
        if let Some(first) = &w.first_error {
            writeln!(out, "         first error: {first}")?;
        }
    }
    if let Some(p) = &report.push {
        writeln!(
            out,
            "push:    {} ok in {:.2} s = {:.1} pushes/s",
            p.pushes_ok, p.seconds, p.pushes_per_s
        )?;
        let l = &p.latency;
        writeln!(
            out,
            "latency: p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms  mean {:.2} ms",
            l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms, l.mean_ms
        )?;
        let us = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} µs"));
        writeln!(
            out,
            "cpu:     server {} per push, loadgen {} per push",
            us(p.server_cpu_us_per_push),
            us(p.client_cpu_us_per_push)
        )?;
        if p.errors == 0 {
            writeln!(out, "errors:  none")?;
        } else {
            let by_status = p
                .errors_by_status
                .iter()
                .map(|(s, n)| format!("status {s}: {n}"));
            let by_kind = p.errors_by_kind.iter().map(|(k, n)| format!("{k}: {n}"));
            let all: Vec<String> = by_status.chain(by_kind).collect();
            writeln!(out, "errors:  {} ({})", p.errors, all.join(", "))?;
            if let Some(first) = &p.first_error {
                writeln!(out, "         first error: {first}")?;
            }
        }
    }
    if let Some(s) = &report.scrape {
        writeln!(
            out,
            "scrape:  {} x GET /metrics: median {:.3} s (min {:.3}, max {:.3}), {:.1} MB, {} series ({} from this job)",
            s.scrapes,
            s.median_s,
            s.min_s,
            s.max_s,
            megabytes(s.bytes as u64),
            s.series,
            s.job_series
        )?;
    }
    match (report.rss_bytes, &report.rss_source) {
        (Some(rss), Some(source)) => {
            writeln!(out, "memory:  rss {:.1} MB ({source})", megabytes(rss))?
        }
        _ => writeln!(
            out,
            "memory:  unknown (pass --pid, or scrape a server that exports process metrics)"
        )?,
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.print_body {
        print!("{}", pushgate_benches::body::render(args.series, 0));
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("loadgen: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let hard_limit = Duration::from_secs_f64(args.timeout);
    let outcome = runtime.block_on(async { tokio::time::timeout(hard_limit, run(&args)).await });
    // Do not wait for connection tasks still blocked on a server that stopped answering.
    runtime.shutdown_timeout(Duration::from_millis(100));
    let report = match outcome {
        Ok(Ok(report)) => report,
        Ok(Err(err)) => {
            eprintln!("loadgen: {err:#}");
            return ExitCode::FAILURE;
        }
        Err(_) => {
            eprintln!("loadgen: hard timeout of {hard_limit:?} hit (--timeout); no results");
            return ExitCode::from(2);
        }
    };
    let printed = if args.json {
        print_report(&report, &mut std::io::stderr()).and_then(|()| {
            let line = serde_json::to_string(&report).map_err(std::io::Error::other)?;
            println!("{line}");
            Ok(())
        })
    } else {
        print_report(&report, &mut std::io::stdout())
    };
    if let Err(err) = printed {
        eprintln!("loadgen: cannot print the report: {err}");
        return ExitCode::FAILURE;
    }
    let pushed_nothing = report.push.as_ref().is_some_and(|p| p.pushes_ok == 0);
    if pushed_nothing {
        eprintln!("loadgen: no push succeeded");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
