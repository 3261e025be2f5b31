//! Aggregating groups through the store: what adds up, what replaces, what is refused (and
//! that a refusal changes nothing), idempotency keys, resets, and the state in the file.

use super::apply::Incoming;
use super::*;
use crate::exposition::{parse_text, NameScheme};
use crate::store::render::Format;
use crate::store::{prepare_push, StoreOptions};

fn key(job: &str) -> GroupKey {
    GroupKey::new([("job".to_owned(), job.to_owned())])
}

fn add(s: &Store, job: &str, body: &str) -> Result<Aggregated, PushError> {
    add_keyed(s, job, body, None)
}

fn add_keyed(
    s: &Store,
    job: &str,
    body: &str,
    idem: Option<&str>,
) -> Result<Aggregated, PushError> {
    let fams = parse_text(body.as_bytes(), NameScheme::Legacy).expect("test bodies parse");
    s.aggregate(key(job), Incoming::Model(&fams), idem, &Validation::default(), 0.0, 1000.0)
}

/// The scrape without the timing families.
fn scrape(s: &Store) -> String {
    let mut out = Vec::new();
    s.render(Format::Text, &[], &mut out);
    String::from_utf8(out)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("push_time_seconds") && !l.contains("push_failure_time_seconds"))
        .map(|l| format!("{l}\n"))
        .collect()
}

const COUNTER: &str = "# TYPE c counter\nc 1\n";
const HISTOGRAM: &str = "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 0.5\nh_count 1\n";

#[test]
fn counters_and_histograms_add_up() {
    let s = Store::new(StoreOptions::default());
    for _ in 0..3 {
        assert_eq!(
            add(&s, "j", &format!("{COUNTER}{HISTOGRAM}")),
            Ok(Aggregated::Added)
        );
    }
    let text = scrape(&s);
    assert!(text.contains("c{instance=\"\",job=\"j\"} 3\n"), "{text}");
    assert!(text.contains("h_bucket{instance=\"\",job=\"j\",le=\"1\"} 3\n"), "{text}");
    assert!(text.contains("h_bucket{instance=\"\",job=\"j\",le=\"+Inf\"} 3\n"), "{text}");
    assert!(text.contains("h_sum{instance=\"\",job=\"j\"} 1.5\n"), "{text}");
    assert!(text.contains("h_count{instance=\"\",job=\"j\"} 3\n"), "{text}");
    assert!(s.group(&key("j")).unwrap().aggregating);
}

#[test]
fn histograms_with_other_buckets_are_refused_and_change_nothing() {
    let s = Store::new(StoreOptions::default());
    add(&s, "j", &format!("{COUNTER}{HISTOGRAM}")).unwrap();
    let before = scrape(&s);
    let other = "# TYPE c counter\nc 1\n# TYPE h histogram\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n";
    let err = add(&s, "j", other).unwrap_err();
    assert_eq!(err.status(), 400);
    assert!(
        err.to_string().contains("has bucket bounds [2, +Inf], but this aggregating group holds [1, +Inf]"),
        "{err}"
    );
    assert_eq!(scrape(&s), before);
    // The refused push's counter was not added either: the next push counts from 1.
    add(&s, "j", COUNTER).unwrap();
    assert!(scrape(&s).contains("c{instance=\"\",job=\"j\"} 2\n"));
}

#[test]
fn summaries_add_count_and_sum_and_keep_the_newest_quantiles() {
    let s = Store::new(StoreOptions::default());
    for (q, n) in [(0.1, 1), (0.7, 2)] {
        let body = format!("# TYPE s summary\ns{{quantile=\"0.5\"}} {q}\ns_sum {q}\ns_count {n}\n");
        add(&s, "j", &body).unwrap();
    }
    let text = scrape(&s);
    assert!(text.contains("s{instance=\"\",job=\"j\",quantile=\"0.5\"} 0.7\n"), "{text}");
    assert!(text.contains("s_sum{instance=\"\",job=\"j\"} 0.7999999999999999\n"), "{text}");
    assert!(text.contains("s_count{instance=\"\",job=\"j\"} 3\n"), "{text}");
}

