//! The merge against the single node it must agree with: three stores (nodes) take random
//! writes (POST, PUT, DELETE, refused pushes) stamped in one global order, each on its own
//! copy, and merge each other's copies at random moments; a fourth store takes every write in
//! stamp order, as one node would. The merge laws hold on whatever copies the nodes hold, and
//! once every copy met every other, each node holds exactly what the single node holds.

use std::sync::Arc;

use proptest::prelude::*;

use super::{digest, is_gone, merge, tombstone};
use crate::exposition::{parse_text, NameScheme};
use crate::store::{prepare_push, GroupKey, GroupSnapshot, Store, StoreOptions, Validation};

const NAMES: [&str; 4] = ["fa", "fb", "fc", "fd"];

fn key() -> GroupKey {
    GroupKey::new([("job".to_owned(), "g".to_owned())])
}

#[derive(Debug, Clone)]
enum Op {
    /// A push of the families picked by the bits (POST, or PUT when `put`).
    Push { names: u8, put: bool },
    Delete,
    /// A push refused (only its failure time is recorded).
    Failure,
    /// The node merges another node's copy (1 or 2 nodes further).
    Merge(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..16, any::<bool>()).prop_map(|(names, put)| Op::Push { names, put }),
        1 => Just(Op::Delete),
        1 => Just(Op::Failure),
        3 => (1usize..3).prop_map(Op::Merge),
    ]
}

/// What a store holds of the group, as a copy: the group, or its tombstone (possibly none).
fn state(s: &Store) -> GroupSnapshot {
    let k = key();
    s.group(&k)
        .unwrap_or_else(|| tombstone(Arc::new(k.clone()), s.tombstone(&k).unwrap_or(0)))
}

/// Applies a write stamped `stamp` (also its time) to a store, as a cluster primary does.
fn write(s: &Store, op: &Op, stamp: u64) {
    let now = stamp as f64;
    match *op {
        Op::Push { names, put } => {
            let body: String = NAMES
                .iter()
                .enumerate()
                .filter(|(i, _)| names & (1 << i) != 0)
                .map(|(_, n)| format!("{n} {stamp}\n"))
                .collect();
            let families = parse_text(body.as_bytes(), NameScheme::Legacy).expect("valid");
            let p = prepare_push(key(), families, put, &Validation::default()).expect("valid");
            s.push_versioned(p, now, || stamp).expect("accepted");
        }
        Op::Delete => {
            s.delete_versioned(&key(), stamp);
        }
        Op::Failure => {
            s.record_failure_versioned(&key(), now, || stamp);
        }
        Op::Merge(_) => unreachable!("merges are not writes"),
    }
}

/// Merges a copy into a store the way the cluster does: a group as a replica, a tombstone as
/// a versioned delete.
fn take(s: &Store, copy: &GroupSnapshot) {
    if is_gone(copy) {
        if copy.stamps.cleared > 0 {
            s.delete_versioned(&key(), copy.stamps.cleared);
        }
    } else {
        s.apply_replica(copy.clone());
    }
}

/// What a copy exposes, and its stamps: equal for equal copies.
type Canon = (u64, Vec<(String, Vec<u8>)>, [u64; 2], bool);

fn canon(g: &GroupSnapshot) -> Canon {
    let families = g
        .families
        .iter()
        .map(|(f, _)| (f.name.to_string(), f.text().to_vec()))
        .collect();
    let times = [g.push_time.to_bits(), g.failure_time.to_bits()];
    (digest(g), families, times, g.last_push_successful)
}

/// Families (name, text), times and whether the last push succeeded.
type Served = (Vec<(String, Vec<u8>)>, [u64; 2], bool);

/// What a group exposes to a scrape (or nothing), without stamps: a single node and a
/// cluster stamp differently where a tombstone lies, and agree on everything served.
fn served(s: &Store) -> Option<Served> {
    s.group(&key()).map(|g| {
        let (_, families, times, ok) = canon(&g);
        (families, times, ok)
    })
}

