//! Tests of the store as a whole: pushes, the consistency check, versioned writes and renders.

use super::group::timing_families;
use super::prepare::{
    PUSH_FAILURE_TIME_HELP, PUSH_FAILURE_TIME_METRIC, PUSH_TIME_HELP, PUSH_TIME_METRIC,
};
use super::render::Format;
use super::*;
use crate::exposition::{parse_text, NameScheme};
use crate::scrape::merged;

fn key(job: &str, extra: &[(&str, &str)]) -> GroupKey {
    GroupKey::new(
        std::iter::once(("job".to_owned(), job.to_owned()))
            .chain(extra.iter().map(|(n, v)| (n.to_string(), v.to_string()))),
    )
}

fn store() -> Store {
    Store::new(StoreOptions {
        reserved: crate::telemetry::reserved_names(),
        ..StoreOptions::default()
    })
}

fn push(s: &Store, k: GroupKey, body: &str, put: bool) -> Result<WriteOutcome, PushError> {
    let fams = parse_text(body.as_bytes(), NameScheme::Legacy).expect("test bodies parse");
    let p = prepare_push(k, fams, put, &Validation::default())?;
    s.push(p, 1000.0)
}

pub(super) fn scrape(s: &Store) -> String {
    let mut out = Vec::new();
    s.render(Format::Text, &[], &mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn restore_refuses_families_not_sorted_by_unique_name_and_changes_nothing() {
    let s = store();
    let k = key("r", &[]);
    push(&s, k.clone(), "a 1\nb 2\n", true).unwrap();
    let before = scrape(&s);
    let good = s.group(&k).unwrap();
    let (a, b) = (good.families[0].clone(), good.families[1].clone());
    for families in [vec![a.clone(), a.clone()], vec![b.clone(), a.clone()]] {
        let bad = GroupSnapshot {
            families,
            version: good.version + 1,
            ..good.clone()
        };
        let err = s.restore(bad).unwrap_err();
        assert!(
            err.to_string().contains("not sorted by unique name"),
            "{err}"
        );
        assert_eq!(scrape(&s), before);
    }
    // The same group in order is taken.
    s.restore(GroupSnapshot {
        version: good.version + 1,
        ..good.clone()
    })
    .unwrap();
    assert_eq!(scrape(&s), before);
}

#[test]
fn index_slots_freed_by_deletes_are_reused_and_scrapes_stay_exact() {
    let s = store();
    let lines = |t: &str, prefix: &str| t.lines().filter(|l| l.starts_with(prefix)).count();
    for job in ["a", "b", "c"] {
        push(&s, key(job, &[]), "x 1\n", true).unwrap();
    }
    // Twice, so that the second scrape comes from the render cache.
    for _ in 0..2 {
        let t = scrape(&s);
        assert_eq!(lines(&t, "x{"), 3, "{t}");
    }
    assert!(s.delete(&key("b", &[])));
    // "d" takes the slot "b" left; "a" re-pushes the same series (its slot is updated in
    // place), then "c" changes its label set (its family leaves and re-enters the index).
    push(&s, key("d", &[]), "x 4\n", true).unwrap();
    push(&s, key("a", &[]), "x 5\n", true).unwrap();
    push(&s, key("c", &[]), "x{l=\"v\"} 6\n", true).unwrap();
    for _ in 0..2 {
        let t = scrape(&s);
        assert_eq!(lines(&t, "x{"), 3, "{t}");
        assert!(t.contains("x{instance=\"\",job=\"a\"} 5\n"), "{t}");
        assert!(t.contains("x{instance=\"\",job=\"c\",l=\"v\"} 6\n"), "{t}");
        assert!(t.contains("x{instance=\"\",job=\"d\"} 4\n"), "{t}");
        assert!(!t.contains("job=\"b\""), "{t}");
        assert_eq!(lines(&t, "push_time_seconds{"), 3, "{t}");
    }
    // A series of a deleted group can be pushed by another group again.
    push(&s, key("e", &[]), "y 1\n", true).unwrap();
    assert!(s.delete(&key("e", &[])));
    push(&s, key("a", &[]), "x 5\ny 2\n", true).unwrap();
    for job in ["a", "c", "d"] {
        assert!(s.delete(&key(job, &[])));
    }
    assert_eq!(scrape(&s), "");
    assert_eq!(s.series_count(), 0);
}

#[test]
fn put_replaces_post_merges_delete_removes() {
    let s = store();
    push(&s, key("a", &[]), "x{l=\"1\"} 1\nx{l=\"2\"} 2\ny 1\n", true).unwrap();
    push(&s, key("a", &[]), "x{l=\"3\"} 3\n", false).unwrap();
    let t = scrape(&s);
    assert!(
        t.contains("x{instance=\"\",job=\"a\",l=\"3\"} 3\n") && !t.contains("l=\"1\""),
        "{t}"
    );
    assert!(t.contains("y{instance=\"\",job=\"a\"} 1\n"), "{t}");
    push(&s, key("a", &[]), "z 1\n", true).unwrap();
    let t = scrape(&s);
    assert!(!t.contains("y{") && t.contains("z{"), "{t}");
    assert!(s.delete(&key("a", &[])));
    assert_eq!(scrape(&s), "");
    assert!(!s.delete(&key("a", &[])));
}

#[test]
fn type_conflicts_across_groups_are_refused_and_leave_data_alone() {
    let s = store();
    push(&s, key("a", &[]), "# TYPE m counter\nm 1\n", true).unwrap();
    let before = scrape(&s);
    let err = push(&s, key("b", &[]), "# TYPE m gauge\nm 1\n", true).unwrap_err();
    assert!(matches!(err, PushError::Invalid(_)), "{err}");
    // the same group may change the type of its own family
    push(&s, key("a", &[]), "# TYPE m gauge\nm 2\n", true).unwrap();
    assert_ne!(before, scrape(&s));
    // once nobody else uses the name, a new type is fine
    s.delete(&key("a", &[]));
    push(&s, key("b", &[]), "# TYPE m counter\nm 1\n", true).unwrap();
}

#[test]
fn duplicate_series_across_groups_is_refused() {
    let s = store();
    push(&s, key("a", &[("l", "x")]), "m 1\n", true).unwrap();
    // group {job=a} pushing a sample with l="x" would expose the same series
    let err = push(&s, key("a", &[]), "m{l=\"x\"} 1\n", true).unwrap_err();
    assert!(err.to_string().contains("was collected before"), "{err}");
    // re-pushing the same series into its own group is fine
    push(&s, key("a", &[("l", "x")]), "m 2\n", true).unwrap();
}

#[test]
fn suffix_collisions_and_reserved_names() {
    let s = store();
    push(
        &s,
        key("h", &[]),
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        true,
    )
    .unwrap();
    let err = push(&s, key("g", &[]), "# TYPE h_count gauge\nh_count 1\n", true).unwrap_err();
    assert!(
        err.to_string()
            .contains("collides with previously collected histogram"),
        "{err}"
    );
    push(&s, key("g", &[]), "# TYPE q gauge\nq_sum 1\n", true).unwrap();
    let err = push(
        &s,
        key("q", &[]),
        "# TYPE q summary\nq_sum 1\nq_count 1\n",
        true,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("collides with previously collected metric"),
        "{err}"
    );
    let err = push(
        &s,
        key("r", &[]),
        "# TYPE pushgateway_build_info counter\npushgateway_build_info 1\n",
        true,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("has type COUNTER but should have GAUGE"),
        "{err}"
    );
}

#[test]
fn instance_less_key_collision_is_refused_without_leaving_a_group() {
    let s = store();
    push(&s, key("u", &[]), "x 1\n", true).unwrap();
    let before = s.snapshot().len();
    let err = push(&s, key("u", &[("instance", "")]), "x 1\n", true).unwrap_err();
    assert!(matches!(err, PushError::Invalid(_)));
    s.record_failure(&key("u", &[("instance", "")]), 5.0);
    assert_eq!(
        s.snapshot().len(),
        before,
        "bug 3: a rejected push must not leave a group"
    );
}

#[test]
fn timestamps_refused_but_failure_recorded() {
    let s = store();
    let err = push(&s, key("t", &[]), "x 1 123\n", true).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: pushed metrics must not have timestamps",
            error::INCONSISTENT_PREFIX
        )
    );
    let g = &s.snapshot()[0];
    assert!(!g.last_push_successful);
    assert_eq!(g.push_time, 0.0);
    assert_eq!(g.failure_time, 1000.0);
    assert!(g.families.is_empty());
}

