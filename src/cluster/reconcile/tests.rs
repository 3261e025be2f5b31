//! The reconciler: rounds, sync, the join pull and the handover.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::sync::{answer_sync, summarize};
use super::{LifecycleSettings, Reconciler};
use crate::cluster::core::ClusterCore;
use crate::cluster::member::{Member, MemberState, NodeId};
use crate::cluster::read::answer::{collect_chunks, select_for_collect};
use crate::cluster::read::merge::{decode_chunks, drop_repeated_groups};
use crate::cluster::ring::{owners, Ring};
use crate::cluster::rpc::{pb, wire};
use crate::cluster::testkit::RecordedCall;
use crate::exposition::parse_text;
use crate::exposition::NameScheme;
use crate::store::{prepare_push, GroupKey, Store, StoreOptions, Validation};
use crate::time::unix_millis;

fn key(job: &str) -> GroupKey {
    GroupKey::new([("job".to_owned(), job.to_owned())])
}

fn member(id: &str, port: u16) -> Member {
    Member {
        id: NodeId::from(id),
        generation: 1,
        grpc_addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        state: MemberState::Active,
    }
}

fn core_with(store: Arc<Store>, members: Vec<Member>, r: usize) -> Arc<ClusterCore> {
    let ring = Arc::new(Ring::new(NodeId::from("a"), members, 1));
    let (_tx, rx) = watch::channel(ring);
    ClusterCore::new(
        store,
        Validation::default(),
        rx,
        NodeId::from("a"),
        r,
        Duration::from_secs(1),
        None,
    )
}

fn push(store: &Store, job: &str, version: u64) {
    let families = parse_text(b"m 1\n", NameScheme::Legacy).expect("valid text");
    let p = prepare_push(key(job), families, true, &Validation::default()).expect("valid");
    store.push_versioned(p, 1.0, || version).expect("push");
}

fn entry(job: &str, version: u64, tombstone: bool) -> pb::SyncEntry {
    pb::SyncEntry {
        key: wire::key_to_pb(&key(job)),
        version,
        tombstone,
        digest: 0,
    }
}

#[test]
fn a_collect_leaves_out_exactly_the_groups_the_caller_holds_in_the_same_version() {
    let store = Store::new(StoreOptions::default());
    push(&store, "same", 10);
    push(&store, "newer_here", 30);
    push(&store, "not_held", 40);
    let held = pb::CollectRequest {
        held_keys: vec![key("same").stable_hash(), key("newer_here").stable_hash()],
        held_versions: vec![10, 20],
        ..Default::default()
    };
    let ring = Ring::new(NodeId::from("a"), Vec::new(), 1);
    let select = |req: &pb::CollectRequest| select_for_collect(&store, req, &ring, 2);
    // In no particular order.
    let jobs = |groups: &[crate::store::GroupSnapshot]| -> Vec<String> {
        let mut jobs: Vec<String> = groups.iter().map(|g| g.key.to_string()).collect();
        jobs.sort();
        jobs
    };
    let sel = select(&held);
    assert!(sel.deferred.is_empty());
    assert_eq!(
        jobs(&sel.groups),
        vec![key("newer_here").to_string(), key("not_held").to_string()]
    );
    // A malformed list (lengths differ) or none at all: everything is sent.
    for bad in [
        pb::CollectRequest::default(),
        pb::CollectRequest {
            held_keys: vec![key("same").stable_hash()],
            ..Default::default()
        },
    ] {
        assert_eq!(select(&bad).groups.len(), 3);
    }
}

#[test]
fn a_group_two_peers_sent_in_the_same_version_is_decoded_once() {
    let a = Store::new(StoreOptions::default());
    push(&a, "both", 10);
    push(&a, "only_a", 11);
    push(&a, "differs", 12);
    let b = Store::new(StoreOptions::default());
    push(&b, "both", 10);
    push(&b, "differs", 13);
    let chunks = |s: &Store| collect_chunks(&s.snapshot(), Vec::new(), Vec::new(), false);
    let mut answers = vec![chunks(&a), chunks(&b)];
    // An answer whose chunks do not list a key hash for each group is left alone.
    let mut unlisted = chunks(&b);
    for c in &mut unlisted {
        c.group_keys.clear();
        c.group_versions.clear();
    }
    answers.push(unlisted);
    let spares = drop_repeated_groups(&mut answers);
    let decoded = |chunks: Vec<pb::CollectChunk>| -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = decode_chunks(chunks, NameScheme::Legacy, u64::MAX)
            .unwrap()
            .groups
            .iter()
            .map(|g| (g.key.to_string(), g.version))
            .collect();
        v.sort();
        v
    };
    let [from_a, from_b, from_unlisted]: [Vec<pb::CollectChunk>; 3] = answers.try_into().unwrap();
    assert_eq!(decoded(from_a).len(), 3);
    assert_eq!(
        decoded(from_b),
        vec![(key("differs").to_string(), 13)],
        "b's copy of \"both\" is the same version as a's"
    );
    assert_eq!(decoded(from_unlisted).len(), 2);
    // The copy set aside is there for when a's answer cannot be decoded.
    assert_eq!(
        decoded(vec![spares[1].clone()]),
        vec![(key("both").to_string(), 10)]
    );
    assert!(spares[0].groups.is_empty() && spares[2].groups.is_empty());
}

