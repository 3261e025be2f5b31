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