#[test]
fn a_time_that_does_not_change_keeps_its_timing_family() {
    let s = store();
    let k = key("t", &[]);
    let push_at = |now: f64| {
        let fams = parse_text(b"x 1\n", NameScheme::Legacy).unwrap();
        let p = prepare_push(k.clone(), fams, true, &Validation::default()).unwrap();
        s.push(p, now).unwrap();
    };
    let timing = || {
        s.group(&k)
            .unwrap()
            .timing
            .expect("a local group has its timing")
    };
    push_at(10.0);
    let first = timing();
    s.record_failure(&k, 20.0);
    let failed = timing();
    assert!(
        StoredFamily::ptr_eq(&first[0], &failed[0]),
        "push time unchanged"
    );
    assert!(!StoredFamily::ptr_eq(&first[1], &failed[1]));
    push_at(30.0);
    let again = timing();
    assert!(!StoredFamily::ptr_eq(&failed[0], &again[0]));
    assert!(
        StoredFamily::ptr_eq(&failed[1], &again[1]),
        "failure time unchanged"
    );
    let text = scrape(&s);
    assert!(
        text.contains("push_time_seconds{instance=\"\",job=\"t\"} 30\n"),
        "{text}"
    );
    assert!(
        text.contains("push_failure_time_seconds{instance=\"\",job=\"t\"} 20\n"),
        "{text}"
    );
}

