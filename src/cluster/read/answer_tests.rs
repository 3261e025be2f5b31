//! What a peer sends for a collect call, and the chunks it sends it in.

use std::collections::HashMap;
use std::net::SocketAddr;

use prost::Message;

use super::*;
use crate::cluster::member::{Member, MemberState, NodeId};
use crate::cluster::read::merge::decode_chunks;
use crate::cluster::rpc::wire::{group_from_bytes, group_in_bytes};
use crate::exposition::NameScheme;
use crate::store::prepare::{prepare_push, Validation};

#[test]
fn collect_chunks_decode_to_the_same_groups_read_in_place_and_replicas_are_copied() {
    use crate::store::{Store, StoreOptions};
    let store = Store::new(StoreOptions::default());
    // About 2 KB per group: 1,500 groups fill more than two chunks.
    let body: String = (0..40).map(|i| format!("m{{i=\"{i}\"}} {i}\n")).collect();
    for g in 0..1500 {
        let fams = crate::exposition::parse_text(body.as_bytes(), NameScheme::Legacy).unwrap();
        let key = GroupKey::new([("job".to_string(), format!("j{g}"))]);
        let p = prepare_push(key, fams, true, &Validation::default()).unwrap();
        store.push(p, 1.0).unwrap();
    }
    let groups = store.snapshot();
    let chunks = collect_chunks(&groups, Vec::new(), Vec::new(), false);
    assert!(chunks.len() > 2, "{} chunks", chunks.len());
    // As received: each chunk is decoded from a buffer of its own.
    let received: Vec<bytes::Bytes> = chunks
        .iter()
        .map(|c| bytes::Bytes::from(c.encode_to_vec()))
        .collect();
    let decoded = received
        .iter()
        .map(|b| pb::CollectChunk::decode(b.clone()).unwrap())
        .collect();
    let got = decode_chunks(decoded, NameScheme::Legacy, u64::MAX)
        .unwrap()
        .groups;
    assert_eq!(got.len(), groups.len());
    for (a, b) in groups.iter().zip(&got) {
        assert_eq!(a.key, b.key);
        assert_eq!(a.version, b.version);
        assert_eq!(a.families.len(), b.families.len());
        for ((fa, ta), (fb, tb)) in a.families.iter().zip(&b.families) {
            assert_eq!(
                (fa.text(), fa.proto_metrics(), ta),
                (fb.text(), fb.proto_metrics(), tb)
            );
        }
    }
    // A merged view's groups are read where they lie in the received buffers, which they
    // hold until they are dropped, and nothing else does.
    for g in &got {
        for (f, _) in g.families.iter() {
            let inside = received
                .iter()
                .any(|b| b.as_ptr_range().contains(&f.text().as_ptr()));
            assert!(inside, "group {} was copied", g.key);
        }
    }
    assert!(received.iter().all(|b| !b.is_unique()));
    drop(got);
    assert!(received.iter().all(|b| b.is_unique()));
    // A group kept by a node (a replica) is copied out: the message is not held.
    let chunk = pb::CollectChunk::decode(received[0].clone()).unwrap();
    let kept = group_from_bytes(&chunk.groups[0], NameScheme::Legacy).unwrap();
    let in_place = group_in_bytes(&chunk.groups[0], NameScheme::Legacy).unwrap();
    drop(chunk);
    assert_eq!(kept.families.len(), in_place.families.len());
    for ((a, _), (b, _)) in kept.families.iter().zip(&in_place.families) {
        assert_eq!((a.text(), a.proto_metrics()), (b.text(), b.proto_metrics()));
    }
    drop(in_place);
    assert!(received[0].is_unique());
    assert_eq!(kept.key, groups[0].key);
}

fn ring_of(self_id: &str, ids: &[&str]) -> Ring {
    let members = ids
        .iter()
        .enumerate()
        .map(|(i, id)| Member {
            id: NodeId::from(*id),
            generation: 1,
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)),
            state: MemberState::Active,
        })
        .collect();
    Ring::new(NodeId::from(self_id), members, 1)
}

fn store_of(groups: usize) -> crate::store::Store {
    let store = crate::store::Store::new(crate::store::StoreOptions::default());
    for g in 0..groups {
        let fams = crate::exposition::parse_text(b"m 1\n", NameScheme::Legacy).unwrap();
        let key = GroupKey::new([("job".to_string(), format!("j{g}"))]);
        let p = prepare_push(key, fams, true, &Validation::default()).unwrap();
        store.push(p, 1.0).unwrap();
    }
    store
}

fn hashes(groups: &[GroupSnapshot]) -> std::collections::BTreeSet<u64> {
    groups.iter().map(|g| g.key.stable_hash()).collect()
}

#[test]
fn peers_asked_together_send_each_group_once_and_name_the_rest() {
    // Nodes b and c both hold every group (R = 3 of a, b, c); a asks both.
    let store = store_of(200);
    let all = hashes(&store.snapshot());
    let req = pb::CollectRequest {
        // "x" is no member: it changes nothing.
        responders: vec!["b".into(), "x".into(), "c".into()],
        ..Default::default()
    };
    let from = |id: &str| select_for_collect(&store, &req, &ring_of(id, &["a", "b", "c"]), 3);
    let (b, c) = (from("b"), from("c"));
    let (sent_b, sent_c) = (hashes(&b.groups), hashes(&c.groups));
    assert!(sent_b.is_disjoint(&sent_c));
    assert_eq!(&sent_b | &sent_c, all);
    // Both sent a fair share, and each named exactly what the other sent.
    assert!(
        sent_b.len() > 50 && sent_c.len() > 50,
        "{} / {}",
        sent_b.len(),
        sent_c.len()
    );
    let deferred = |s: &Selected| {
        s.deferred
            .iter()
            .map(|&(h, _)| h)
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(deferred(&b), sent_c);
    assert_eq!(deferred(&c), sent_b);
    let versions: HashMap<u64, u64> = store
        .snapshot()
        .iter()
        .map(|g| (g.key.stable_hash(), g.version))
        .collect();
    assert!(b.deferred.iter().all(|(h, v)| versions[h] == *v));
    // Asked alone, b is the first listed owner of every group it owns, and no listed peer
    // owns the others: it sends everything, defers nothing.
    let alone = pb::CollectRequest {
        responders: vec!["b".into()],
        ..Default::default()
    };
    let b_alone = select_for_collect(&store, &alone, &ring_of("b", &["a", "b", "c"]), 2);
    assert_eq!(hashes(&b_alone.groups), all);
    assert!(b_alone.deferred.is_empty());
}

#[test]
fn a_follow_up_gets_exactly_the_groups_asked_for() {
    let store = store_of(50);
    let snapshot = store.snapshot();
    let want: Vec<u64> = snapshot
        .iter()
        .step_by(7)
        .map(|g| g.key.stable_hash())
        .collect();
    let req = pb::CollectRequest {
        only_keys: want.clone(),
        // Ignored for a follow-up.
        responders: vec!["b".into(), "c".into()],
        // Still honoured: the caller holds the first one in this version.
        held_keys: vec![want[0]],
        held_versions: vec![snapshot[0].version],
        ..Default::default()
    };
    let sel = select_for_collect(&store, &req, &ring_of("b", &["a", "b", "c"]), 3);
    assert!(sel.deferred.is_empty());
    assert_eq!(
        hashes(&sel.groups),
        want[1..]
            .iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>()
    );
}
