//! The container test bed: pushgate nodes in Docker containers on a private network.
//!
//! [`Image::ensure`] builds the repository Dockerfile's `runtime` stage from the locally built
//! binary (plus the shared libraries `ldd` lists and the loader, with scripts/build-image.sh), so
//! no registry is needed. [`Bed::new`] creates a network with its own /24 subnet; every node gets a fixed address in it (`.11` for node 1, `.12` for node
//! 2, ...), so a node keeps its id across `docker restart` and network reconnects. Every container
//! and network carries the labels `pushgate-testbed=1`, `pushgate-testbed.run=<run id>` and
//! `pushgate-testbed.pid=<test process id>`; dropping the [`Bed`] removes its own, and a new bed
//! removes those of test processes that no longer exist (a test killed before its `Drop` ran).
//! `scripts/testbed-clean.sh` removes them all by hand.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{http, wait_for};

/// Label on everything the test bed creates.
pub const LABEL: &str = "pushgate-testbed";
/// HTTP port inside every container.
pub const HTTP_PORT: u16 = 9091;
/// Gossip (UDP) and gRPC (TCP) port inside every container.
pub const CLUSTER_PORT: u16 = 9094;
/// A node's drain after SIGTERM: unready, still serving. The balancer ([`crate::balancer`])
/// notices an unready node within 1 s (`inter 500ms fall 2`); the default 10 s would only make
/// every stop slower.
pub const DRAIN_PERIOD: &str = "3s";
/// Seconds Docker waits after SIGTERM before SIGKILL: the drain, the handover (at most
/// `--cluster.shutdown-timeout`, 30 s) and the final snapshot.
pub const STOP_TIMEOUT: &str = "45";

/// Whether a Docker engine answers.
pub fn docker_available() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The variable that lets the container tests pass without a Docker engine. Only an explicit
/// opt-out skips them: a test that skipped by itself would pass, and a CI machine whose engine
/// is missing or refuses (permissions) would be green without one partition or scale test.
pub const SKIP_CONTAINERS_VAR: &str = "PUSHGATE_SKIP_CONTAINER_TESTS";

/// Fails the calling test when there is no Docker engine, unless the operator opted out with
/// `PUSHGATE_SKIP_CONTAINER_TESTS=1` (then it returns, saying so).
#[macro_export]
macro_rules! require_docker {
    () => {
        if !$crate::testbed::docker_available() {
            if std::env::var($crate::testbed::SKIP_CONTAINERS_VAR).as_deref() == Ok("1") {
                eprintln!(
                    "SKIPPED on request ({}=1): no Docker engine, container test bed not run",
                    $crate::testbed::SKIP_CONTAINERS_VAR
                );
                return;
            }
            panic!(
                "no Docker engine (`docker info` failed): the container test bed needs one; \
                 set {}=1 to skip these tests knowingly",
                $crate::testbed::SKIP_CONTAINERS_VAR
            );
        }
    };
}

/// Runs `docker <args>` and returns its trimmed stdout, or its stderr as the error.
pub fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn docker_ok(args: &[&str]) -> String {
    docker(args).unwrap_or_else(|e| panic!("{e}"))
}

/// The pushgate image built from the local binary.
pub struct Image {
    pub tag: String,
}

impl Image {
    /// Builds (once per binary and recipe: the tag names a hash of the binary's path, size and
    /// mtime, and of the Dockerfile and scripts/rootfs.sh) the image.
    pub fn ensure() -> Image {
        let bin = crate::binary();
        assert!(
            bin.exists(),
            "pushgate binary not found at {} (set PUSHGATE_BIN or cargo build)",
            bin.display()
        );
        let meta = std::fs::metadata(&bin).expect("the binary should be readable");
        let mut h = DefaultHasher::new();
        bin.hash(&mut h);
        meta.len().hash(&mut h);
        meta.modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .hash(&mut h);
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for recipe in ["Dockerfile", "scripts/rootfs.sh"] {
            std::fs::read(repo.join(recipe))
                .unwrap_or_else(|e| panic!("{recipe}: {e}"))
                .hash(&mut h);
        }
        let tag = format!("pushgate-testbed:{:016x}", h.finish());
        if docker(&["image", "inspect", &tag]).is_ok() {
            return Image { tag };
        }
        let started = Instant::now();
        // The image users build offline: the repository Dockerfile's `runtime` stage over the
        // files scripts/rootfs.sh lays out, so the tests run what the examples ship.
        let script = repo.join("scripts/build-image.sh");
        let out = Command::new(&script)
            .arg(&bin)
            .arg(&tag)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "built image {tag} from {} in {:.1?}",
            bin.display(),
            started.elapsed()
        );
        Image { tag }
    }
}

