//! Group expiry with the real binary: `--push.group-ttl` and the `Pushgate-Group-TTL` header.
//! A group pushed with a short TTL leaves `/metrics` and `/api/v1/metrics`, one pushed again
//! in time stays, a bad header is 400 and changes nothing, and the API and status page show
//! each group's expiry. Env: `PUSHGATE_BIN`.

mod common;

use common::*;
use std::time::{Duration, Instant};

fn put_with_ttl(pg: &Gateway, job: &str, ttl: Option<&str>, body: &str) -> Resp {
    let mut req = Req::new("PUT", &format!("/metrics/job/{job}")).body(body.as_bytes().to_vec());
    if let Some(t) = ttl {
        req = req.header("Pushgate-Group-TTL", t);
    }
    pg.request(&req)
}

/// The jobs of the groups `/api/v1/metrics` lists, with each one's `expires_at` if any.
fn api_groups(pg: &Gateway) -> Vec<(String, Option<String>)> {
    let v: serde_json::Value =
        serde_json::from_slice(&pg.get("/api/v1/metrics").body).expect("the API answers JSON");
    let mut out: Vec<(String, Option<String>)> = v["data"]
        .as_array()
        .expect("data is a list")
        .iter()
        .map(|g| {
            (
                g["labels"]["job"].as_str().unwrap_or_default().to_owned(),
                g["expires_at"].as_str().map(str::to_owned),
            )
        })
        .collect();
    out.sort();
    out
}

/// The default TTL of the test's gateway: the checks before the expiry loop (a few requests)
/// must fit in it, so it is several times what they take on a loaded machine.
const TTL: Duration = Duration::from_secs(3);

#[test]
fn a_group_with_a_short_ttl_leaves_and_a_refreshed_one_stays() {
    let pg = Gateway::start(
        "pushgate",
        &pushgate_bin(),
        &[format!("--push.group-ttl={}s", TTL.as_secs())],
        "",
    );
    let short_pushed = Instant::now();
    assert_eq!(put_with_ttl(&pg, "short", None, "short_m 1\n").status, 200);
    assert_eq!(
        put_with_ttl(&pg, "refreshed", None, "refreshed_m 1\n").status,
        200
    );
    assert_eq!(
        put_with_ttl(&pg, "long", Some("1h"), "long_m 1\n").status,
        200
    );
    assert_eq!(
        put_with_ttl(&pg, "never", Some("0"), "never_m 1\n").status,
        200
    );
    // A bad header is refused and changes nothing, neither a new group nor a held one.
    for bad in ["abc", "-5s", "10", "1000000h"] {
        let r = put_with_ttl(&pg, "bad", Some(bad), "bad_m 1\n");
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert!(r.text().contains("Pushgate-Group-TTL"), "{}", r.text());
        let r = put_with_ttl(&pg, "long", Some(bad), "long_m 2\n");
        assert_eq!(r.status, 400, "{bad}");
    }
    let groups = api_groups(&pg);
    let jobs: Vec<&str> = groups.iter().map(|(j, _)| j.as_str()).collect();
    assert_eq!(jobs, ["long", "never", "refreshed", "short"]);
    for (job, expires) in &groups {
        assert_eq!(expires.is_some(), job != "never", "{job}: {expires:?}");
    }
    let page = pg.get("/").text();
    assert_eq!(page.matches("unless pushed again").count(), 3, "{page}");
    assert!(pg
        .get("/metrics")
        .text()
        .contains("long_m{instance=\"\",job=\"long\"} 1"));

    // `refreshed` is pushed again every 300 ms; `short` is not and leaves once its TTL has
    // passed since it was pushed (never before: timed from before the push was sent).
    let mut gone_after = None;
    while short_pushed.elapsed() < TTL * 5 {
        assert_eq!(
            put_with_ttl(&pg, "refreshed", None, "refreshed_m 2\n").status,
            200
        );
        let text = pg.get("/metrics").text();
        if !text.contains("short_m") {
            gone_after = Some(short_pushed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let gone_after = gone_after.unwrap_or_else(|| panic!("short never expired:\n{}", pg.log()));
    assert!(gone_after >= TTL, "expired early: {gone_after:?}");
    let text = pg.get("/metrics").text();
    for kept in ["refreshed_m", "long_m", "never_m"] {
        assert!(text.contains(kept), "{kept} missing:\n{text}");
    }
    let jobs: Vec<String> = api_groups(&pg).into_iter().map(|(j, _)| j).collect();
    assert_eq!(jobs, ["long", "never", "refreshed"]);
    // The counter is brought up to date by the expiry sweep (every 100 ms), not by the scrape
    // that found the group gone: wait for it (bounded) instead of racing the sweep.
    let counted = poll_until(Duration::from_secs(10), || {
        let text = pg.get("/metrics").text();
        let v = sample_value(&text, "pushgate_groups_expired_total", &[])?;
        (v != "0").then_some(v)
    });
    assert_eq!(
        counted.as_deref(),
        Some("1"),
        "{}",
        pg.get("/metrics").text()
    );
    // The same job pushed again is a new group.
    assert_eq!(
        put_with_ttl(&pg, "short", Some("1h"), "short_m 3\n").status,
        200
    );
    assert!(pg
        .get("/metrics")
        .text()
        .contains("short_m{instance=\"\",job=\"short\"} 3"));
}
