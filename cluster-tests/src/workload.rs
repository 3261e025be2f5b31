//! Continuous pushes from several clients through the load balancer, a scrape watcher, and the
//! invariants checked once a fault scenario settles.
//!
//! Each client owns its groups (`job=c<client>_g<k>`), so the last acknowledged value of a group
//! is known exactly. A push that failed (error status or timeout) may still have landed, even
//! later than a newer acknowledged push if it was stuck in a paused node, so its value is
//! *allowed* too but never *required*. Every second round a client creates a short-lived group
//! (`job=c<client>_del<k>`), then deletes it; one whose push and delete were both acknowledged
//! must never come back.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::http_timeout;

/// The gauge every client pushes.
pub const METRIC: &str = "bed_value";
/// Client-side deadline of a push or a scrape.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(8);

/// What the clients know about one group.
#[derive(Clone, Debug, Default)]
pub struct GroupLedger {
    /// Last acknowledged value.
    pub acked: Option<u64>,
    /// Values of failed pushes: each may or may not be what the cluster holds.
    pub maybe: BTreeSet<u64>,
}

/// What the clients know about all groups, and when things failed.
#[derive(Debug, Default)]
pub struct Ledger {
    pub groups: BTreeMap<String, GroupLedger>,
    /// Short-lived groups whose push and delete were both acknowledged.
    pub deleted: BTreeSet<String>,
    pub pushes_ok: u64,
    /// Failed pushes: when each was sent and when it failed, and what happened.
    pub push_failures: Vec<((Instant, Instant), String)>,
    pub scrapes_ok: u64,
    pub scrape_failures: Vec<((Instant, Instant), String)>,
    /// Scrapes answered 200 that missed acknowledged groups (or were invalid).
    pub incomplete_views: Vec<(Instant, String)>,
    /// Fault and heal moments, labelled.
    pub events: Vec<(Instant, String)>,
    /// Moments the scenario saw the cluster settled after a fault or heal (every node's view
    /// of the members as it should be): failures are explained only between an event and the
    /// next of these.
    pub settled: Vec<Instant>,
}

/// Pushing clients and a scrape watcher, all through `base` (the load balancer).
pub struct Workload {
    pub started: Instant,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

fn lock(l: &Mutex<Ledger>) -> MutexGuard<'_, Ledger> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

impl Workload {
    /// Starts `clients` clients, each cycling over `groups` groups with one push every
    /// `interval`, and a watcher scraping every 250 ms.
    pub fn start(base: &str, clients: usize, groups: usize, interval: Duration) -> Workload {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for c in 0..clients {
            let (base, ledger, stop) = (base.to_owned(), ledger.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                client(c, &base, groups, interval, &ledger, &stop)
            }));
        }
        {
            let (base, ledger, stop) = (base.to_owned(), ledger.clone(), stop.clone());
            threads.push(std::thread::spawn(move || watcher(&base, &ledger, &stop)));
        }
        Workload {
            started: Instant::now(),
            ledger,
            stop,
            threads,
        }
    }

    /// Records a fault or heal moment; failures are judged against these.
    pub fn event(&self, what: &str) {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        eprintln!(
            "[{:6.1}s] {what} (unix time {unix:.3})",
            self.started.elapsed().as_secs_f64()
        );
        lock(&self.ledger)
            .events
            .push((Instant::now(), what.to_owned()));
    }

    /// Pushes `n` groups `<prefix><i>` once each and never again: unlike the clients' groups,
    /// which every push rewrites onto their current owners, these stay where they were placed,
    /// so they show whether rebalancing and handoff keep them when the ring changes.
    pub fn push_cold(&self, base: &str, prefix: &str, n: usize) {
        for i in 0..n {
            let job = format!("{prefix}{i}");
            let value = 1_000_000 + i as u64;
            let body = format!("# TYPE {METRIC} gauge\n{METRIC}{{client=\"cold\"}} {value}\n");
            let sent = Instant::now();
            let res = http_timeout(
                "PUT",
                base,
                &format!("/metrics/job/{job}"),
                body.as_bytes(),
                CLIENT_TIMEOUT,
            );
            let mut l = lock(&self.ledger);
            let g = l.groups.entry(job.clone()).or_default();
            if matches!(res, Ok((200, _))) {
                g.acked = Some(value);
                l.pushes_ok += 1;
            } else {
                g.maybe.insert(value);
                l.push_failures.push((
                    (sent, Instant::now()),
                    format!("PUT {job}: {}", describe(&res)),
                ));
            }
        }
    }

    /// Records that the cluster was seen settled after the last fault or heal.
    pub fn settled(&self) {
        lock(&self.ledger).settled.push(Instant::now());
    }

    /// Pushes acknowledged so far.
    pub fn pushes_ok(&self) -> u64 {
        lock(&self.ledger).pushes_ok
    }

    /// Stops every thread and returns the ledger.
    pub fn stop(mut self) -> Ledger {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        std::mem::take(&mut *lock(&self.ledger))
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn client(
    c: usize,
    base: &str,
    groups: usize,
    interval: Duration,
    ledger: &Mutex<Ledger>,
    stop: &AtomicBool,
) {
    let mut value = 0u64;
    let mut round = 0usize;
    while !stop.load(Ordering::Acquire) {
        let next = Instant::now() + interval;
        value += 1;
        let job = format!("c{c}_g{}", value as usize % groups);
        let body = format!("# TYPE {METRIC} gauge\n{METRIC}{{client=\"{c}\"}} {value}\n");
        let sent = Instant::now();
        let res = http_timeout(
            "PUT",
            base,
            &format!("/metrics/job/{job}"),
            body.as_bytes(),
            CLIENT_TIMEOUT,
        );
        {
            let mut l = lock(ledger);
            let g = l.groups.entry(job.clone()).or_default();
            match &res {
                Ok((200, _)) => {
                    g.acked = Some(value);
                    l.pushes_ok += 1;
                }
                other => {
                    g.maybe.insert(value);
                    l.push_failures.push((
                        (sent, Instant::now()),
                        format!("PUT {job}: {}", describe(other)),
                    ));
                }
            }
        }
        if value as usize % groups == 0 {
            round += 1;
            if round % 2 == 0 {
                short_lived(c, round, base, ledger);
            }
        }
        // Pacing, not waiting for a condition: a steady push rate per client.
        if let Some(rest) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(rest);
        }
    }
}

