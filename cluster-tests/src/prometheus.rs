//! Real Prometheus servers on the host (Debian's `prometheus`), each with a temporary config and
//! data directory: a scraper of the load balancer that remote-writes to a long-term store (a second
//! Prometheus with `--web.enable-remote-write-receiver`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, http, wait_for};

/// One series of a range query: its labels and its points `(time, value)`.
pub type RangeSeries = (serde_json::Value, Vec<(f64, f64)>);

pub struct Prometheus {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
}

impl Prometheus {
    /// A long-term store: accepts remote writes, scrapes nothing.
    pub fn store() -> Prometheus {
        Self::start(
            "global:\n  scrape_interval: 1m\n",
            &[],
            &["--web.enable-remote-write-receiver"],
        )
    }

    /// Scrapes `target` (host:port) every second with `honor_labels: true` and remote-writes
    /// everything to `store`.
    pub fn scraper(target: &str, store: &Prometheus) -> Prometheus {
        let cfg = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: pushgate\n    honor_labels: true\n\
             \x20   static_configs:\n      - targets: ['{target}']\n\
             remote_write:\n  - url: http://127.0.0.1:{}/api/v1/write\n\
             \x20   queue_config:\n      batch_send_deadline: 1s\n      min_backoff: 100ms\n      max_backoff: 1s\n",
            store.port
        );
        Self::start(&cfg, &[], &[])
    }

    /// Runs Prometheus with `config` as its whole configuration file and `flags` besides the
    /// config, data and listen flags; `files` (name, content) are written next to the config
    /// first (e.g. the rule files it names: relative paths are resolved from the config's
    /// directory). Returns once `/-/ready` answers.
    pub fn start(config: &str, files: &[(&str, &str)], flags: &[&str]) -> Prometheus {
        let port = free_port();
        let dir = crate::testbed::tempdir("pushgate-prometheus");
        let cfg = dir.join("prometheus.yml");
        std::fs::write(&cfg, config).expect("prometheus config should be writable");
        for (name, content) in files {
            std::fs::write(dir.join(name), content).expect("prometheus files should be writable");
        }
        let log = std::fs::File::create(dir.join("prometheus.log"))
            .expect("prometheus log should be writable");
        let child =
            Command::new(std::env::var("PROMETHEUS").unwrap_or_else(|_| "prometheus".into()))
                .arg(format!("--config.file={}", cfg.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .args(flags)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("prometheus should start (scripts/install-testbed-deps.sh installs it)");
        let p = Prometheus {
            port,
            child: Some(child),
            dir,
        };
        let url = p.url();
        wait_for("prometheus to be ready", Duration::from_secs(30), || {
            matches!(http("GET", &url, "/-/ready", b""), Ok((200, _)))
        });
        p
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Instant query: `(labels, value)` of every series in the result.
    pub fn query(&self, promql: &str) -> Result<Vec<(serde_json::Value, f64)>, String> {
        query(&self.url(), promql)
    }

    /// Range query from `start` to `end` (Unix seconds) every `step` seconds: `(labels, points)`
    /// of every series in the result, each point `(time, value)`.
    pub fn query_range(
        &self,
        promql: &str,
        start: f64,
        end: f64,
        step: f64,
    ) -> Result<Vec<RangeSeries>, String> {
        let params = format!("&start={start:.3}&end={end:.3}&step={step}");
        Ok(api(&self.url(), "query_range", promql, &params)?
            .iter()
            .map(|s| {
                let points = s["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| Some((p[0].as_f64()?, p[1].as_str()?.parse().ok()?)))
                    .collect();
                (s["metric"].clone(), points)
            })
            .collect())
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Instant query of the Prometheus at `base` (a test's own, or one a compose project runs):
/// `(labels, value)` of every series in the result.
pub fn query(base: &str, promql: &str) -> Result<Vec<(serde_json::Value, f64)>, String> {
    Ok(api(base, "query", promql, "")?
        .iter()
        .filter_map(|s| {
            let value = s["value"][1].as_str()?.parse().ok()?;
            Some((s["metric"].clone(), value))
        })
        .collect())
}

/// The `data.result` array of `/api/v1/<endpoint>?query=<promql><params>`.
fn api(
    base: &str,
    endpoint: &str,
    promql: &str,
    params: &str,
) -> Result<Vec<serde_json::Value>, String> {
    let path = format!(
        "/api/v1/{endpoint}?query={}{params}",
        percent_encode(promql)
    );
    let (st, body) = http("GET", base, &path, b"").map_err(|e| e.to_string())?;
    if st != 200 {
        return Err(format!("{endpoint} {promql}: {st} {body}"));
    }
    let v: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("{endpoint} {promql}: {e}: {body}"))?;
    match v["data"]["result"].as_array() {
        Some(result) => Ok(result.clone()),
        None => Err(format!("{endpoint} {promql}: no result: {body}")),
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
