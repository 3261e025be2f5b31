//! Expiry through the store: what expires and when, that an expired copy is neither served nor
//! accepted, that a push after the expiry starts a new group, and the TTL in the group codec.

use prost::Message;

use super::super::aggregate::apply::Incoming;
use super::super::codec::{decode_group, encode_group, snapshot_proto, MAX_TTL_SECONDS};
use super::super::tests::scrape;
use super::super::*;
use crate::exposition::{parse_text, NameScheme};
use crate::time::unix_seconds;

fn key(job: &str) -> GroupKey {
    GroupKey::new([("job".to_owned(), job.to_owned())])
}

fn push_at(s: &Store, job: &str, body: &str, put: bool, ttl: f64, at: f64) {
    let fams = parse_text(body.as_bytes(), NameScheme::Legacy).expect("test bodies parse");
    let p = prepare_push(key(job), fams, put, &Validation::default()).expect("a valid push");
    s.push(p.with_ttl(ttl), at).expect("the push is taken");
}

#[test]
fn a_group_older_than_its_ttl_is_hidden_then_removed_and_the_others_stay() {
    let s = Store::new(StoreOptions::default());
    let now = unix_seconds();
    push_at(&s, "refreshed", "fresh_m 1\n", true, 5.0, now - 3.0);
    push_at(&s, "refreshed", "fresh_m 2\n", true, 5.0, now);
    push_at(&s, "forever", "forever_m 1\n", true, 0.0, now - 1e6);
    // Pushed last (a write sweeps what is due at its own time, here nothing).
    push_at(&s, "old", "old_m 1\n", true, 5.0, now - 10.0);
    // Expired but not swept yet: no longer served.
    assert!(s.group(&key("old")).is_none());
    let served: Vec<String> = s.snapshot().iter().map(|g| g.key.to_string()).collect();
    assert_eq!(served.len(), 2, "{served:?}");
    assert_eq!(
        s.group(&key("refreshed")).unwrap().expires_at(),
        Some(now + 5.0)
    );
    assert_eq!(s.group(&key("forever")).unwrap().expires_at(), None);
    assert_eq!(s.expire(now), 1);
    assert_eq!(s.group_count(), 2);
    assert_eq!(s.expired_total(), 1);
    let text = scrape(&s);
    assert!(!text.contains("old_m"), "{text}");
    assert!(
        text.contains("fresh_m{instance=\"\",job=\"refreshed\"} 2")
            && text.contains("forever_m{instance=\"\",job=\"forever\"} 1"),
        "{text}"
    );
    // Nothing more is due; the refreshed group goes at its own time.
    assert_eq!(s.expire(now), 0);
    assert_eq!(s.expire(now + 5.0), 1);
    assert_eq!(s.group_count(), 1);
}

#[test]
fn an_expired_copy_from_a_peer_a_file_or_a_migration_is_refused() {
    let s = Store::new(StoreOptions::default());
    let src = Store::new(StoreOptions::default());
    let now = unix_seconds();
    push_at(&src, "gone", "m 1\n", true, 5.0, now - 10.0);
    push_at(&src, "live", "n 1\n", true, 60.0, now);
    let copies = src.snapshot_where(|_, _| true);
    assert_eq!(copies.len(), 1, "the source does not serve its expired copy");
    // Built by hand, as a peer that has not swept yet would send it.
    let live = src.group(&key("live")).unwrap();
    let expired = GroupSnapshot {
        key: std::sync::Arc::new(key("gone")),
        push_time: now - 10.0,
        ttl: 5.0,
        version: live.version + 1,
        ..live.clone()
    };
    assert!(!s.apply_replica(expired.clone()));
    s.restore(expired.clone()).expect("an expired copy is skipped, not an error");
    assert!(!s.import(expired).unwrap());
    assert_eq!(s.group_count(), 0);
    assert!(s.apply_replica(live));
    assert_eq!(s.group_count(), 1);
}

#[test]
fn a_push_after_the_expiry_starts_a_new_group() {
    let s = Store::new(StoreOptions::default());
    let now = unix_seconds();
    push_at(&s, "j", "a 1\n", true, 5.0, now - 10.0);
    // A POST to the expired group, before any sweep: the old family does not come back.
    push_at(&s, "j", "b 1\n", false, 0.0, now);
    let g = s.group(&key("j")).unwrap();
    let names: Vec<&str> = g.families.iter().map(|(f, _)| &*f.name).collect();
    assert_eq!(names, ["b"]);
    assert_eq!(g.expires_at(), None, "the new push set no TTL");
}