fn short_lived(c: usize, round: usize, base: &str, ledger: &Mutex<Ledger>) {
    let job = format!("c{c}_del{round}");
    let path = format!("/metrics/job/{job}");
    let body = format!("# TYPE {METRIC} gauge\n{METRIC}{{client=\"{c}\"}} 1\n");
    let sent = Instant::now();
    let pushed = http_timeout("PUT", base, &path, body.as_bytes(), CLIENT_TIMEOUT);
    let deleted = http_timeout("DELETE", base, &path, b"", CLIENT_TIMEOUT);
    let mut l = lock(ledger);
    match (&pushed, &deleted) {
        (Ok((200, _)), Ok((202, _))) => {
            l.pushes_ok += 1;
            l.deleted.insert(job);
        }
        _ => l.push_failures.push((
            (sent, Instant::now()),
            format!(
                "PUT+DELETE {job}: {} / {}",
                describe(&pushed),
                describe(&deleted)
            ),
        )),
    }
}

fn describe(r: &std::io::Result<(u16, String)>) -> String {
    match r {
        Ok((st, body)) => format!("{st} {}", body.trim().chars().take(160).collect::<String>()),
        Err(e) => format!("error {e}"),
    }
}

fn watcher(base: &str, ledger: &Mutex<Ledger>, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        let next = Instant::now() + Duration::from_millis(250);
        // Groups acknowledged before the scrape starts must all be in it.
        let must: Vec<String> = lock(ledger)
            .groups
            .iter()
            .filter(|(_, g)| g.acked.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        let sent = Instant::now();
        let res = http_timeout("GET", base, "/metrics", b"", CLIENT_TIMEOUT);
        let mut l = lock(ledger);
        match &res {
            Ok((200, body)) => {
                l.scrapes_ok += 1;
                let seen = values(body);
                let missing: Vec<&String> =
                    must.iter().filter(|j| !seen.contains_key(*j)).collect();
                if !missing.is_empty() {
                    l.incomplete_views.push((
                        sent,
                        format!(
                            "{} acknowledged groups missing (body {} bytes), e.g. {:?}",
                            missing.len(),
                            body.len(),
                            &missing[..missing.len().min(5)]
                        ),
                    ));
                }
                if let Err(e) = well_formed(body) {
                    l.incomplete_views.push((sent, e));
                }
            }
            other => l.scrape_failures.push((
                (sent, Instant::now()),
                format!("GET /metrics: {}", describe(other)),
            )),
        }
        drop(l);
        if let Some(rest) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(rest);
        }
    }
}

/// `bed_value` samples of an exposition, by job.
pub fn values(body: &str) -> HashMap<String, u64> {
    body.lines()
        .filter(|l| l.starts_with(METRIC) && l[METRIC.len()..].starts_with('{'))
        .filter_map(|l| {
            let job = l.split("job=\"").nth(1)?.split('"').next()?.to_owned();
            let v: f64 = l.rsplit(' ').next()?.parse().ok()?;
            Some((job, v as u64))
        })
        .collect()
}