#[test]
fn scrape_orders_across_groups_like_upstream() {
    let s = store();
    push(&s, key("b", &[]), "m 1\nm{a=\"2\"} 1\n", true).unwrap();
    push(
        &s,
        key("a", &[("instance", "i9")]),
        "m 1\nm{a=\"10\"} 1\n",
        true,
    )
    .unwrap();
    let t = scrape(&s);
    let lines: Vec<&str> = t.lines().filter(|l| l.starts_with("m{")).collect();
    assert_eq!(
        lines,
        [
            "m{instance=\"\",job=\"b\"} 1",
            "m{instance=\"i9\",job=\"a\"} 1",
            "m{a=\"10\",instance=\"i9\",job=\"a\"} 1",
            "m{a=\"2\",instance=\"\",job=\"b\"} 1",
        ]
    );
    // a cached render gives the same bytes
    assert_eq!(scrape(&s), t);
}

#[test]
fn cached_member_order_follows_values_and_label_changes() {
    let s = store();
    for j in ["b", "d"] {
        push(&s, key(j, &[]), "m 1\n", true).unwrap();
    }
    let lines = |s: &Store| -> Vec<String> {
        scrape(s)
            .lines()
            .filter(|l| l.starts_with("m{"))
            .map(String::from)
            .collect()
    };
    assert_eq!(
        lines(&s),
        [
            "m{instance=\"\",job=\"b\"} 1",
            "m{instance=\"\",job=\"d\"} 1"
        ]
    );
    // values change, labels do not: the cached order is reused and the new values appear
    push(&s, key("d", &[]), "m 7\n", true).unwrap();
    assert_eq!(
        lines(&s),
        [
            "m{instance=\"\",job=\"b\"} 1",
            "m{instance=\"\",job=\"d\"} 7"
        ]
    );
    // a group joins in the middle: re-sorted
    push(&s, key("c", &[]), "m 3\n", true).unwrap();
    assert_eq!(
        lines(&s),
        [
            "m{instance=\"\",job=\"b\"} 1",
            "m{instance=\"\",job=\"c\"} 3",
            "m{instance=\"\",job=\"d\"} 7"
        ]
    );
    // a member's label set changes so it now sorts first: re-sorted
    push(&s, key("d", &[("instance", "a")]), "m 9\n", true).unwrap();
    s.delete(&key("d", &[]));
    push(&s, key("c", &[]), "m{a=\"0\"} 3\n", true).unwrap();
    assert_eq!(
        lines(&s),
        [
            "m{instance=\"\",job=\"b\"} 1",
            "m{instance=\"a\",job=\"d\"} 9",
            "m{a=\"0\",instance=\"\",job=\"c\"} 3"
        ]
    );
}

