//! Log lines in upstream's shape, compared with the real upstream Pushgateway's output: the same
//! keys (`ts`, `caller`, `level`, `msg`), the same timestamp form, the same level names, keys
//! sorted in JSON and in upstream's order in logfmt, and the version in the line at start.

mod common;

use std::time::Duration;

use common::{poll_until, pushgate_bin, upstream_bin, Gateway, Req};

/// Lines a gateway logged after a start, a refused push and a stop (SIGTERM), at debug level.
fn lines_of(bin: &std::path::Path, name: &str, format: &str) -> Vec<String> {
    let flags = vec![format!("--log.format={format}"), "--log.level=debug".into()];
    let mut gw = Gateway::start(name, bin, &flags, "");
    let refused = gw.request(&Req::new("PUT", "/metrics/job/j").body(b"bad bad\n".to_vec()));
    assert_eq!(refused.status, 400);
    common::signal(gw.pid(), "TERM");
    assert!(gw.wait_exit(Duration::from_secs(30)), "{name} did not stop");
    gw.log()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// `2026-12-07T04:38:43.229Z`: go-kit's `ts` (UTC, milliseconds).
fn is_upstream_ts(ts: &str) -> bool {
    let b = ts.as_bytes();
    b.len() == 24
        && ts.ends_with('Z')
        && b[4] == b'-'
        && b[10] == b'T'
        && b[19] == b'.'
        && ts[20..23].bytes().all(|c| c.is_ascii_digit())
}

/// `name.ext:line`.
fn is_caller(c: &str) -> bool {
    c.rsplit_once(':').is_some_and(|(file, line)| {
        file.contains('.') && !file.contains('/') && line.parse::<u32>().is_ok()
    })
}

fn json_lines(lines: &[String]) -> Vec<serde_json::Map<String, serde_json::Value>> {
    lines
        .iter()
        .map(|l| match serde_json::from_str(l) {
            Ok(serde_json::Value::Object(o)) => o,
            _ => panic!("not a JSON object: {l}"),
        })
        .collect()
}

/// The keys of a raw JSON line in the order written.
fn raw_key_order(line: &str) -> Vec<String> {
    let mut keys = Vec::new();
    // Read from the text (a parsed map may reorder): each `"key":` at depth 1.
    let (mut depth, mut in_str, mut esc, mut start) = (0, false, false, None);
    for (i, c) in line.char_indices() {
        if in_str {
            match (esc, c) {
                (true, _) => esc = false,
                (false, '\\') => esc = true,
                (false, '"') => {
                    in_str = false;
                    if depth == 1 && line[i + 1..].starts_with(':') {
                        keys.push(line[start.unwrap()..i].to_owned());
                    }
                }
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_str = true;
                start = Some(i + 1);
            }
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            _ => {}
        }
    }
    keys
}

/// Each JSON line has `keys`, go-kit's `ts`, `caller` and level names, and sorted keys.
fn check_shape(
    name: &str,
    lines: &[serde_json::Map<String, serde_json::Value>],
    raw: &[String],
    keys: &[&str],
) {
    let levels = ["debug", "info", "warn", "error"];
    for (line, raw) in lines.iter().zip(raw) {
        for key in keys {
            assert!(line.contains_key(*key), "{name}: {raw}");
        }
        let text = |k: &str| line[k].as_str().unwrap_or_default();
        assert!(is_upstream_ts(text("ts")), "{name}: {raw}");
        assert!(is_caller(text("caller")), "{name}: {raw}");
        assert!(levels.contains(&text("level")), "{name}: {raw}");
        let order = raw_key_order(raw);
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted, "{name} sorts its keys: {raw}");
    }
}