#[test]
fn a_group_created_by_a_refused_push_gets_the_default_ttl() {
    let s = Store::new(StoreOptions {
        group_ttl: 30.0,
        ..StoreOptions::default()
    });
    let now = unix_seconds();
    s.record_failure(&key("f"), now);
    assert_eq!(s.group(&key("f")).unwrap().expires_at(), Some(now + 30.0));
    assert_eq!(s.expire(now + 30.0), 1);
}

#[test]
fn an_aggregating_group_expires_and_its_sums_start_again() {
    let s = Store::new(StoreOptions::default());
    let now = unix_seconds();
    let fams = parse_text(b"# TYPE c counter\nc 1\n", NameScheme::Legacy).unwrap();
    let add = |ttl: f64, at: f64| {
        s.aggregate(key("a"), Incoming::Model(&fams), None, &Validation::default(), ttl, at)
            .unwrap();
    };
    add(5.0, now - 10.0);
    add(5.0, now - 9.0);
    assert_eq!(s.expire(now), 1);
    assert_eq!(s.aggregate_states().len(), 0, "the state went with the group");
    add(5.0, now);
    assert!(scrape(&s).contains("c{instance=\"\",job=\"a\"} 1\n"), "{}", scrape(&s));
    let g = s.group(&key("a")).unwrap();
    assert!(g.aggregating);
    assert_eq!(g.expires_at(), Some(now + 5.0));
}

#[test]
fn the_ttl_travels_in_the_group_encoding_and_a_bad_one_is_refused() {
    let s = Store::new(StoreOptions::default());
    let now = unix_seconds();
    push_at(&s, "t", "m 1\n", true, 90.0, now);
    push_at(&s, "none", "m2 1\n", true, 0.0, now);
    let decode = |g: &GroupSnapshot| {
        let mut buf = Vec::new();
        encode_group(g, &mut buf);
        let pb = snapshot_proto::Group::decode(buf.as_slice()).unwrap();
        (pb.ttl, decode_group(0, pb, NameScheme::Legacy, None))
    };
    let (raw, back) = decode(&s.group(&key("t")).unwrap());
    assert_eq!(raw, Some(90.0));
    assert_eq!(back.unwrap().ttl, 90.0);
    // Without a TTL the field is left out, as files and peers without it wrote it.
    let (raw, back) = decode(&s.group(&key("none")).unwrap());
    assert_eq!(raw, None);
    assert_eq!(back.unwrap().ttl, 0.0);
    let good = s.group(&key("t")).unwrap();
    for bad in [-1.0, f64::NAN, f64::INFINITY, MAX_TTL_SECONDS * 2.0] {
        let mut buf = Vec::new();
        encode_group(&good, &mut buf);
        let mut pb = snapshot_proto::Group::decode(buf.as_slice()).unwrap();
        pb.ttl = Some(bad);
        let err = decode_group(0, pb, NameScheme::Legacy, None).unwrap_err();
        assert!(err.contains("invalid group TTL"), "{bad}: {err}");
    }
}

#[test]
fn a_scrape_and_the_consistency_check_stop_seeing_a_group_at_its_expiry() {
    let s = Store::new(StoreOptions::default());
    let now = unix_seconds();
    push_at(&s, "gone", "# TYPE m gauge\nm 1\n", true, 5.0, now - 10.0);
    // No sweep ran: the scrape itself leaves the expired group out and removes it.
    assert!(!scrape(&s).contains("m{"), "{}", scrape(&s));
    assert_eq!(s.group_count(), 0);
    assert_eq!(s.expired_total(), 1);
    push_at(&s, "other", "# TYPE m gauge\nm 1\n", true, 5.0, now - 10.0);
    // Another group may now give `m` another type: the expired one no longer counts.
    let fams = parse_text(b"# TYPE m counter\nm 1\n", NameScheme::Legacy).unwrap();
    let p = prepare_push(key("new"), fams, true, &Validation::default()).unwrap();
    s.check_consistency(&p).expect("the expired group is not checked against");
    s.push(p, now).expect("the push is taken");
    assert_eq!(s.expired_total(), 2);
}