#[test]
fn help_is_deterministic_first_group_in_key_order() {
    let s = store();
    push(&s, key("b", &[]), "# HELP m help B\nm 1\n", true).unwrap();
    push(&s, key("c", &[]), "# HELP m help C\nm 1\n", true).unwrap();
    push(&s, key("a", &[]), "m 1\n", true).unwrap();
    assert!(scrape(&s).contains("# HELP m help B\n"));
}

#[test]
fn without_the_check_conflicts_are_stored_and_resolved_at_render() {
    let s = Store::new(StoreOptions {
        consistency_check: false,
        ..StoreOptions::default()
    });
    push(&s, key("b", &[]), "# TYPE m gauge\nm 1\n", true).unwrap();
    push(&s, key("a", &[]), "# TYPE m counter\nm 1\n", true).unwrap();
    let mut out = Vec::new();
    let stats = s.render(Format::Text, &[], &mut out);
    let t = String::from_utf8(out).unwrap();
    assert!(
        t.contains("# TYPE m counter\nm{instance=\"\",job=\"a\"} 1\n"),
        "{t}"
    );
    assert!(
        !t.contains("job=\"b\"} 1\n# ") && !t.contains("m{instance=\"\",job=\"b\"}"),
        "{t}"
    );
    assert_eq!(stats.inconsistent_dropped, 1);
}

#[test]
fn accounting_returns_to_zero_and_series_index_follows_label_changes() {
    let s = store();
    for i in 0..5 {
        push(
            &s,
            key("a", &[]),
            &format!("x{{l=\"1\"}} {i}\ny {i}\n"),
            true,
        )
        .unwrap();
        push(
            &s,
            key("b", &[]),
            &format!("x{{l=\"2\"}} {i}\n"),
            i % 2 == 0,
        )
        .unwrap();
    }
    assert_eq!(
        s.series_count(),
        3 + 4,
        "3 pushed metrics plus 2x2 timing gauges"
    );
    // the label set of a family changes: the old series must leave the series index
    push(&s, key("a", &[]), "x{l=\"3\"} 1\n", false).unwrap();
    push(&s, key("b", &[]), "x{l=\"1\"} 1\n", true).unwrap();
    let err = push(&s, key("b", &[]), "x{l=\"3\",job=\"a\"} 1\n", true);
    assert!(
        err.is_ok(),
        "job is overwritten by the grouping key, so no collision: {err:?}"
    );
    s.delete(&key("a", &[]));
    s.delete(&key("b", &[]));
    assert_eq!(s.series_count(), 0);
    assert_eq!(s.encoded_bytes(), 0);
    // nothing left behind in the indexes: a new group may take any type and series
    push(&s, key("c", &[]), "# TYPE x counter\nx{l=\"1\"} 1\n", true).unwrap();
}

/// `g` as written whole at `version` (every part stamped with it).
fn restamped(g: &GroupSnapshot, version: u64) -> GroupSnapshot {
    let times = [g.push_time, g.failure_time];
    GroupSnapshot {
        version,
        stamps: crate::store::Stamps::whole(version, g.families.len(), times, g.last_push_successful),
        ..g.clone()
    }
}