/// A fresh directory under the system temp dir.
pub fn tempdir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", unique_suffix()));
    std::fs::create_dir_all(&dir).expect("temp dir should be creatable");
    dir
}

fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!("{}-{:x}", std::process::id(), nanos & 0xffff_ffff)
}

/// One node slot: its container name and fixed address, whether it runs or not.
#[derive(Clone, Debug)]
pub struct Slot {
    pub index: usize,
    pub name: String,
    pub ip: String,
}

impl Slot {
    pub fn url(&self) -> String {
        format!("http://{}:{HTTP_PORT}", self.ip)
    }
    /// The node's id in the ring: its advertised cluster address.
    pub fn id(&self) -> String {
        format!("{}:{CLUSTER_PORT}", self.ip)
    }
}

/// A Docker network and the pushgate containers on it; removed on drop.
pub struct Bed {
    pub run: String,
    pub network: String,
    prefix: String,
    image: Image,
    /// Extra flags for every node.
    extra: Vec<String>,
    /// Nodes the seeds point at (by container name, resolved by Docker's DNS).
    seeds: usize,
    /// Slots of the nodes started so far (running or not), by index - 1.
    pub slots: Vec<Slot>,
}

impl Bed {
    /// A network and `n` running nodes, each seeing all `n` as active members.
    pub fn start(n: usize, extra: &[&str]) -> Bed {
        let image = Image::ensure();
        remove_orphans();
        let run = format!("pgbed-{}", unique_suffix());
        let pid = std::process::id().to_string();
        let mut network = None;
        for attempt in 0..20u32 {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock after 1970")
                .subsec_nanos();
            let seed = nanos ^ std::process::id().rotate_left(7) ^ attempt.wrapping_mul(2654435761);
            let prefix = format!("10.{}.{}", 200 + seed % 50, (seed >> 8) % 256);
            let subnet = format!("{prefix}.0/24");
            let res = docker(&[
                "network",
                "create",
                "--driver=bridge",
                &format!("--subnet={subnet}"),
                "--label",
                &format!("{LABEL}=1"),
                "--label",
                &format!("{LABEL}.run={run}"),
                "--label",
                &format!("{LABEL}.pid={pid}"),
                &run,
            ]);
            match res {
                Ok(_) => {
                    network = Some(prefix);
                    break;
                }
                Err(e) if e.contains("overlap") || e.contains("in use") => continue,
                Err(e) => panic!("{e}"),
            }
        }
        let prefix = network.expect("some random 10.x.y.0/24 subnet should be free");
        let mut bed = Bed {
            network: run.clone(),
            run,
            prefix,
            image,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            seeds: n.min(3),
            slots: Vec::new(),
        };
        for _ in 0..n {
            bed.add_node();
        }
        bed.wait_members(n, Duration::from_secs(60));
        bed
    }

    /// The slot of node `i` (1-based), started or not.
    pub fn slot(&self, i: usize) -> Slot {
        Slot {
            index: i,
            name: format!("{}-n{i}", self.run),
            ip: format!("{}.{}", self.prefix, 10 + i),
        }
    }