/// Copies are compared by digest: the same copy is left alone; any other goes both ways (the
/// callee's copy in the answer, the entry listed as missing so the caller sends its own),
/// whichever version is newer, since either copy may hold a write the other lacks.
#[test]
fn sync_exchanges_copies_whose_digests_differ_both_ways() {
    let store = Arc::new(Store::new(StoreOptions::default()));
    push(&store, "same", 10);
    push(&store, "newer_here", 20);
    push(&store, "older_here", 5);
    store.delete_versioned(&key("deleted_here"), 30);
    let same = store.digest(&key("same")).expect("held").0;
    let core = core_with(store, vec![member("a", 1)], 1);
    let req = pb::SyncRequest {
        from: "b".into(),
        entries: vec![
            pb::SyncEntry {
                digest: same,
                ..entry("same", 10, false)
            },
            entry("newer_here", 15, false),
            entry("older_here", 6, false),
            entry("deleted_here", 25, false),
            entry("absent", 3, true),
        ],
        want_owned: false,
        wipe_watermark: 0,
        summary: Vec::new(),
    };
    let reply = answer_sync(&core, req).expect("valid request");
    assert_eq!(reply.missing, vec![1, 2, 3, 4]);
    let sent: Vec<(String, u64)> = reply
        .newer_groups
        .iter()
        .map(|raw| {
            let g = wire::group_from_bytes(raw, NameScheme::Legacy).unwrap();
            (g.key.get("job").unwrap_or_default().to_owned(), g.version)
        })
        .collect();
    assert_eq!(
        sent,
        [("newer_here".to_owned(), 20), ("older_here".to_owned(), 5)]
    );
    assert_eq!(reply.newer_tombstones.len(), 1);
    assert_eq!(reply.newer_tombstones[0].version, 30);
}

/// A caller that knows of a wipe this node missed: this node learns it (what it held from
/// before goes, a later write stays) and answers with its watermark; a watermark from the far
/// future is refused like any peer's version, and nothing is removed.
#[test]
fn sync_carries_the_wipe_watermark_both_ways() {
    let store = Arc::new(Store::new(StoreOptions::default()));
    let now = unix_millis() << 16;
    push(&store, "before_wipe", now - 100);
    push(&store, "after_wipe", now + 100);
    let core = core_with(store.clone(), vec![member("a", 1)], 1);
    let sync = |watermark| pb::SyncRequest {
        from: "b".into(),
        entries: vec![entry("after_wipe", now + 100, false)],
        want_owned: false,
        wipe_watermark: watermark,
        summary: Vec::new(),
    };
    let future = (unix_millis() + 3_600_000) << 16;
    assert!(answer_sync(&core, sync(future)).is_err());
    assert!(store.group(&key("before_wipe")).is_some(), "nothing removed");
    let reply = answer_sync(&core, sync(now)).expect("valid request");
    assert_eq!(reply.wipe_watermark, now);
    assert!(store.group(&key("before_wipe")).is_none());
    assert!(store.group(&key("after_wipe")).is_some());
    // A caller that missed it gets the watermark in the answer.
    let reply = answer_sync(&core, sync(0)).expect("valid request");
    assert_eq!(reply.wipe_watermark, now);
}

#[test]
fn sync_refuses_a_bad_key_without_panicking() {
    let core = core_with(
        Arc::new(Store::new(StoreOptions::default())),
        vec![member("a", 1)],
        1,
    );
    let req = pb::SyncRequest {
        from: "b".into(),
        entries: vec![pb::SyncEntry {
            key: Vec::new(),
            version: 1,
            tombstone: false,
            digest: 0,
        }],
        want_owned: true,
        wipe_watermark: 0,
        summary: Vec::new(),
    };
    assert!(answer_sync(&core, req).is_err());
}