#[test]
fn gauges_replace_unless_clearmode_says_aggregate_and_clearmode_is_not_exposed() {
    let s = Store::new(StoreOptions::default());
    for v in [5, 7] {
        let body = format!("# TYPE g gauge\ng {v}\ng2{{clearmode=\"aggregate\"}} {v}\nu {v}\n");
        add(&s, "j", &body).unwrap();
    }
    let text = scrape(&s);
    assert!(text.contains("g{instance=\"\",job=\"j\"} 7\n"), "{text}");
    assert!(text.contains("g2{instance=\"\",job=\"j\"} 12\n"), "{text}");
    assert!(text.contains("u{instance=\"\",job=\"j\"} 7\n"), "{text}");
    assert!(!text.contains("clearmode"), "{text}");
}

#[test]
fn clearmode_replace_and_family() {
    let s = Store::new(StoreOptions::default());
    add(&s, "j", "# TYPE c counter\nc 4\n").unwrap();
    add(&s, "j", "# TYPE c counter\nc{clearmode=\"replace\"} 10\n").unwrap();
    add(&s, "j", "# TYPE c counter\nc 1\n").unwrap();
    assert!(scrape(&s).contains("c{instance=\"\",job=\"j\"} 11\n"));
    add(&s, "j", "# TYPE v gauge\nv{version=\"1\",clearmode=\"family\"} 1\n").unwrap();
    add(&s, "j", "# TYPE v gauge\nv{version=\"2\",clearmode=\"family\"} 1\n").unwrap();
    let text = scrape(&s);
    assert!(text.contains("v{instance=\"\",job=\"j\",version=\"2\"} 1\n"), "{text}");
    assert!(!text.contains("version=\"1\""), "{text}");
}

#[test]
fn a_retry_with_the_same_idempotency_key_is_not_added_twice() {
    let s = Store::new(StoreOptions::default());
    assert_eq!(add_keyed(&s, "j", COUNTER, Some("a")), Ok(Aggregated::Added));
    assert_eq!(add_keyed(&s, "j", COUNTER, Some("a")), Ok(Aggregated::Repeated));
    assert_eq!(add_keyed(&s, "j", COUNTER, Some("b")), Ok(Aggregated::Added));
    assert!(scrape(&s).contains("c{instance=\"\",job=\"j\"} 2\n"));
    // A refused push does not remember its key: its retry is added.
    let bad = "# TYPE c gauge\nc 1\n";
    assert!(add_keyed(&s, "j", bad, Some("c")).is_err());
    assert_eq!(add_keyed(&s, "j", COUNTER, Some("c")), Ok(Aggregated::Added));
}

#[test]
fn refusals_change_nothing() {
    let s = Store::new(StoreOptions::default());
    add(&s, "j", COUNTER).unwrap();
    let before = scrape(&s);
    for (bad, status) in [
        ("# TYPE c gauge\nc 1\n", 400),
        ("# TYPE c counter\nc -1\n", 400),
        ("# TYPE c counter\nc NaN\n", 400),
        ("# TYPE c counter\nc{clearmode=\"sometimes\"} 1\n", 400),
        ("# TYPE c counter\nc 1 1234\n", 400),
        ("# TYPE c counter\nc 1\n# TYPE d counter\nd{le=\"x\"} 1\nd{le=\"x\"} 1\n", 400),
    ] {
        let err = add(&s, "j", bad).unwrap_err();
        assert_eq!(err.status(), status, "{bad}: {err}");
        assert_eq!(scrape(&s), before, "{bad}");
    }
    // An ordinary group holding `c` as a gauge: the consistency check refuses the sum.
    let plain = parse_text(b"# TYPE x gauge\nx 1\n", NameScheme::Legacy).unwrap();
    s.push(prepare_push(key("other"), plain, true, &Validation::default()).unwrap(), 1.0)
        .unwrap();
    let before = scrape(&s);
    assert!(add(&s, "j", "# TYPE x counter\nx 1\n").is_err());
    assert_eq!(scrape(&s), before);
    add(&s, "j", COUNTER).unwrap();
    assert!(scrape(&s).contains("c{instance=\"\",job=\"j\"} 2\n"));
}

#[test]
fn a_delete_or_a_plain_push_ends_the_aggregation() {
    let s = Store::new(StoreOptions::default());
    add(&s, "j", COUNTER).unwrap();
    add(&s, "j", COUNTER).unwrap();
    s.delete(&key("j"));
    add(&s, "j", COUNTER).unwrap();
    assert!(scrape(&s).contains("c{instance=\"\",job=\"j\"} 1\n"));
    let plain = parse_text(b"# TYPE c counter\nc 40\n", NameScheme::Legacy).unwrap();
    s.push(prepare_push(key("j"), plain, true, &Validation::default()).unwrap(), 1.0)
        .unwrap();
    assert!(!s.group(&key("j")).unwrap().aggregating);
    add(&s, "j", COUNTER).unwrap();
    let text = scrape(&s);
    assert!(text.contains("c{instance=\"\",job=\"j\"} 1\n"), "{text}");
    s.wipe();
    add(&s, "j", COUNTER).unwrap();
    assert!(scrape(&s).contains("c{instance=\"\",job=\"j\"} 1\n"));
}

