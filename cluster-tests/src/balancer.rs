//! The load balancer in front of the container nodes: Debian's haproxy, run on the host with a
//! temporary config, routing on `/-/ready` (checked every 500 ms, 2 failures take a node out,
//! 2 successes bring it back). Clients push and Prometheus scrapes through it. Every request is
//! logged (`option httplog`, to a file beside the config), so a test that fails can show which
//! node answered a bad response and how haproxy saw it end ([`Balancer::unusual_log`]).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::testbed::{Slot, HTTP_PORT};
use crate::{free_port, http, wait_for};

pub struct Balancer {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
}

/// The haproxy config for `slots`: every slot is listed, so nodes added later (scale-up) enter
/// the rotation once their readiness check passes, and absent ones simply stay down.
pub fn haproxy_config(bind: &str, servers: &[(String, String)]) -> String {
    let mut cfg = format!(
        "global\n  maxconn 1024\n  log stderr format raw local0 info\n\
         defaults\n  mode http\n  log global\n  option httplog\n  timeout connect 1s\n  timeout client 30s\n  timeout server 6s\n\
         \x20 retries 2\n  option redispatch\n\
         frontend pushgate\n  bind {bind}\n  default_backend nodes\n\
         backend nodes\n  balance roundrobin\n  option httpchk GET /-/ready\n\
         \x20 default-server inter 500ms fall 2 rise 2\n"
    );
    for (name, addr) in servers {
        cfg.push_str(&format!("  server {name} {addr} check\n"));
    }
    cfg
}

impl Balancer {
    /// Starts haproxy on 127.0.0.1 for `slots` and waits until at least one backend is up.
    pub fn start(slots: &[Slot]) -> Balancer {
        let port = free_port();
        let dir = crate::testbed::tempdir("pushgate-haproxy");
        let servers: Vec<(String, String)> = slots
            .iter()
            .map(|s| (format!("n{}", s.index), format!("{}:{HTTP_PORT}", s.ip)))
            .collect();
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(&cfg, haproxy_config(&format!("127.0.0.1:{port}"), &servers))
            .expect("haproxy config should be writable");
        let log =
            std::fs::File::create(dir.join("haproxy.log")).expect("haproxy log should be writable");
        let child = Command::new(haproxy_binary())
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("haproxy should start (scripts/install-testbed-deps.sh installs it)");
        let b = Balancer {
            port,
            child: Some(child),
            dir,
        };
        let url = b.url();
        wait_for(
            "the load balancer to route to a ready node",
            Duration::from_secs(20),
            || matches!(http("GET", &url, "/-/ready", b""), Ok((200, _))),
        );
        b
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The logged requests that did not end normally (a status other than 2xx, or a
    /// termination state other than `----`: e.g. `SD` the server closed or aborted the
    /// response midway, `sD` the server timed out during the body), and haproxy's own notices
    /// (servers going down or up); at most `max`, the first ones.
    pub fn unusual_log(&self, max: usize) -> Vec<String> {
        let text = std::fs::read_to_string(self.dir.join("haproxy.log")).unwrap_or_default();
        unusual_lines(&text).take(max).map(str::to_owned).collect()
    }

    /// `host:port`, the form prometheus_client's `push_to_gateway` takes.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// See [`Balancer::unusual_log`]. An `option httplog` line reads `client [date] frontend
/// backend/server timers status bytes cookie cookie termination-state ...`.
fn unusual_lines(log: &str) -> impl Iterator<Item = &str> {
    log.lines().filter(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let request = f.len() > 9 && f[1].starts_with('[') && f[3].contains('/');
        !(request && f[5].starts_with('2') && f[9] == "----")
    })
}

fn haproxy_binary() -> String {
    std::env::var("HAPROXY").unwrap_or_else(|_| {
        if std::path::Path::new("/usr/sbin/haproxy").exists() {
            "/usr/sbin/haproxy".to_owned()
        } else {
            "haproxy".to_owned()
        }
    })
}

impl Drop for Balancer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::unusual_lines;

    #[test]
    fn unusual_log_lines_are_failed_or_cut_requests_and_notices() {
        let log = "127.0.0.1:5000 [30/Nov/2026:17:20:00.123] pushgate nodes/n1 0/0/0/1/1 200 512 - - ---- 3/3/0/0/0 0/0 \"GET /metrics HTTP/1.1\"\n\
                   127.0.0.1:5001 [30/Nov/2026:17:20:00.223] pushgate nodes/n2 0/0/0/1/6001 200 120 - - sD-- 3/3/0/0/0 0/0 \"GET /metrics HTTP/1.1\"\n\
                   127.0.0.1:5002 [30/Nov/2026:17:20:00.323] pushgate nodes/n3 0/0/0/-1/3 503 217 - - SC-- 3/3/0/0/0 0/0 \"PUT /metrics/job/a HTTP/1.1\"\n\
                   Server nodes/n3 is DOWN, reason: Layer4 timeout, check duration: 501ms.\n\
                   127.0.0.1:5003 [30/Nov/2026:17:20:00.423] pushgate nodes/n1 0/0/0/1/1 202 0 - - ---- 3/3/0/0/0 0/0 \"PUT /metrics/job/b HTTP/1.1\"\n";
        let got: Vec<&str> = unusual_lines(log).collect();
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].contains("nodes/n2") && got[0].contains("sD--"));
        assert!(got[1].contains(" 503 "));
        assert!(got[2].starts_with("Server nodes/n3 is DOWN"));
    }
}