/// Runs `ops` on three nodes (each op with the node it runs on) and on a single node.
fn run(ops: &[(usize, Op)]) -> ([Store; 3], Store) {
    let nodes = [(); 3].map(|()| Store::new(StoreOptions::default()));
    let single = Store::new(StoreOptions::default());
    let mut stamp = 0;
    for (n, op) in ops {
        match op {
            Op::Merge(d) => take(&nodes[*n], &state(&nodes[(n + d) % 3])),
            op => {
                stamp += 1;
                write(&nodes[*n], op, stamp);
                write(&single, op, stamp);
            }
        }
    }
    (nodes, single)
}

fn ops() -> impl Strategy<Value = Vec<(usize, Op)>> {
    prop::collection::vec((0usize..3, op()), 1..40)
}

proptest! {
    #[test]
    fn the_merge_is_commutative_associative_and_idempotent(ops in ops()) {
        let (nodes, _) = run(&ops);
        let [a, b, c] = [&nodes[0], &nodes[1], &nodes[2]].map(state);
        prop_assert_eq!(canon(&merge(&a, &b)), canon(&merge(&b, &a)));
        prop_assert_eq!(
            canon(&merge(&merge(&a, &b), &c)),
            canon(&merge(&a, &merge(&b, &c)))
        );
        prop_assert_eq!(canon(&merge(&a, &a)), canon(&a));
        // Merging a copy already merged in changes nothing.
        let ab = merge(&a, &b);
        prop_assert_eq!(canon(&merge(&ab, &b)), canon(&ab));
    }

    /// Whatever each node missed, once the copies met, every node serves what one node taking
    /// every write in order serves: no acknowledged write is lost, none comes back.
    #[test]
    fn merged_copies_hold_what_a_single_node_holds(ops in ops()) {
        let (nodes, single) = run(&ops);
        for _ in 0..2 {
            for i in 0..3 {
                for d in 1..3 {
                    take(&nodes[i], &state(&nodes[(i + d) % 3]));
                }
            }
        }
        let want = served(&single);
        for (i, n) in nodes.iter().enumerate() {
            prop_assert_eq!(&served(n), &want, "node {}", i);
        }
        // A stored group's digest (read from the store's own form, as anti-entropy does) is
        // the digest of its copy, on every node.
        for n in &nodes {
            if let Some((d, false)) = n.digest(&key()) {
                prop_assert_eq!(d, digest(&state(n)));
            }
        }
        // And the nodes hold the same copy, stamps included (anti-entropy then has nothing
        // left to send).
        prop_assert_eq!(canon(&state(&nodes[0])), canon(&state(&nodes[1])));
        prop_assert_eq!(canon(&state(&nodes[1])), canon(&state(&nodes[2])));
    }
}

#[test]
fn a_post_on_each_side_keeps_both_families() {
    let ops = [
        (0, Op::Push { names: 0b01, put: false }),
        (1, Op::Push { names: 0b10, put: false }),
        (0, Op::Merge(1)),
    ];
    let (nodes, _) = run(&ops);
    let names: Vec<String> = state(&nodes[0])
        .families
        .iter()
        .map(|(f, _)| f.name.to_string())
        .collect();
    assert_eq!(names, ["fa", "fb"]);
}

#[test]
fn a_newer_put_removes_an_older_post_from_the_other_side_and_an_older_put_does_not() {
    // fb POSTed on node 1 at 1, then fa PUT on node 0 at 2: the PUT replaced the group.
    let (nodes, _) = run(&[
        (1, Op::Push { names: 0b10, put: false }),
        (0, Op::Push { names: 0b01, put: true }),
        (0, Op::Merge(1)),
    ]);
    let names: Vec<String> = state(&nodes[0]).families.iter().map(|(f, _)| f.name.to_string()).collect();
    assert_eq!(names, ["fa"]);
    // The PUT first: the POST after it stays.
    let (nodes, _) = run(&[
        (0, Op::Push { names: 0b01, put: true }),
        (1, Op::Push { names: 0b10, put: false }),
        (0, Op::Merge(1)),
    ]);
    let names: Vec<String> = state(&nodes[0]).families.iter().map(|(f, _)| f.name.to_string()).collect();
    assert_eq!(names, ["fa", "fb"]);
}