    /// Starts the next node (`docker run`) and returns its slot; does not wait for it.
    pub fn add_node(&mut self) -> Slot {
        let slot = self.slot(self.slots.len() + 1);
        let mut args: Vec<String> = [
            "run",
            "-d",
            "--name",
            &slot.name,
            "--hostname",
            &slot.name,
            "--network",
            &self.network,
            "--ip",
            &slot.ip,
            "--stop-timeout",
            STOP_TIMEOUT,
            "--label",
            &format!("{LABEL}=1"),
            "--label",
            &format!("{LABEL}.run={}", self.run),
            "--label",
            &format!("{LABEL}.pid={}", std::process::id()),
            "--log-opt",
            "max-size=20m",
            &self.image.tag,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(format!("--web.listen-address=0.0.0.0:{HTTP_PORT}"));
        args.push(format!("--cluster.listen-address=0.0.0.0:{CLUSTER_PORT}"));
        args.push(format!("--cluster.advertise-address={}", slot.id()));
        for s in 1..=self.seeds {
            args.push(format!(
                "--cluster.peer={}:{CLUSTER_PORT}",
                self.slot(s).name
            ));
        }
        args.push("--persistence.file=/data/pushgate.snapshot".to_owned());
        args.push("--web.enable-admin-api".to_owned());
        args.push("--log.level=info".to_owned());
        args.push(format!("--cluster.drain-period={DRAIN_PERIOD}"));
        args.extend(self.extra.iter().cloned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        docker_ok(&refs);
        self.slots.push(slot.clone());
        slot
    }

    /// Waits until every running node is ready and counts `n` active members.
    pub fn wait_members(&self, n: usize, limit: Duration) -> Duration {
        let started = Instant::now();
        let want = format!("pushgate_cluster_members{{state=\"active\"}} {n}\n");
        for slot in self.running() {
            let url = slot.url();
            wait_for(
                &format!("{} ready with {n} active members", slot.name),
                limit.saturating_sub(started.elapsed()),
                || {
                    matches!(http("GET", &url, "/-/ready", b""), Ok((200, _)))
                        && matches!(http("GET", &url, "/metrics", b""), Ok((200, body)) if body.contains(&want))
                },
            );
        }
        started.elapsed()
    }

    /// The slots whose containers run (and are not paused).
    pub fn running(&self) -> Vec<Slot> {
        self.slots
            .iter()
            .filter(|s| {
                docker(&[
                    "inspect",
                    "-f",
                    "{{.State.Running}} {{.State.Paused}}",
                    &s.name,
                ])
                .map(|o| o == "true false")
                .unwrap_or(false)
            })
            .cloned()
            .collect()
    }

    /// `docker kill` (SIGKILL): a crash.
    pub fn kill(&self, slot: &Slot) {
        docker_ok(&["kill", &slot.name]);
    }
    /// `docker start` of a stopped or killed node.
    pub fn start_again(&self, slot: &Slot) {
        docker_ok(&["start", &slot.name]);
    }
    /// `docker stop` (SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]): a graceful stop.
    pub fn stop(&self, slot: &Slot) {
        docker_ok(&["stop", "-t", STOP_TIMEOUT, &slot.name]);
    }
    /// `docker restart` (graceful stop, then start).
    pub fn restart(&self, slot: &Slot) {
        docker_ok(&["restart", "-t", STOP_TIMEOUT, &slot.name]);
    }
    pub fn pause(&self, slot: &Slot) {
        docker_ok(&["pause", &slot.name]);
    }
    pub fn unpause(&self, slot: &Slot) {
        docker_ok(&["unpause", &slot.name]);
    }
    /// Cuts the node off the network: no gossip, no gRPC, no HTTP from the load balancer.
    pub fn disconnect(&self, slot: &Slot) {
        docker_ok(&["network", "disconnect", &self.network, &slot.name]);
    }
    /// Reconnects a disconnected node with its old address.
    pub fn reconnect(&self, slot: &Slot) {
        docker_ok(&[
            "network",
            "connect",
            "--ip",
            &slot.ip,
            &self.network,
            &slot.name,
        ]);
    }
    /// Removes a node's container for good.
    pub fn remove(&self, slot: &Slot) {
        let _ = docker(&["rm", "-f", &slot.name]);
    }

    /// The last lines of a node's log, for failure messages.
    pub fn logs(&self, slot: &Slot, lines: usize) -> String {
        let out = Command::new("docker")
            .args(["logs", "--tail", &lines.to_string(), &slot.name])
            .output();
        match out {
            Ok(o) => format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => e.to_string(),
        }
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        if std::env::var_os("PUSHGATE_TESTBED_KEEP").is_some() {
            eprintln!(
                "PUSHGATE_TESTBED_KEEP set: leaving run {} (scripts/testbed-clean.sh removes it)",
                self.run
            );
            return;
        }
        if std::thread::panicking() {
            for slot in &self.slots {
                eprintln!(
                    "---- last log lines of {} ----\n{}",
                    slot.name,
                    self.logs(slot, 30)
                );
            }
        }
        remove_run(&format!("{LABEL}.run={}", self.run));
    }
}

/// Removes the containers and networks matching a label filter.
fn remove_run(filter: &str) {
    let label = format!("label={filter}");
    if let Ok(ids) = docker(&["ps", "-aq", "--filter", &label]) {
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids);
            let _ = docker(&args);
        }
    }
    if let Ok(nets) = docker(&["network", "ls", "-q", "--filter", &label]) {
        for net in nets.split_whitespace() {
            let _ = docker(&["network", "rm", net]);
        }
    }
}

/// Removes what test processes that no longer exist left behind.
fn remove_orphans() {
    let Ok(pids) = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label={LABEL}"),
        "--format",
        &format!("{{{{.Label \"{LABEL}.pid\"}}}}"),
    ]) else {
        return;
    };
    let mut pids: Vec<String> = pids.split_whitespace().map(str::to_owned).collect();
    if let Ok(net_pids) = docker(&[
        "network",
        "ls",
        "--filter",
        &format!("label={LABEL}"),
        "--format",
        &format!("{{{{.Label \"{LABEL}.pid\"}}}}"),
    ]) {
        pids.extend(net_pids.split_whitespace().map(str::to_owned));
    }
    pids.sort_unstable();
    pids.dedup();
    for pid in pids {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            remove_run(&format!("{LABEL}.pid={pid}"));
        }
    }
}