#[test]
fn the_state_survives_the_persistence_file_and_a_restart_adds_a_new_partial() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap");
    let s = Store::new(StoreOptions::default());
    add_keyed(&s, "j", &format!("{COUNTER}{HISTOGRAM}"), Some("k")).unwrap();
    add(&s, "j", COUNTER).unwrap();
    crate::store::persistence::save(&s, &path).unwrap();
    let loaded = Store::new(StoreOptions::default());
    crate::store::persistence::load(&loaded, &path, NameScheme::Legacy).unwrap();
    assert_eq!(scrape(&loaded), scrape(&s));
    assert!(loaded.group(&key("j")).unwrap().aggregating);
    // The key is remembered through the file; new increments go to a new partial.
    assert_eq!(add_keyed(&loaded, "j", COUNTER, Some("k")), Ok(Aggregated::Repeated));
    add(&loaded, "j", COUNTER).unwrap();
    assert!(scrape(&loaded).contains("c{instance=\"\",job=\"j\"} 3\n"));
    let states = loaded.aggregate_states();
    let series = states[0].1.families.get("c").unwrap().series.get(&Vec::new()).unwrap();
    assert_eq!(series.partials.len(), 2);
}

#[test]
fn a_file_s_states_are_checked_and_a_state_without_its_group_is_skipped() {
    use crate::store::persistence::{encode_snapshot, load};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap");
    let s = Store::new(StoreOptions::default());
    add(&s, "j", &format!("{COUNTER}{HISTOGRAM}")).unwrap();
    let groups = s.snapshot();
    let mut states = s.aggregate_states();
    // A state whose group the file does not hold (first pushed after the groups were taken).
    let orphan = (key("later"), states[0].1.clone());
    std::fs::write(&path, encode_snapshot(&groups, &[states[0].clone(), orphan], 1.0, 0)).unwrap();
    let loaded = Store::new(StoreOptions::default());
    load(&loaded, &path, NameScheme::Legacy).unwrap();
    assert_eq!(scrape(&loaded), scrape(&s));
    assert_eq!(loaded.aggregate_states().len(), 1);
    // A histogram value without its buckets is refused with a message naming the family.
    let state = &mut states[0].1;
    let h = state.families.get_mut("h").unwrap();
    let series = h.series.values_mut().next().unwrap();
    let partial = series.partials.values_mut().next().unwrap();
    partial.value.bounds.clear();
    std::fs::write(&path, encode_snapshot(&groups, &states, 1.0, 0)).unwrap();
    let err = load(&Store::new(StoreOptions::default()), &path, NameScheme::Legacy).unwrap_err();
    assert!(
        err.to_string().contains("a value of \"h\" does not fit its type HISTOGRAM"),
        "{err}"
    );
}