#[test]
fn versioned_writes_newest_wins_and_tombstones_block_resurrection() {
    let primary = store();
    let replica = store();
    let fams = parse_text(b"m 1\n", NameScheme::Legacy).unwrap();
    let p = prepare_push(key("v", &[]), fams, true, &Validation::default()).unwrap();
    assert_eq!(primary.push_versioned(p, 5.0, || 100).unwrap().version, 100);
    let g1 = primary.group(&key("v", &[])).unwrap();
    assert_eq!(g1.version, 100);
    assert!(replica.apply_replica(g1.clone()));
    assert!(
        !replica.apply_replica(g1.clone()),
        "same version is not applied twice"
    );
    assert_eq!(replica.group(&key("v", &[])).unwrap().version, 100);
    // delete at 200, then the old state arrives late: refused
    assert!(replica.delete_versioned(&key("v", &[]), 200));
    assert!(!replica.apply_replica(g1.clone()));
    assert!(replica.group(&key("v", &[])).is_none());
    assert_eq!(replica.tombstone(&key("v", &[])), Some(200));
    // an older delete does not remove a newer group
    let g3 = restamped(&g1, 300);
    assert!(replica.apply_replica(g3));
    assert!(replica.tombstone(&key("v", &[])).is_none());
    assert!(!replica.delete_versioned(&key("v", &[]), 250));
    assert!(replica.group(&key("v", &[])).is_some());
    assert_eq!(replica.max_version(), 300);
}

#[test]
fn a_versioned_wipe_removes_everything_and_refuses_late_copies() {
    let s = store();
    for (job, version) in [("old", 100), ("tombstoned", 0), ("new", 300)] {
        let fams = parse_text(format!("{job}_m 1\n").as_bytes(), NameScheme::Legacy).unwrap();
        let p = prepare_push(key(job, &[]), fams, true, &Validation::default()).unwrap();
        if version > 0 {
            s.push_versioned(p, 1.0, || version).unwrap();
        }
    }
    s.delete_versioned(&key("tombstoned", &[]), 150);
    let old_copy = s.group(&key("old", &[])).unwrap();
    // Everything held goes, and the watermark covers the newest version held (300), not
    // only the wipe's own (200): that copy came from a clock running ahead.
    assert_eq!(s.wipe_versioned(200), 300);
    assert!(s.group(&key("old", &[])).is_none());
    assert!(s.group(&key("new", &[])).is_none());
    assert_eq!(s.tombstone(&key("tombstoned", &[])), None);
    assert!(!scrape(&s).contains("_m"));
    assert!(
        !s.apply_replica(old_copy.clone()),
        "a copy from before the wipe is stale"
    );
    let ahead = restamped(&old_copy, 300);
    assert!(
        !s.apply_replica(ahead),
        "nor one as new as anything held at the wipe"
    );
    let later = restamped(&old_copy, 301);
    assert!(s.apply_replica(later), "a write after the wipe is applied");
    assert!(scrape(&s).contains("old_m"));
    // A later wipe with an older version keeps the higher watermark.
    assert_eq!(s.wipe_versioned(10), 301);
}

/// A node that missed a wipe learns its watermark late: what it wrote before the wipe goes,
/// what it took after the wipe stays (a plain wipe would lose it), and so do later tombstones.
#[test]
fn a_wipe_learnt_late_removes_only_what_is_older_than_its_watermark() {
    let s = store();
    for (job, version) in [("before", 100), ("after", 300)] {
        let fams = parse_text(format!("{job}_m 1\n").as_bytes(), NameScheme::Legacy).unwrap();
        let p = prepare_push(key(job, &[]), fams, true, &Validation::default()).unwrap();
        s.push_versioned(p, 1.0, || version).unwrap();
    }
    s.delete_versioned(&key("deleted_before", &[]), 150);
    s.delete_versioned(&key("deleted_after", &[]), 250);
    assert_eq!(s.learn_wipe(200), 1);
    assert!(s.group(&key("before", &[])).is_none());
    assert!(s.group(&key("after", &[])).is_some());
    assert_eq!(s.tombstone(&key("deleted_before", &[])), None);
    assert_eq!(s.tombstone(&key("deleted_after", &[])), Some(250));
    let text = scrape(&s);
    assert!(!text.contains("before_m") && text.contains("after_m"), "{text}");
    assert_eq!(s.wiped_at(), 200);
    assert_eq!(s.learn_wipe(200), 0, "learnt twice: nothing more");
}