/// No series twice, at most one TYPE and one HELP line per family.
pub fn well_formed(body: &str) -> Result<(), String> {
    let mut series = BTreeSet::new();
    let mut meta = BTreeSet::new();
    for line in body.lines() {
        if line.starts_with("# TYPE ") || line.starts_with("# HELP ") {
            let key: String = line.split(' ').take(3).collect::<Vec<_>>().join(" ");
            if !meta.insert(key.clone()) {
                return Err(format!("duplicated metadata line: {key}"));
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let id = line.rsplit_once(' ').map(|(id, _)| id).unwrap_or(line);
            if !series.insert(id.to_owned()) {
                return Err(format!("duplicated series: {id}"));
            }
        }
    }
    Ok(())
}

pub use pushgate::testsupport::promtool_check;

/// Checks a settled exposition against the ledger: every group with its latest value (or the
/// value of a later failed push), no deleted group, nothing duplicated.
pub fn check_settled(body: &str, ledger: &Ledger) -> Result<(), String> {
    well_formed(body)?;
    let seen = values(body);
    let mut problems = Vec::new();
    for (job, g) in &ledger.groups {
        match (seen.get(job), g.acked) {
            (Some(v), Some(a)) if *v == a || g.maybe.contains(v) => {}
            (None, None) => {}
            (Some(v), None) if g.maybe.contains(v) => {}
            (got, _) => problems.push(format!(
                "{job}: got {got:?}, acknowledged {:?} (failed pushes: {})",
                g.acked,
                g.maybe.len()
            )),
        }
    }
    for job in &ledger.deleted {
        if seen.contains_key(job) {
            problems.push(format!("{job}: deleted, but back"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} problems, e.g. {:?}",
            problems.len(),
            &problems[..problems.len().min(8)]
        ))
    }
}

impl Ledger {
    /// Failures (push or scrape) not explained by a fault: an explained one was outstanding at
    /// some moment between a fault or heal event and the next time the cluster was seen
    /// settled (sent or failed in such a stretch, or in flight across an event). An order, not
    /// a grace period: a request inside a node as it froze fails only when the balancer gives
    /// up on it, but it was in flight at the fault.
    pub fn unexplained(&self) -> Vec<String> {
        self.push_failures
            .iter()
            .chain(self.scrape_failures.iter())
            .filter(|((sent, failed), _)| {
                !(self.unsettled(*sent)
                    || self.unsettled(*failed)
                    || self.events.iter().any(|(e, _)| sent <= e && e <= failed))
            })
            .map(|(_, what)| what.clone())
            .collect()
    }

    /// Every failure (push or scrape).
    pub fn all_failures(&self) -> Vec<String> {
        self.push_failures
            .iter()
            .chain(self.scrape_failures.iter())
            .map(|(_, what)| what.clone())
            .collect()
    }

    /// Whether `at` lies between a fault or heal event and the next time the cluster was seen
    /// settled.
    pub fn unsettled(&self, at: Instant) -> bool {
        let last_event = self
            .events
            .iter()
            .map(|(e, _)| *e)
            .filter(|e| *e <= at)
            .max();
        let last_settled = self.settled.iter().copied().filter(|s| *s <= at).max();
        match (last_event, last_settled) {
            (Some(e), Some(s)) => e > s,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// One line for the test output.
    pub fn summary(&self, started: Instant) -> String {
        let since = |at: &Instant| at.duration_since(started).as_secs_f64();
        let rel = |v: &[((Instant, Instant), String)]| -> String {
            match (v.first(), v.last()) {
                (Some(a), Some(b)) => format!(
                    "{} sent between {:.1}s and {:.1}s",
                    v.len(),
                    since(&a.0 .0),
                    since(&b.0 .0)
                ),
                _ => "0".to_owned(),
            }
        };
        let first: Vec<String> = self
            .push_failures
            .iter()
            .chain(self.scrape_failures.iter())
            .take(4)
            .map(|((sent, failed), what)| {
                format!(
                    "[sent {:.1}s, failed {:.1}s] {what}",
                    since(sent),
                    since(failed)
                )
            })
            .collect();
        format!(
            "pushes ok {}, push failures {}; scrapes ok {}, scrape failures {}; incomplete views {}; groups {}, deleted {}; first failures: {first:?}",
            self.pushes_ok,
            rel(&self.push_failures),
            self.scrapes_ok,
            rel(&self.scrape_failures),
            self.incomplete_views.len(),
            self.groups.len(),
            self.deleted.len()
        )
    }
}
