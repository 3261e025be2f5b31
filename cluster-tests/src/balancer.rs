//! The load balancer in front of the container nodes: Debian's haproxy, run on the host with a
//! temporary config, routing on `/-/ready` (checked every 500 ms, 2 failures take a node out,
//! 2 successes bring it back). Clients push and Prometheus scrapes through it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::testbed::{Slot, HTTP_PORT};
use crate::{free_tcp_port, http, wait_for};

pub struct Balancer {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
}

/// The haproxy config for `slots`: every slot is listed, so nodes added later (scale-up) enter
/// the rotation once their readiness check passes, and absent ones simply stay down.
pub fn haproxy_config(bind: &str, servers: &[(String, String)]) -> String {
    let mut cfg = format!(
        "global\n  maxconn 1024\n\
         defaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n  timeout server 6s\n\
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
        let port = free_tcp_port();
        let dir = crate::testbed::tempdir("pushgate-haproxy");
        let servers: Vec<(String, String)> = slots
            .iter()
            .map(|s| (format!("n{}", s.index), format!("{}:{HTTP_PORT}", s.ip)))
            .collect();
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(&cfg, haproxy_config(&format!("127.0.0.1:{port}"), &servers))
            .expect("haproxy config should be writable");
        let child = Command::new(haproxy_binary())
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
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

    /// `host:port`, the form prometheus_client's `push_to_gateway` takes.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
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