#[test]
fn merged_render_of_snapshots_equals_the_store_render() {
    let s = store();
    push(
        &s,
        key("b", &[]),
        "# HELP m help\nm 1\nm{a=\"2\"} 1\n",
        true,
    )
    .unwrap();
    push(
        &s,
        key("a", &[("instance", "i9")]),
        "m 1\nm{a=\"10\"} 1\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        true,
    )
    .unwrap();
    push(&s, key("c", &[]), "x 3\n", true).unwrap();
    // Local snapshots carry their timing families; copies from peers or files do not, and
    // build them: both must render exactly like the store.
    let local = s.snapshot();
    assert!(local.iter().all(|g| g.timing.is_some()));
    let mut decoded = local.clone();
    for g in &mut decoded {
        g.timing = None;
    }
    for format in [Format::Text, Format::Protobuf] {
        let mut direct = Vec::new();
        s.render(format, &[], &mut direct);
        for snapshots in [&local, &decoded] {
            let mut merged = Vec::new();
            merged::render_groups(
                snapshots,
                crate::telemetry::reserved_names(),
                &[],
                format,
                None,
                &mut merged,
            );
            assert_eq!(direct, merged, "{format:?}");
        }
    }
}

#[test]
fn merged_render_keeps_one_of_two_groups_that_collide_once_instance_is_added() {
    // Groups that raced on different primaries: {job="a"} and {instance="",job="a"} expose
    // the same series; a key twice (or out of order) is checked the same way. The first in
    // key order is kept and the other counted, whichever way the view arrives.
    let one = |k: GroupKey, v: u32| {
        let s = store();
        push(&s, k, &format!("m {v}\n"), true).unwrap();
        s.snapshot().remove(0)
    };
    let bare = one(key("a", &[]), 1);
    let empty = one(key("a", &[("instance", "")]), 2);
    let other = one(key("b", &[]), 3);
    let render = |groups: Vec<GroupSnapshot>| {
        let mut out = Vec::new();
        let stats = merged::render_groups(
            &groups,
            crate::telemetry::reserved_names(),
            &[],
            Format::Text,
            None,
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        let m: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("m{"))
            .map(str::to_owned)
            .collect();
        (m, stats.inconsistent_dropped)
    };
    let b = "m{instance=\"\",job=\"b\"} 3".to_owned();
    // {instance="",job="a"} sorts before {job="a"}: it is the one kept.
    let kept_empty = (
        vec!["m{instance=\"\",job=\"a\"} 2".to_owned(), b.clone()],
        1,
    );
    for groups in [
        vec![empty.clone(), bare.clone(), other.clone()],
        vec![bare.clone(), empty.clone(), other.clone()],
        vec![other.clone(), bare.clone(), empty.clone()],
    ] {
        assert_eq!(render(groups), kept_empty);
    }
    let kept_bare = (
        vec!["m{instance=\"\",job=\"a\"} 1".to_owned(), b.clone()],
        1,
    );
    for groups in [
        vec![bare.clone(), bare.clone(), other.clone()],
        vec![bare.clone(), other.clone(), bare.clone()],
    ] {
        assert_eq!(render(groups), kept_bare);
    }
    let none_dropped = (vec!["m{instance=\"\",job=\"a\"} 1".to_owned(), b], 0);
    assert_eq!(render(vec![bare, other]), none_dropped);
}