#[test]
fn a_delete_merged_into_a_newer_copy_removes_only_what_it_deleted() {
    let (nodes, single) = run(&[
        (0, Op::Push { names: 0b01, put: false }),
        (1, Op::Merge(2)),
        (1, Op::Delete),
        (0, Op::Push { names: 0b10, put: false }),
        (0, Op::Merge(1)),
        (1, Op::Merge(2)),
    ]);
    let names: Vec<String> = state(&nodes[0]).families.iter().map(|(f, _)| f.name.to_string()).collect();
    assert_eq!(names, ["fb"]);
    assert_eq!(served(&nodes[0]), served(&single));
    // Node 1 took the delete as a tombstone; node 0's copy, merged into it, brings back only
    // what was written after it.
    take(&nodes[1], &state(&nodes[0]));
    assert_eq!(served(&nodes[1]), served(&single));
}

/// A file's or a peer's copy whose stamps no sequence of writes leaves is refused with what
/// is wrong, before anything is stored; a copy without stamps is taken as written whole.
#[test]
fn decoded_stamps_are_checked_against_each_other() {
    use crate::store::codec::{decode_group, encode_group_wire, snapshot_proto};
    use prost::Message;
    let s = Store::new(StoreOptions::default());
    write(&s, &Op::Push { names: 0b11, put: false }, 7);
    write(&s, &Op::Failure, 9);
    let mut bytes = Vec::new();
    encode_group_wire(&s.group(&key()).unwrap(), &mut bytes);
    let good = snapshot_proto::Group::decode(bytes.as_slice()).unwrap();
    let decode = |g: snapshot_proto::Group| decode_group(0, g, NameScheme::Legacy, None);
    let back = decode(good.clone()).expect("a store's own copy decodes");
    assert_eq!(canon(&back), canon(&s.group(&key()).unwrap()));
    type Spoil = fn(&mut snapshot_proto::Group);
    let cases: [(&str, Spoil); 6] = [
        ("not the newest", |g| g.version += 1),
        ("newer than its last reset", |g| g.cleared = g.reset + 1),
        ("neither a push nor a failure", |g| {
            g.push_stamp = 0;
            g.failure_stamp = 0;
            g.version = 7;
        }),
        ("older than its last delete", |g| {
            g.cleared = 8;
            g.reset = 8;
        }),
        ("newer than its push", |g| g.family_versions[0] = 8),
        ("family versions", |g| {
            g.family_versions.pop();
        }),
    ];
    for (want, spoil) in cases {
        let mut g = good.clone();
        spoil(&mut g);
        let err = decode(g).expect_err(want);
        assert!(err.contains(want), "{want}: {err}");
    }
    // No stamps at all: every part at the group's version.
    let mut bare = good.clone();
    (bare.reset, bare.cleared, bare.push_stamp, bare.failure_stamp, bare.ttl_stamp) = (0, 0, 0, 0, 0);
    bare.family_versions.clear();
    let whole = decode(bare).expect("a copy without stamps decodes");
    assert_eq!(whole.stamps.families, [9, 9]);
    assert!(!whole.last_push_successful);
}

/// A held group's digest, worked out without a copy, is its copy's.
#[test]
fn a_held_groups_digest_is_its_copys() {
    let (nodes, _) = run(&[
        (0, Op::Push { names: 0b101, put: true }),
        (0, Op::Failure),
        (0, Op::Push { names: 0b010, put: false }),
    ]);
    let held = nodes[0].digest(&key()).expect("held").0;
    assert_eq!(held, digest(&state(&nodes[0])));
}
