//! Merged scrapes collected from peers over gRPC: follow-ups for deferred groups, and a silent
//! peer within the client's timeout.

use std::time::Duration;

use super::{missing_deferred, ScrapeBudget};
use crate::cluster::bounds::ClusterBounds;
use crate::cluster::gateway::ClusterGateway;
use crate::cluster::rpc::server::ClusterService;
use crate::cluster::testkit::*;
use crate::gateway::Gateway;
use crate::store::render::Format;
use std::collections::HashMap;

/// A merged view from node a of a, b, c (R = 3), b and c holding the same 60 groups and a
/// none; `c` is how c answers.
async fn merged_view_of_three(c: Option<fn(ClusterService) -> TestPeer>) -> Vec<String> {
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let port = |i: usize| listeners[i].local_addr().unwrap().port();
    let members = [("a", port(0)), ("b", port(1)), ("c", port(2))];
    let (_, a) = node("a", &members, 3);
    let (store_b, b) = node("b", &members, 3);
    let (store_c, svc_c) = node("c", &members, 3);
    for g in 0..60 {
        for store in [&store_b, &store_c] {
            store.push(prepared(&format!("g{g}"), BODY), 1.0).unwrap();
        }
    }
    let mut listeners = listeners.into_iter().skip(1);
    serve_on(listeners.next().unwrap(), b);
    let lc = listeners.next().unwrap();
    match c {
        Some(wrap) => {
            serve_on(lc, wrap(svc_c));
        }
        // Down: nothing listens on c's port any more.
        None => drop(lc),
    }
    let view = a
        .core
        .merged_groups(Duration::from_secs(2), false)
        .await
        .unwrap();
    view.iter().map(|g| g.key.to_string()).collect()
}

#[tokio::test]
async fn a_merged_view_asks_again_for_the_groups_left_to_a_peer_that_failed() {
    let want: std::collections::BTreeSet<String> =
        (0..60).map(|g| key(&format!("g{g}")).to_string()).collect();
    // c is down: b sends the groups it comes first for and names the others, which a then
    // asks b for (without the second call about half the groups would be missing).
    let got = merged_view_of_three(None).await;
    assert_eq!(got.len(), 60);
    assert_eq!(
        got.into_iter().collect::<std::collections::BTreeSet<_>>(),
        want
    );
    // When c's answer cannot be decoded, the groups b left to c are asked for again.
    let got = merged_view_of_three(Some(damaged)).await;
    assert_eq!(got.len(), 60);
    assert_eq!(
        got.into_iter().collect::<std::collections::BTreeSet<_>>(),
        want
    );
}

/// A peer that accepts connections and never answers holds a scrape for the collect
/// deadline (3 s here), or for 40% of the client's scrape timeout when that is shorter.
/// Measured on tokio's paused clock, which moves only to the next timer when every task waits:
/// the time taken is the deadlines the scrape waited on, not how fast this machine is.
#[tokio::test(start_paused = true)]
async fn a_scrape_waits_for_a_silent_peer_within_the_client_timeout() {
    let port = silent_peer().await;
    let (store, a) = service_with(&[("a", 1), ("b", port)], 2);
    store.push(prepared("here", BODY), 1.0).unwrap();
    assert_eq!(a.core.scrape_deadline(None), Duration::from_secs(3));
    let gateway = ClusterGateway::new(a.core.clone());
    let started = tokio::time::Instant::now();
    let mut chunks = gateway
        .render_stream(
            Format::Text,
            Vec::new(),
            false,
            Some(Duration::from_millis(500)),
        )
        .await
        .unwrap();
    let mut body = Vec::new();
    while let Some(c) = chunks.recv().await {
        body.extend_from_slice(&c.unwrap());
    }
    let took = started.elapsed();
    // The first round's deadline is 200 ms; nothing was deferred, so there is no second. The
    // 3 s collect deadline (or the 500 ms client timeout) was not waited for.
    assert_eq!(a.core.scrape_deadline(Some(Duration::from_millis(500))), Duration::from_millis(200));
    assert!(took <= Duration::from_millis(200), "waited {took:?} of paused time");
    assert!(String::from_utf8(body).unwrap().contains("job=\"here\""));
}

#[test]
fn deferred_groups_nobody_delivered_are_asked_for_again() {
    let have: HashMap<u64, u64, foldhash::fast::RandomState> =
        [(1, 10), (2, 20), (3, 30)].into_iter().collect();
    let b = [(1, 10), (2, 25), (4, 1)];
    let c = [(3, 30)];
    let missing = missing_deferred([("b", &b[..]), ("c", &c[..])], &have);
    // 1 was delivered in that version, 2 only in an older one, 4 not at all; c's is there.
    assert_eq!(missing, vec![("b", vec![2, 4])]);
}

/// A merged read whose peers' answers pass `--cluster.max-scrape-bytes` is refused whole (the
/// HTTP side answers 503), not served incomplete; within the limit it is served.
#[tokio::test]
async fn a_merged_read_over_the_byte_limit_is_refused() {
    let lb = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let members = [("a", 1), ("b", lb.local_addr().unwrap().port())];
    let small = ClusterBounds {
        max_scrape_bytes: 2_000,
        ..ClusterBounds::default()
    };
    let (_, a) = node_with("a", &members, 1, small);
    let (store_b, b) = node("b", &members, 1);
    for g in 0..60 {
        store_b.push(prepared(&format!("g{g}"), BODY), 1.0).unwrap();
    }
    serve_on(lb, b);
    let refused = a
        .core
        .merged_groups(Duration::from_secs(2), false)
        .await
        .unwrap_err();
    assert!(
        refused.0.contains("--cluster.max-scrape-bytes"),
        "{}",
        refused.0
    );
    let gateway = ClusterGateway::new(a.core.clone());
    assert!(gateway
        .render_stream(Format::Text, Vec::new(), false, None)
        .await
        .is_err());
    assert!(gateway.groups().await.is_err());

    let (_, roomy) = node_with("a", &members, 1, ClusterBounds::default());
    let view = roomy
        .core
        .merged_groups(Duration::from_secs(2), false)
        .await
        .unwrap();
    assert_eq!(view.len(), 60);
}

#[test]
fn the_scrape_budget_stays_spent_once_passed() {
    let budget = ScrapeBudget::new(100);
    assert!(budget.take(60));
    assert!(budget.check().is_ok());
    assert!(!budget.take(41), "past the limit");
    assert!(!budget.take(0), "every call stops once it was passed");
    assert!(budget.check().is_err());
}