#[test]
fn timing_families_equal_gauges_of_the_normalized_key() {
    let keys = [
        key("a", &[]),
        key("a", &[("instance", "")]),
        key("a", &[("instance", "i-1")]),
        key("j", &[("a", "x"), ("zz", "1")]),
        key("j", &[("ab", "q\"u\\o\nte"), ("instancf", "2")]),
        key("j", &[("i", "1"), ("instance", "3"), ("z", "")]),
    ];
    for k in &keys {
        let labels = k.normalized().labels().to_vec();
        for (push, failure) in [(1.5, 0.0), (1.7e9, 1.7e9 + 0.25)] {
            let got = timing_families(k, push, failure);
            let want = [
                (PUSH_TIME_METRIC, PUSH_TIME_HELP, push),
                (PUSH_FAILURE_TIME_METRIC, PUSH_FAILURE_TIME_HELP, failure),
            ]
            .map(|(n, h, v)| StoredFamily::gauge(family::intern(n), family::intern(h), &labels, v));
            for (g, w) in got.iter().zip(&want) {
                let wire = |f: &StoredFamily| {
                    let mut b = Vec::new();
                    f.to_wire(&mut b);
                    b
                };
                assert_eq!(wire(g), wire(w), "{k}");
                assert_eq!(g.to_metric_family(), w.to_metric_family(), "{k}");
                assert!(g.same_series(w), "{k}");
            }
            assert!(!StoredFamily::same_block(&got[0], &got[1]));
        }
    }
}

#[test]
fn merged_member_orders_are_reused_only_for_unchanged_members() {
    // Six groups; `n`'s series sort against key order (b falls as the job rises), so its
    // order is a real permutation; `m`'s members interleave (never remembered); `e` is
    // a family without metrics in every group.
    let view = |change: Option<&str>| -> Vec<GroupSnapshot> {
        let s = store();
        for i in 0..6u32 {
            let b = match change {
                Some("relabel") if i == 3 => 9,
                _ => 5 - i,
            };
            let body =
                format!("m{{a=\"{i}\"}} {i}\nm{{a=\"z\"}} 1\nn{{b=\"{b}\"}} 2\n# TYPE e counter\n");
            push(&s, key(&format!("j{i}"), &[]), &body, true).unwrap();
        }
        match change {
            Some("add") => {
                push(&s, key("j6", &[]), "n{b=\"7\"} 1\n", true).unwrap();
            }
            Some("remove") => assert!(s.delete(&key("j2", &[]))),
            _ => {}
        }
        let mut groups = s.snapshot();
        // As from peers: the timing families are built at render.
        for g in &mut groups {
            g.timing = None;
        }
        groups
    };
    let render = |groups: &[GroupSnapshot], orders: Option<&MergedOrders>| {
        let mut out = Vec::new();
        let reserved = crate::telemetry::reserved_names();
        let stats = merged::render_groups(groups, reserved, &[], Format::Text, orders, &mut out);
        (String::from_utf8(out).unwrap(), stats.cached_families)
    };
    let orders = MergedOrders::default();
    let base = view(None);
    let fresh = render(&base, None).0;
    assert_eq!(render(&base, Some(&orders)), (fresh.clone(), 0));
    // n and the two timing families are remembered (m interleaves, e is empty).
    assert_eq!(orders.len(), 3);
    assert_eq!(render(&base, Some(&orders)), (fresh, 3));
    for change in ["relabel", "add", "remove"] {
        let changed = view(Some(change));
        let (want, _) = render(&changed, None);
        let (got, hits) = render(&changed, Some(&orders));
        assert_eq!(got, want, "{change}");
        // n's members changed: its order is found again, not reused.
        let expected_hits = if change == "relabel" { 2 } else { 0 };
        assert_eq!(hits, expected_hits, "{change}");
        assert_eq!(render(&changed, Some(&orders)), (want, 3), "{change}");
        assert_eq!(
            render(&base, Some(&orders)).1,
            expected_hits,
            "{change}, back"
        );
    }
}

#[test]
fn small_chunks_split_families_and_concatenate_to_the_whole_render() {
    let s = store();
    for i in 0..20 {
        let body = format!("# TYPE h histogram\nh_bucket{{le=\"+Inf\"}} {i}\nh_sum 1\nh_count {i}\nm{{a=\"{i}\"}} 1\n");
        push(&s, key("j", &[("instance", &format!("i{i}"))]), &body, true).unwrap();
    }
    let reserved = crate::telemetry::reserved_names();
    for format in [Format::Text, Format::Protobuf] {
        let mut whole = Vec::new();
        s.render(format, &[], &mut whole);
        let mut pieces = Vec::new();
        s.render_chunked(format, &[], 64, &mut |c| pieces.push(c));
        assert!(pieces.len() > 10, "{format:?}: families are split");
        assert_eq!(pieces.concat(), whole, "{format:?}");
        let mut merged_pieces = Vec::new();
        render::render_snapshots(&s.snapshot(), &reserved, &[], format, None, 64, &mut |c| {
            merged_pieces.push(c)
        });
        assert!(merged_pieces.len() > 10);
        assert_eq!(merged_pieces.concat(), whole, "{format:?} from snapshots");
    }
}