#[test]
fn pull_sends_the_groups_the_joiner_will_own() {
    let store = Arc::new(Store::new(StoreOptions::default()));
    for i in 0..50 {
        push(&store, &format!("j{i}"), 100 + i);
    }
    // R = 1 with the joiner counted: about half of the groups move to "b".
    let j0 = store.digest(&key("j0")).expect("held").0;
    let core = core_with(store, vec![member("a", 1)], 1);
    let req = pb::SyncRequest {
        from: "b".into(),
        entries: vec![pb::SyncEntry {
            digest: j0,
            ..entry("j0", 100, false)
        }],
        want_owned: true,
        wipe_watermark: 0,
        summary: Vec::new(),
    };
    let reply = answer_sync(&core, req).expect("valid request");
    let joined = [member("a", 1), member("b", 2)];
    let want = (1..50)
        .filter(|i| {
            let h = key(&format!("j{i}")).stable_hash();
            owners(h, &joined, 1)[0].id.as_str() == "b"
        })
        .count();
    assert!(want > 0);
    assert_eq!(reply.newer_groups.len(), want);
}

#[tokio::test]
async fn a_round_without_peers_keeps_groups_and_collects_old_tombstones() {
    let store = Arc::new(Store::new(StoreOptions::default()));
    push(&store, "kept", 1 << 16);
    store.delete_versioned(&key("old"), 1 << 16);
    let recent = unix_millis() << 16;
    store.delete_versioned(&key("recent"), recent);
    let core = core_with(store.clone(), vec![member("a", 1)], 2);
    let rec = Reconciler::new(
        core,
        LifecycleSettings::default(),
        Duration::from_millis(200),
    );
    let ring = Ring::new(NodeId::from("a"), vec![member("a", 1)], 1);
    let report = rec.round(&ring, true).await;
    assert_eq!((report.handed_off, report.hints), (0, 0));
    assert!(store.group(&key("kept")).is_some());
    assert_eq!(store.tombstone(&key("old")), None);
    assert_eq!(store.tombstone(&key("recent")), Some(recent));
}

#[test]
fn handed_over_copies_are_dropped_only_as_acknowledged() {
    let store = Store::new(StoreOptions::default());
    let families = parse_text(b"m 1\n", NameScheme::Legacy).expect("valid text");
    let post = prepare_push(key("g"), families, false, &Validation::default()).expect("valid");
    store.push_versioned(post, 1.0, || 10).expect("push");
    let listed = store.digest(&key("g")).expect("held").0;
    // A copy merged in since the round listed it (an older family the group lacked) keeps the
    // version but changes the digest: the copy stays for the next round.
    let mut older = store.group(&key("g")).unwrap();
    older.families[0].0 = crate::store::StoredFamily::gauge(
        crate::store::family::intern("a_older_family"),
        crate::store::family::intern(""),
        &[("job".into(), "g".into()), ("instance".into(), "".into())],
        1.0,
    );
    older.version = 9;
    older.stamps = crate::store::Stamps {
        reset: 0,
        cleared: 0,
        push: 9,
        failure: 0,
        ttl: 9,
        families: vec![9],
    };
    assert!(store.apply_replica(older));
    assert_eq!(store.group_version(&key("g")), Some(10));
    assert!(!store.drop_if_digest(&key("g"), listed));
    let now = store.digest(&key("g")).expect("held").0;
    assert!(store.drop_if_digest(&key("g"), now));
    assert!(store.group(&key("g")).is_none());
    assert!(
        store.tombstone(&key("g")).is_none(),
        "a move leaves no tombstone"
    );
    store.delete_versioned(&key("t"), 5);
    assert!(!store.drop_tombstone_if_version(&key("t"), 4));
    assert!(store.drop_tombstone_if_version(&key("t"), 5));
    assert_eq!(store.tombstone_count(), 0);
}

/// A hint keeps the time it was first held across rounds (its age grows) and is forgotten once
/// it is no longer held.
#[tokio::test]
async fn the_oldest_hint_keeps_its_first_round_s_time() {
    let store = Arc::new(Store::new(StoreOptions::default()));
    push(&store, "held-for-b", 1 << 16);
    let mut joining = member("a", 1);
    joining.state = MemberState::Joining;
    // "b" owns every group and cannot be reached (nothing listens on port 1).
    let members = vec![joining, member("b", 1)];
    let core = core_with(store.clone(), members.clone(), 1);
    let rec = Reconciler::new(core, LifecycleSettings::default(), Duration::from_millis(200));
    let ring = Ring::new(NodeId::from("a"), members, 1);
    let first = rec.round(&ring, true).await;
    assert_eq!(first.hints, 1);
    let since: Vec<_> = rec.hint_since.lock().values().copied().collect();
    assert_eq!(since.len(), 1);
    let second = rec.round(&ring, true).await;
    assert_eq!(second.hints, 1);
    let again: Vec<_> = rec.hint_since.lock().values().copied().collect();
    assert_eq!(again, since, "the hint's first time is kept, so its age grows");
    store.delete_versioned(&key("held-for-b"), 2 << 16);
    let ring_without_tombstones = Ring::new(NodeId::from("a"), vec![member("a", 1)], 2);
    rec.round(&ring_without_tombstones, true).await;
    assert!(rec.hint_since.lock().is_empty(), "nothing is held for others");
}