#[test]
fn json_logs_have_upstream_s_keys_levels_and_order() {
    let upstream = lines_of(&upstream_bin(), "upstream", "json");
    let ours = lines_of(&pushgate_bin(), "pushgate", "json");
    let up = json_lines(&upstream);
    let pg = json_lines(&ours);
    // What upstream's lines show, checked first so that a change of the oracle is noticed;
    // then pushgate's, the same way, and without tracing's own keys.
    check_shape("upstream", &up, &upstream, &["ts", "caller", "level"]);
    assert!(up.iter().any(|l| l.contains_key("msg")));
    check_shape("pushgate", &pg, &ours, &["ts", "caller", "level", "msg"]);
    for (line, raw) in pg.iter().zip(&ours) {
        for not in ["timestamp", "message", "fields", "target"] {
            assert!(!line.contains_key(not), "pushgate: {raw}");
        }
    }
    // Both say at start which version is running, in a `version` key.
    for (name, lines) in [("upstream", &up), ("pushgate", &pg)] {
        let start = lines
            .first()
            .unwrap_or_else(|| panic!("{name} logged nothing"));
        assert!(
            start["msg"]
                .as_str()
                .unwrap()
                .starts_with("starting pushgate"),
            "{name}: {start:?}"
        );
        assert!(start.contains_key("version"), "{name}: {start:?}");
    }
}

#[test]
fn logfmt_lines_start_with_upstream_s_keys_in_its_order() {
    for (bin, name) in [(upstream_bin(), "upstream"), (pushgate_bin(), "pushgate")] {
        let lines = lines_of(&bin, name, "logfmt");
        assert!(!lines.is_empty(), "{name} logged nothing");
        for line in &lines {
            let keys: Vec<&str> = line
                .split(' ')
                .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
                .take(3)
                .collect();
            assert_eq!(keys, ["ts", "caller", "level"], "{name}: {line}");
            let ts = line["ts=".len()..].split(' ').next().unwrap();
            assert!(is_upstream_ts(ts), "{name}: {line}");
        }
        let first = &lines[0];
        assert!(
            first.contains("level=info msg=\"starting pushgate"),
            "{name}: {first}"
        );
        assert!(first.contains(" version="), "{name}: {first}");
    }
}

/// A cluster node says its version at start too (the same line as a single node's).
#[test]
fn a_cluster_node_logs_its_version_at_start() {
    let port = common::free_port();
    let flags = vec![format!("--cluster.listen-address=127.0.0.1:{port}")];
    let gw = Gateway::start("pushgate", &pushgate_bin(), &flags, "");
    let line = poll_until(Duration::from_secs(10), || {
        gw.log()
            .lines()
            .find(|l| l.contains("msg=\"starting pushgate\""))
            .map(str::to_owned)
    })
    .expect("no start line");
    assert!(
        line.contains(&format!("version={}", env!("CARGO_PKG_VERSION"))),
        "{line}"
    );
    assert!(
        gw.log().contains("started cluster membership"),
        "{}",
        gw.log()
    );
}

/// Refused pushes are logged at info, not one line each: a burst of them gives a line that
/// says why, and the count says how many (the rest within the interval are counted only).
#[test]
fn refused_pushes_are_logged_at_info_without_a_line_each() {
    let gw = Gateway::start("pushgate", &pushgate_bin(), &[], "");
    const BURST: usize = 20;
    for _ in 0..BURST {
        let r = gw.request(&Req::new("PUT", "/metrics/job/j").body(b"bad bad\n".to_vec()));
        assert_eq!(r.status, 400);
    }
    let log = gw.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("push refused")).collect();
    assert!(!lines.is_empty(), "no line for refused pushes:\n{log}");
    assert!(lines.len() < BURST, "a line per refused push:\n{log}");
    assert!(lines[0].contains("level=info"), "{}", lines[0]);
    assert!(
        lines[0].contains("reason=invalid status=400"),
        "{}",
        lines[0]
    );
    let text = gw.get("/metrics").text();
    assert!(
        text.contains(&format!(
            "pushgate_refused_pushes_total{{reason=\"invalid\"}} {BURST}"
        )),
        "{text}"
    );
}