#[test]
fn group_limit() {
    let s = Store::new(StoreOptions {
        max_groups: 1,
        ..StoreOptions::default()
    });
    push(&s, key("a", &[]), "x 1\n", true).unwrap();
    let err = push(&s, key("b", &[]), "x 1\n", true).unwrap_err();
    assert!(matches!(err, PushError::LimitExceeded(_)));
    push(&s, key("a", &[]), "x 2\n", true).unwrap();
}

#[test]
fn protobuf_render_is_sorted_and_decodable() {
    use prost::Message;
    let s = store();
    push(&s, key("b", &[]), "m 1\n", true).unwrap();
    push(&s, key("a", &[]), "m 2\n", true).unwrap();
    let mut out = Vec::new();
    s.render(Format::Protobuf, &[], &mut out);
    let fams = crate::exposition::decode_delimited(&out).unwrap();
    let m = fams.iter().find(|f| f.name() == "m").unwrap();
    let jobs: Vec<&str> = m.metric.iter().map(|m| m.label[1].value()).collect();
    assert_eq!(jobs, ["a", "b"]);
    assert!(m.encoded_len() > 0);
}

/// An imported group replaces an older one like a PUT (its times kept), is refused by the
/// consistency check like a PUT (nothing changes), and never replaces a group written later.
#[test]
fn an_import_replaces_older_groups_only_and_is_checked_like_a_put() {
    let s = store();
    push(&s, key("a", &[]), "# TYPE x counter\nx 1\n", true).unwrap();
    push(&s, key("b", &[]), "y 1\n", true).unwrap();
    let at = |group: &GroupSnapshot, t: f64, failure: f64| GroupSnapshot {
        push_time: t,
        failure_time: failure,
        last_push_successful: failure <= t,
        families: group.families.iter().map(|(f, _)| (f.clone(), t)).collect(),
        ..group.clone()
    };
    // A copy of b as pushed at 2000 (b was pushed at 1000): taken, with its times.
    let b = s.group(&key("b", &[])).unwrap();
    assert!(s.import(at(&b, 2000.0, 2500.0)).unwrap());
    let held = s.group(&key("b", &[])).unwrap();
    assert_eq!((held.push_time, held.failure_time), (2000.0, 2500.0));
    assert!(!held.last_push_successful);
    assert_eq!(held.families[0].1, 2000.0);
    // An older copy (written at 1500, before 2500) is not: b stays as it is.
    let before = scrape(&s);
    assert!(!s.import(at(&b, 1500.0, 0.0)).unwrap());
    assert_eq!(scrape(&s), before);
    // Group c with x as a gauge conflicts with a's counter: refused, nothing stored.
    let gauge = prepare_push(
        key("c", &[]),
        parse_text(b"# TYPE x gauge\nx 1\n", NameScheme::Legacy).unwrap(),
        true,
        &Validation::default(),
    )
    .unwrap();
    let c = GroupSnapshot {
        key: std::sync::Arc::new(key("c", &[])),
        families: gauge.families.into_iter().map(|f| (f, 3000.0)).collect(),
        push_time: 3000.0,
        failure_time: 0.0,
        last_push_successful: true,
        version: 1,
        stamps: crate::store::Stamps::whole(1, 1, [3000.0, 0.0], true),
        timing: None,
        agg: None,
        agg_digest: 0,
        aggregating: false,
        ttl: 0.0,
    };
    let before = scrape(&s);
    let err = s.import(c).unwrap_err().to_string();
    assert!(err.contains("inconsistent"), "{err}");
    assert_eq!(scrape(&s), before);
}