/// A summary is compared bucket by bucket: the callee names exactly the buckets where the
/// caller's copies differ from what it holds and both own (a newer write, a group or a
/// tombstone it lacks); copies it holds that the caller does not own are not in its sums.
#[test]
fn a_summary_names_only_the_buckets_whose_copies_differ() {
    let ours = Arc::new(Store::new(StoreOptions::default()));
    let theirs = Store::new(StoreOptions::default());
    for i in 0..200 {
        push(&ours, &format!("j{i}"), 100 + i);
        push(&theirs, &format!("j{i}"), 100 + i);
    }
    push(&theirs, "j7", 500);
    push(&theirs, "only_theirs", 9);
    theirs.delete_versioned(&key("gone"), 50);
    // "a" and "b" both own every group (R = 2 of 2).
    let core = core_with(ours.clone(), vec![member("a", 1), member("b", 2)], 2);
    let buckets = 64;
    let summary = summarize(theirs.sync_digests(|_| true).into_iter(), buckets);
    let request = |summary: Vec<u64>| pb::SyncRequest {
        from: "b".into(),
        summary,
        ..Default::default()
    };
    let reply = answer_sync(&core, request(summary.clone())).expect("valid summary");
    let bucket = |job: &str| (key(job).stable_hash() % buckets as u64) as u32;
    let mut want = vec![bucket("j7"), bucket("only_theirs"), bucket("gone")];
    want.sort_unstable();
    want.dedup();
    assert_eq!(reply.differing, want);
    assert!(reply.newer_groups.is_empty() && reply.missing.is_empty());

    // With R = 1 no group has both nodes for owners: every bucket the caller filled differs.
    let apart = core_with(ours, vec![member("a", 1), member("b", 2)], 1);
    let reply = answer_sync(&apart, request(summary.clone())).expect("valid summary");
    let filled: Vec<u32> = (0..buckets as u32)
        .filter(|&b| summary[b as usize] != 0)
        .collect();
    assert_eq!(reply.differing, filled);

    // A summary too large to sum, or one that also lists entries or asks for owned groups.
    assert!(answer_sync(&core, request(vec![0; (1 << 16) + 1])).is_err());
    let mut with_entries = request(vec![0; 4]);
    with_entries.entries.push(entry("j1", 101, false));
    assert!(answer_sync(&core, with_entries).is_err());
    let mut wanting = request(vec![0; 4]);
    wanting.want_owned = true;
    assert!(answer_sync(&core, wanting).is_err());
}

/// A round between two nodes over gRPC: the first `Sync` to the peer carries only a summary,
/// the second lists only the copies in the buckets that differ, and those are exchanged both
/// ways; a second round finds nothing to list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_lists_only_the_copies_in_buckets_that_differ() {
    use crate::cluster::testkit::{node, serve_on, TestPeer};
    let la = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lb = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let members = [
        ("a", la.local_addr().unwrap().port()),
        ("b", lb.local_addr().unwrap().port()),
    ];
    let (store_a, svc_a) = node("a", &members, 2);
    let (store_b, svc_b) = node("b", &members, 2);
    let peer = TestPeer::new(svc_b);
    let calls = peer.calls.clone();
    serve_on(lb, peer);
    for i in 0..500 {
        push(&store_a, &format!("j{i}"), 100 + i);
        push(&store_b, &format!("j{i}"), 100 + i);
    }
    push(&store_a, "j3", 900);
    push(&store_a, "only_a", 7);
    let core = svc_a.core.clone();
    let ring = (*core.ring()).clone();
    drop(la);
    let rec = Reconciler::new(core, LifecycleSettings::default(), Duration::from_millis(200));
    let report = rec.round(&ring, true).await;
    let syncs: Vec<RecordedCall> = calls.lock().drain(..).collect();
    assert_eq!(syncs.len(), 2, "a summary, then the entries: {syncs:?}");
    assert_eq!((syncs[0].1, syncs[0].2), (0, 64), "501 copies in 64 buckets");
    assert!(
        (2..=40).contains(&syncs[1].1),
        "the entries of the two differing buckets only: {syncs:?}"
    );
    // j3's newer copy and the group b lacked went to b; b's j3 came back to be merged.
    assert_eq!(store_b.group_version(&key("j3")), Some(900));
    assert!(store_b.group(&key("only_a")).is_some());
    assert!(report.sent >= 2, "{report:?}");
    // The next round finds every copy alike.
    let again = rec.round(&ring, true).await;
    assert_eq!((again.sent, again.received), (0, 0), "{again:?}");
    let syncs: Vec<RecordedCall> = calls.lock().drain(..).collect();
    assert_eq!(syncs.len(), 1, "the summary alone: {syncs:?}");
}