#[test]
fn concurrent_adds_to_one_group_count_exactly_once_each() {
    let s = std::sync::Arc::new(Store::new(StoreOptions::default()));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    // Every fourth push is retried with its key: still one increment.
                    let k = format!("t{t}-{i}");
                    let idem = (i % 4 == 0).then_some(k.as_str());
                    add_keyed(&s, "j", COUNTER, idem).unwrap();
                    if let Some(k) = idem {
                        assert_eq!(add_keyed(&s, "j", COUNTER, Some(k)), Ok(Aggregated::Repeated));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(scrape(&s).contains("c{instance=\"\",job=\"j\"} 1600\n"), "{}", scrape(&s));
}

#[test]
fn a_text_body_adds_up_the_same_read_borrowed_or_through_the_model() {
    let bodies = [
        format!("{COUNTER}{HISTOGRAM}"),
        "# TYPE s summary\ns{quantile=\"0.5\",x=\"1\"} 0.2\ns_sum{x=\"1\"} 0.5\ns_count{x=\"1\"} 3\n".to_owned(),
        "# TYPE g gauge\ng{clearmode=\"aggregate\",b=\"2\",a=\"1\"} -1.5\nu 4\n".to_owned(),
        "# HELP v build\n# TYPE v gauge\nv{version=\"2\",clearmode=\"family\"} 1\n".to_owned(),
        "# TYPE c counter\nc{clearmode=\"replace\"} 7\n".to_owned(),
    ];
    let ctx = |version| Ctx {
        stamp: state::Stamp { version, origin: 0 },
        partial: state::PartialId { node: 0, incarnation: 1 },
    };
    let (mut via_model, mut via_text) = (AggState::default(), AggState::default());
    for (i, body) in bodies.iter().enumerate() {
        let v = Validation::default();
        let fams = parse_text(body.as_bytes(), NameScheme::Legacy).unwrap();
        let parsed = crate::exposition::parse_text_bounded(body.as_bytes(), NameScheme::Legacy, 1000)
            .unwrap();
        for _ in 0..2 {
            let mut undo = Undo::default();
            apply::apply(&mut via_model, Incoming::Model(&fams), ctx(i as u64 + 1), &v, &mut undo)
                .unwrap();
            apply::apply(&mut via_text, Incoming::Text(&parsed), ctx(i as u64 + 1), &v, &mut undo)
                .unwrap();
        }
        assert_eq!(via_text, via_model, "{body}");
    }
}

/// Cluster nodes' stores: each adds to its own partial, versioned by a clock of its own.
mod on_a_cluster {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Node {
        store: Store,
        clock: AtomicU64,
    }

    impl Node {
        fn new(id: u64) -> Node {
            let store = Store::new(StoreOptions::default());
            store.join_cluster(id, Validation::default());
            Node {
                store,
                // Versions as the cluster's clock makes them (ms << 16), ahead of any test's.
                clock: AtomicU64::new(1_700_000_000_000 << 16),
            }
        }

        fn tick(&self) -> u64 {
            self.clock.fetch_add(1 << 16, Ordering::SeqCst) + (1 << 16)
        }

        fn add(&self, body: &str, idem: Option<&str>) -> (Aggregated, Option<Taken>) {
            let fams = parse_text(body.as_bytes(), NameScheme::Legacy).unwrap();
            let w = AggregateWrite {
                incoming: Incoming::Model(&fams),
                idempotency_key: idem,
                v: &Validation::default(),
                ttl: 0.0,
                now: 1000.0,
            };
            self.store
                .aggregate_versioned(key("j"), w, &|| self.tick())
                .expect("the push is added")
        }

        /// Takes `other`'s copy of the group, as a replica or anti-entropy would.
        fn take(&self, other: &Node) -> bool {
            let copy = other.store.transfer_copy(&key("j")).expect("held");
            assert_eq!(
                copy.agg.is_some(),
                copy.aggregating,
                "a copy for a peer carries the state of an aggregating group"
            );
            self.clock.fetch_max(copy.version, Ordering::SeqCst);
            self.store.apply_replica(copy)
        }

        fn digest(&self) -> Option<(u64, bool)> {
            self.store.digest(&key("j"))
        }
    }

    #[test]
    fn copies_merge_so_that_both_primaries_increments_count_once() {
        let (a, b) = (Node::new(1), Node::new(2));
        for _ in 0..3 {
            a.add(COUNTER, None);
        }
        b.take(&a);
        for _ in 0..2 {
            b.add(COUNTER, None);
        }
        // a never saw b's pushes, b has a's in its copy: merged both ways, 5 on each, and
        // merging again (or the same copy twice) changes nothing.
        assert!(a.take(&b));
        assert!(!a.take(&b), "the same copy again changes nothing");
        b.take(&a);
        for n in [&a, &b] {
            assert_eq!(scrape(&n.store), "# TYPE c counter\nc{instance=\"\",job=\"j\"} 5\n");
        }
        assert_eq!(a.digest(), b.digest(), "anti-entropy sees equal copies");
    }

    #[test]
    fn equal_versions_with_different_states_have_different_digests() {
        let (a, b) = (Node::new(1), Node::new(2));
        a.add(COUNTER, None);
        b.take(&a);
        let before = b.digest();
        // The same push applied on b alone, with a clock that lands on a's version.
        b.clock.store(a.clock.load(Ordering::SeqCst) - (1 << 16), Ordering::SeqCst);
        a.add(COUNTER, None);
        b.add(COUNTER, None);
        assert_ne!(b.digest(), before);
        assert_ne!(a.digest(), b.digest(), "same version, different partials");
    }

    #[test]
    fn a_retracted_push_does_not_count_anywhere_and_its_retry_counts_once() {
        let (a, b) = (Node::new(1), Node::new(2));
        a.add(COUNTER, None);
        let (_, taken) = a.add(COUNTER, Some("k"));
        // Another push lands between the push and its withdrawal.
        a.add(COUNTER, None);
        b.take(&a);
        assert_eq!(scrape(&b.store), "# TYPE c counter\nc{instance=\"\",job=\"j\"} 3\n");
        let back = a
            .store
            .retract_aggregate(&key("j"), taken.expect("added"), 1001.0, &|| a.tick())
            .expect("the group still aggregates");
        assert_eq!(back.push_time, 1000.0, "the push time stays where it was");
        // The withdrawal as the primary sends it to the nodes that took the push.
        assert!(b.store.apply_replica(back));
        for n in [&a, &b] {
            assert_eq!(scrape(&n.store), "# TYPE c counter\nc{instance=\"\",job=\"j\"} 2\n");
        }
        // The retry, on the node that held the withdrawn key: added, once.
        assert_eq!(b.add(COUNTER, Some("k")).0, Aggregated::Added);
        assert_eq!(b.add(COUNTER, Some("k")).0, Aggregated::Repeated);
        a.take(&b);
        assert_eq!(scrape(&a.store), "# TYPE c counter\nc{instance=\"\",job=\"j\"} 3\n");
    }

    #[test]
    fn a_copy_from_before_a_delete_does_not_bring_its_sums_back() {
        let (a, b) = (Node::new(1), Node::new(2));
        a.add(COUNTER, None);
        a.add(COUNTER, None);
        b.take(&a);
        let old = b.store.transfer_copy(&key("j")).unwrap();
        assert!(a.store.delete_versioned(&key("j"), a.tick()));
        assert!(!a.store.apply_replica(old.clone()), "the old copy stays gone");
        assert!(a.store.group(&key("j")).is_none());
        // A new aggregation after the delete, then the old copy again: only the new push.
        a.add(COUNTER, None);
        a.store.apply_replica(old);
        assert_eq!(scrape(&a.store), "# TYPE c counter\nc{instance=\"\",job=\"j\"} 1\n");
    }

    #[test]
    fn a_plain_put_ends_the_aggregation_on_every_copy() {
        let (a, b) = (Node::new(1), Node::new(2));
        a.add(COUNTER, None);
        b.take(&a);
        let stale = b.store.transfer_copy(&key("j")).unwrap();
        let fams = parse_text(b"# TYPE c counter\nc 42\n", NameScheme::Legacy).unwrap();
        let p = prepare_push(key("j"), fams, true, &Validation::default()).unwrap();
        a.store.push_versioned(p, 1000.0, || a.tick()).unwrap();
        assert!(!a.store.group(&key("j")).unwrap().aggregating);
        b.take(&a);
        a.store.apply_replica(stale);
        for n in [&a, &b] {
            let g = n.store.group(&key("j")).unwrap();
            assert!(!g.aggregating, "the plain PUT is newer");
            assert_eq!(scrape(&n.store), "# TYPE c counter\nc{instance=\"\",job=\"j\"} 42\n");
        }
    }

    /// A peer's copy is checked like any input: its state decodes with the copy, and a state
    /// carrying a write newer than the copy's version (a reset from the far future would hide
    /// every later increment) is refused.
    #[test]
    fn a_peers_state_travels_with_its_copy_and_is_bounded_by_its_version() {
        use crate::cluster::rpc::wire::{group_from_bytes, group_to_bytes};
        let a = Node::new(1);
        a.add(COUNTER, None);
        let copy = a.store.transfer_copy(&key("j")).unwrap();
        let raw = bytes::Bytes::from(group_to_bytes(&copy));
        let back = group_from_bytes(&raw, NameScheme::Legacy).expect("a faithful copy decodes");
        assert!(back.aggregating);
        assert_eq!(back.agg.as_deref(), copy.agg.as_deref());
        assert_eq!(back.agg_digest, copy.agg_digest);

        let mut state = (**copy.agg.as_ref().unwrap()).clone();
        state.reset = Stamp {
            version: copy.version + 1,
            origin: 0,
        };
        let hostile = GroupSnapshot {
            agg: Some(Arc::new(state)),
            ..copy
        };
        let raw = bytes::Bytes::from(group_to_bytes(&hostile));
        let err = group_from_bytes(&raw, NameScheme::Legacy).unwrap_err();
        assert!(err.contains("newer than the group's version"), "{err}");
    }
}
