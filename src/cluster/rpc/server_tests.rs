//! The `Cluster` service: forwarded writes, the replicas that travel back with their answers,
//! and batches answered item by item.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tonic::Request;

use super::expired;
use crate::cluster::rpc::pb::cluster_server::Cluster;
use crate::cluster::rpc::{pb, wire};
use crate::cluster::testkit::*;
use crate::cluster::write::op::{WriteAnswer, WriteOp};
use crate::cluster::write::route::{forward_deadline_ms, forward_message};
use crate::exposition::parse_text;
use crate::exposition::NameScheme;
use crate::store::{prepare_push, Store, StoreOptions, StoredFamily, Validation};

#[tokio::test]
async fn a_replica_for_the_forwarding_node_travels_back_with_the_answer() {
    let (store, svc) = service_with(&[("a", 1), ("b", closed_port())], 2);
    let mut w = primary_replicates(forwarded("j", BODY));
    w.from = "b".into();
    // A sender that cannot hold its own families (a POST).
    w.own_replica = false;
    let results = forward_all(&svc, vec![w]).await;
    // "b" is the only other node: no call was made to it (its port is closed), it counts
    // as a holder and gets the group's state in the answer.
    assert!(results[0].own_replica.is_none());
    assert_eq!(results[0].reply.as_ref().unwrap().status, 200);
    let replica = results[0].replica.as_ref().expect("replica returned");
    let held = store.group(&key("j")).unwrap();
    assert_eq!(replica.version, held.version);
    let g = wire::group_from_bytes(&replica.group, NameScheme::Legacy).unwrap();
    assert_eq!(g.version, held.version);
    assert_eq!(g.families.len(), held.families.len());
    // The forwarding node holds it like any replica.
    let (sender_store, sender) = service(1);
    let answer = sender
        .core
        .hold_returned(&op_j(), Some(replica.clone()), None, WriteAnswer::ok(200))
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(sender_store.group_version(&key("j")), Some(held.version));
}

#[tokio::test]
async fn a_put_replica_for_the_forwarding_node_is_its_own_families_with_the_primary_stamp() {
    let (store, svc) = service_with(&[("a", 1), ("b", closed_port())], 2);
    let mut w = primary_replicates(forwarded("j", BODY));
    assert!(w.own_replica, "a PUT asks to hold its own families");
    w.from = "b".into();
    let results = forward_all(&svc, vec![w]).await;
    assert_eq!(results[0].reply.as_ref().unwrap().status, 200);
    assert!(results[0].replica.is_none(), "no group state travels back");
    let own = results[0].own_replica.expect("the PUT's stamp returned");
    let held = store.group(&key("j")).unwrap();
    assert_eq!(own.version, held.version);
    assert_eq!(own.push_time.to_bits(), held.push_time.to_bits());
    assert_eq!(own.failure_time.to_bits(), held.failure_time.to_bits());
    // The sender holds exactly what the primary holds.
    let (sender_store, sender) = service(1);
    let op = WriteOp::Push(prepared("j", BODY));
    let answer = sender
        .core
        .hold_returned(&op, None, Some(own), WriteAnswer::ok(200))
        .await;
    assert_eq!(answer.status, 200);
    let copy = sender_store.group(&key("j")).unwrap();
    assert_eq!(copy.version, held.version);
    assert_eq!(copy.push_time.to_bits(), held.push_time.to_bits());
    assert_eq!(text_of(&sender_store, "j"), text_of(&store, "j"));
    let scrape = |s: &Store| {
        let mut out = Vec::new();
        s.render(crate::store::render::Format::Text, &[], &mut out);
        String::from_utf8(out).unwrap()
    };
    assert_eq!(scrape(&sender_store), scrape(&store));
    // A stamp for something that is not a PUT is not held: the success becomes a 503.
    let post = WriteOp::Delete(key("j"));
    let answer = sender
        .core
        .hold_returned(&post, None, Some(own), WriteAnswer::ok(202))
        .await;
    assert_eq!(answer.status, 503);
}

#[tokio::test]
async fn a_post_gets_the_group_state_even_when_its_sender_asks_for_its_own_copy() {
    let (_store, svc) = service_with(&[("a", 1), ("b", closed_port())], 2);
    let families = parse_text(BODY.as_bytes(), NameScheme::Legacy).unwrap();
    let post = prepare_push(key("j"), families, false, &Validation::default()).unwrap();
    let mut w = primary_replicates(forward_message(&WriteOp::Push(post), "b").0);
    assert!(!w.own_replica);
    w.deadline_unix_ms = forward_deadline_ms(Duration::from_secs(5));
    // A sender claiming it could: a POST merges into the group, so only its state will do.
    w.own_replica = true;
    let results = forward_all(&svc, vec![w]).await;
    assert_eq!(results[0].reply.as_ref().unwrap().status, 200);
    assert!(results[0].own_replica.is_none());
    assert!(results[0].replica.is_some());
}

#[tokio::test]
async fn without_a_return_trip_the_replica_is_sent_and_its_failure_counts() {
    let (_store, svc) = service_with(&[("a", 1), ("b", closed_port())], 2);
    // No sender id, then a sender that is not a replica candidate.
    for from in ["", "c"] {
        let mut w = primary_replicates(forwarded("j", BODY));
        w.from = from.into();
        let results = forward_all(&svc, vec![w]).await;
        assert!(results[0].replica.is_none());
        // "b" could not be reached: only one of the two holders the write needs.
        assert_eq!(
            results[0].reply.as_ref().unwrap().status,
            503,
            "from {from:?}"
        );
    }
}

#[tokio::test]
async fn a_stand_in_sender_gets_its_replica_by_a_call_not_with_the_answer() {
    let (_store, svc) = service_with(&[("a", 1), ("b", closed_port()), ("c", closed_port())], 2);
    let ring = svc.core.ring();
    // A group owned by "a" and one other node; the third node is the outsider.
    let (job, other_owner, outsider) = (0..)
        .find_map(|i| {
            let job = format!("j{i}");
            let owners: Vec<&str> = ring
                .owners(key(&job).stable_hash(), 2)
                .iter()
                .map(|m| m.id.as_str())
                .collect();
            let other = owners.iter().find(|&&id| id != "a")?.to_string();
            let outsider = ["b", "c"].into_iter().find(|id| !owners.contains(id))?;
            owners
                .contains(&"a")
                .then(|| (job, other, outsider.to_owned()))
        })
        .unwrap();
    // The other owner is unreachable, so the outsider stands in for it.
    let mut w = primary_replicates(forwarded(&job, BODY));
    w.from = outsider;
    w.unreachable = vec![other_owner];
    let results = forward_all(&svc, vec![w]).await;
    assert!(results[0].replica.is_none());
    // The call to the stand-in failed (its port is closed): one holder of two.
    assert_eq!(results[0].reply.as_ref().unwrap().status, 503);
}

#[tokio::test]
async fn forwarded_families_are_stored_as_the_receiving_node_prepared_them() {
    let (store, svc) = service(1);
    let direct = Store::new(StoreOptions::default());
    direct.push(prepared("j", BODY), 1.0).unwrap();
    let req = pb::ForwardRequest {
        writes: vec![forwarded("j", BODY)],
        replicas: Vec::new(),
    };
    let reply = svc.forward_batch(req).await.unwrap();
    assert_eq!(reply.results.len(), 1);
    assert_eq!(reply.results[0].error_code, 0);
    assert_eq!(reply.results[0].reply.as_ref().unwrap().status, 200);
    assert_eq!(text_of(&store, "j"), text_of(&direct, "j"));
    let (a, b) = (
        store.group(&key("j")).unwrap(),
        direct.group(&key("j")).unwrap(),
    );
    for ((fa, _), (fb, _)) in a.families.iter().zip(b.families.iter()) {
        assert_eq!(fa.proto_metrics(), fb.proto_metrics());
        assert!(fa.same_series(fb));
    }
}

#[tokio::test]
async fn a_forward_batch_answers_every_item_on_its_own_and_bad_items_change_nothing() {
    let (store, svc) = service(1);
    let good = forwarded("good", BODY);
    let mut truncated = forwarded("truncated", BODY);
    let n = truncated.families[0].len();
    truncated.families[0].truncate(n - 3);
    let mut expired_item = forwarded("late", BODY);
    expired_item.deadline_unix_ms = 1;
    let mut no_job = forwarded("nojob", BODY);
    no_job.key.clear();
    let mut unsorted = forwarded("unsorted", BODY);
    unsorted.families.reverse();
    let mut twice = forwarded("twice", BODY);
    twice.families.push(twice.families[0].clone());
    let mut own_timing = forwarded("timing", BODY);
    let timing = StoredFamily::gauge(
        "push_time_seconds".into(),
        "h".into(),
        &[("job".into(), "timing".into())],
        1.0,
    );
    let mut raw = Vec::new();
    timing.to_wire(&mut raw);
    own_timing.families.push(raw.into());
    let mut with_timestamps = forwarded("ts", "m 1 1000\n");
    with_timestamps.has_timestamps = true;
    let refused = pb::ForwardedWrite {
        key: wire::key_to_pb(&key("refused")),
        refused: "bad body".into(),
        ..Default::default()
    };
    let req = pb::ForwardRequest {
        writes: vec![
            good,
            truncated,
            expired_item,
            no_job,
            unsorted,
            twice,
            own_timing,
            with_timestamps,
            refused,
        ],
        replicas: Vec::new(),
    };
    let results = svc.forward_batch(req).await.unwrap().results;
    let codes: Vec<u32> = results.iter().map(|r| r.error_code).collect();
    let invalid = tonic::Code::InvalidArgument as u32;
    assert_eq!(
        codes,
        vec![
            0,
            invalid,
            tonic::Code::DeadlineExceeded as u32,
            invalid,
            invalid,
            invalid,
            invalid,
            0,
            0
        ]
    );
    assert_eq!(results[0].reply.as_ref().unwrap().status, 200);
    // A push with timestamps is refused like upstream, its failure recorded on the group.
    assert_eq!(results[7].reply.as_ref().unwrap().status, 400);
    assert_eq!(results[8].reply.as_ref().unwrap().status, 400);
    assert_eq!(results[8].reply.as_ref().unwrap().message, "bad body");
    assert!(store.group(&key("good")).is_some());
    for job in ["truncated", "late", "unsorted", "twice", "timing"] {
        assert!(store.group(&key(job)).is_none(), "{job} stored");
    }
    assert!(!store.group(&key("ts")).unwrap().last_push_successful);
    assert!(store.group(&key("refused")).unwrap().failure_time > 0.0);
    // A delete in a later batch.
    let del = pb::ForwardedWrite {
        key: wire::key_to_pb(&key("good")),
        delete: true,
        ..Default::default()
    };
    let results = forward_all(&svc, vec![del]).await;
    assert_eq!(results[0].reply.as_ref().unwrap().status, 202);
    assert!(store.group(&key("good")).is_none());
    assert!(store.tombstone(&key("good")).is_some());
}

/// Every one-byte damage to a forwarded family is either refused, leaving the group as it was,
/// or accepted into a group whose whole render parses back as exposition.
#[tokio::test]
async fn damaged_forwarded_families_are_refused_or_render_as_valid_exposition() {
    let (store, svc) = service(1);
    let w = forwarded("j", BODY);
    let fam = w.families[0].clone();
    let reserved = crate::telemetry::reserved_names();
    let (mut refused, mut accepted) = (0, 0);
    for i in 0..fam.len() {
        for flip in [0x01u8, 0x80, 0xFF] {
            let mut bad = w.clone();
            let mut damaged = fam.to_vec();
            damaged[i] ^= flip;
            bad.families[0] = damaged.into();
            let before = store.group(&key("j")).map(|g| g.version);
            let results = forward_all(&svc, vec![bad]).await;
            assert_eq!(results.len(), 1);
            let ok = results[0]
                .reply
                .as_ref()
                .is_some_and(|r| (200..300).contains(&r.status));
            if !ok {
                refused += 1;
                let after = store.group(&key("j")).map(|g| g.version);
                assert_eq!(before, after, "a refused write changed the group (byte {i})");
                continue;
            }
            accepted += 1;
            let mut text = Vec::new();
            crate::store::render::render_snapshots(
                &store.snapshot(),
                &reserved,
                &[],
                crate::store::render::Format::Text,
                None,
                usize::MAX,
                &mut |c| text.extend_from_slice(&c),
            );
            assert!(
                parse_text(&text, NameScheme::Legacy).is_ok(),
                "byte {i} ^ {flip:#x} was accepted into a render that does not parse:\n{}",
                String::from_utf8_lossy(&text)
            );
        }
    }
    // Most damage is caught; some (a digit of a value, a label value's letter) is a valid
    // family still.
    assert!(refused > 0 && accepted > 0, "{refused} refused, {accepted} accepted");
}

/// A primary asked to leave the replication to the sender answers without calling any
/// node: a batch then waits on nothing but the primary's store, so replicas may
/// share its queue and call (three nodes forwarding to each other in a ring cannot wait on
/// each other). Here the other owner never answers; had the primary called it, the write
/// would have waited for it and failed.
#[tokio::test]
async fn a_forward_left_to_its_sender_is_answered_without_calling_any_node() {
    let (port, accepted) = counting_peer().await;
    let (store, svc) = service_with(&[("a", 1), ("b", port)], 2);
    for (job, put) in [("put", true), ("post", false)] {
        let families = parse_text(BODY.as_bytes(), NameScheme::Legacy).unwrap();
        let p = prepare_push(key(job), families, put, &Validation::default()).unwrap();
        let mut w = forward_message(&WriteOp::Push(p), "c").0;
        w.deadline_unix_ms = forward_deadline_ms(Duration::from_secs(5));
        assert!(w.sender_replicates);
        let r = &forward_all(&svc, vec![w]).await[0];
        assert_eq!(r.reply.as_ref().unwrap().status, 200);
        assert!(r.left_to_sender);
        let held = store.group(&key(job)).unwrap();
        if put {
            // A PUT: the stamp, for the sender to send its own prepared families.
            assert!(r.replica.is_none());
            assert_eq!(r.own_replica.unwrap().version, held.version);
        } else {
            // A POST merged into the group: its state.
            assert!(r.own_replica.is_none());
            assert_eq!(r.replica.as_ref().unwrap().version, held.version);
        }
    }
    // A delete: its tombstone.
    let del = pb::ForwardedWrite {
        key: wire::key_to_pb(&key("put")),
        delete: true,
        sender_replicates: true,
        deadline_unix_ms: forward_deadline_ms(Duration::from_secs(5)),
        ..Default::default()
    };
    let r = &forward_all(&svc, vec![del]).await[0];
    assert_eq!(r.reply.as_ref().unwrap().status, 202);
    assert!(r.left_to_sender);
    assert!(!r.replica.as_ref().unwrap().tombstone_key.is_empty());
    assert!(store.group(&key("put")).is_none());
    tokio::task::yield_now().await;
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "no node was called");
}

/// Replicas inside a batch with writes (`ForwardRequest.replicas`) are applied and answered
/// item by item, beside the writes.
#[tokio::test]
async fn replicas_inside_a_forward_call_are_answered_item_by_item() {
    let (store, svc) = service(1);
    let mut broken = replica_of("broken", 7);
    broken.group.truncate(broken.group.len() / 2);
    let req = pb::ForwardRequest {
        writes: vec![forwarded("w", BODY)],
        replicas: vec![replica_of("r", 5), replica_of("r", 4), broken],
    };
    let reply = svc.forward_batch(req).await.unwrap();
    assert_eq!(reply.results.len(), 1);
    assert_eq!(reply.results[0].reply.as_ref().unwrap().status, 200);
    let r = &reply.replica_results;
    assert_eq!(r.len(), 3);
    assert_eq!((r[0].error_code, r[0].applied), (0, true));
    assert_eq!((r[1].error_code, r[1].applied), (0, false));
    assert_eq!(r[2].error_code, tonic::Code::InvalidArgument as u32);
    assert_eq!(store.group_version(&key("r")), Some(5));
    assert!(store.group(&key("w")).is_some());
    assert!(store.group(&key("broken")).is_none());
}

#[test]
fn forwarded_writes_past_their_deadline_are_refused() {
    assert!(expired(0).is_ok());
    assert!(expired(forward_deadline_ms(Duration::from_secs(5))).is_ok());
    let past = forward_deadline_ms(Duration::ZERO) - 1;
    let err = expired(past).unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded);
}

/// A batched call carrying more items than `--cluster.max-batch-items` is refused whole:
/// none of its writes or replicas is applied.
#[tokio::test]
async fn a_batch_over_the_item_limit_is_refused_whole() {
    let bounds = crate::cluster::ClusterBounds {
        max_batch_items: 3,
        ..Default::default()
    };
    let (store, svc) = node_with("a", &[("a", 1)], 1, bounds);
    let req = pb::ForwardRequest {
        writes: vec![forwarded("w1", BODY), forwarded("w2", BODY)],
        replicas: vec![replica_of("r1", 5), replica_of("r2", 5)],
    };
    let refused = svc.forward_batch(req).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert!(refused.message().contains("--cluster.max-batch-items"));
    let replicas = (0..4).map(|i| replica_of(&format!("b{i}"), 5)).collect();
    let refused = svc
        .forward_batch(pb::ForwardRequest {
            writes: Vec::new(),
            replicas,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert_eq!(store.group_count(), 0, "nothing applied");
    // At the limit, the batch is applied.
    let replicas = (0..3).map(|i| replica_of(&format!("b{i}"), 5)).collect();
    let reply = svc
        .forward_batch(pb::ForwardRequest {
            writes: Vec::new(),
            replicas,
        })
        .await
        .unwrap();
    assert!(reply.replica_results.iter().all(|r| r.applied));
    assert_eq!(store.group_count(), 3);
}

/// Stand-in copies are counted as they are taken: a burst stops at `--cluster.max-hints`
/// without waiting for a reconciliation round; copies of groups this node owns or already
/// holds, and stale copies, take no room.
#[tokio::test]
async fn hints_are_counted_when_taken() {
    // "b" owns every group (R = 1 of a and b, with a's ring placing them on b or a): only the
    // groups a does not own are hints.
    let (store, svc) = service_with(&[("a", 1), ("b", closed_port())], 1);
    svc.core.set_max_hints(3);
    let ring = svc.core.ring();
    let owned_by = |job: &str| ring.owners(key(job).stable_hash(), 1)[0].id.to_string();
    let foreign: Vec<String> = (0..)
        .map(|i| format!("h{i}"))
        .filter(|j| owned_by(j) == "b")
        .take(5)
        .collect();
    let own = (0..)
        .map(|i| format!("o{i}"))
        .find(|j| owned_by(j) == "a")
        .unwrap();
    let take = |job: &str, version| svc.core.take_replica(replica_of(job, version));
    for job in &foreign[..3] {
        assert!(take(job, 5).await.unwrap());
    }
    // A newer copy of a hint held takes no more room; a stale one is not applied.
    assert!(take(&foreign[0], 6).await.unwrap());
    assert!(!take(&foreign[1], 1).await.unwrap());
    let refused = take(&foreign[3], 5).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert!(store.group(&key(&foreign[3])).is_none());
    // A copy of a group this node owns is no hint.
    assert!(take(&own, 5).await.unwrap());
    assert_eq!(svc.core.hints.load(Ordering::Relaxed), 3);
    // A tombstone for a group not owned is a hint too.
    let mut tomb = replica_of(&foreign[4], 9);
    tomb.tombstone_key = wire::key_to_pb(&key(&foreign[4]));
    tomb.group = Default::default();
    let refused = svc.core.take_replica(tomb).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert_eq!(store.tombstone(&key(&foreign[4])), None);
}

/// Every request a peer can send, encoded as a real peer encodes it, one of them edited and
/// sent to a one-node cluster with a store of its own: answered or refused, never a panic, and
/// the store still renders.
mod never_panic {
    use super::*;
    use prost::Message;

    fn valid_messages() -> Vec<(&'static str, Vec<u8>)> {
        let (store, _) = service(1);
        let op = prepared("g", BODY);
        store.push_versioned(op, 1.0, || 7).unwrap();
        store.delete_versioned(&key("gone"), 9);
        let g = store.group(&key("g")).unwrap();
        let replica = pb::ReplicateRequest {
            group: wire::group_to_bytes(&g).into(),
            tombstone_key: Vec::new(),
            version: g.version,
        };
        let tombstone = pb::ReplicateRequest {
            group: Default::default(),
            tombstone_key: wire::key_to_pb(&key("gone")),
            version: 9,
        };
        let mut body_write = forwarded("b", BODY);
        body_write.families.clear();
        body_write.body = Some(BODY.as_bytes().to_vec().into());
        let forward = pb::ForwardRequest {
            writes: vec![
                forwarded("j", BODY),
                primary_replicates(forwarded("k", BODY)),
                body_write,
            ],
            replicas: vec![replica.clone(), tombstone.clone()],
        };
        let sync = pb::SyncRequest {
            from: "b".into(),
            entries: vec![pb::SyncEntry {
                key: wire::key_to_pb(&key("g")),
                version: 3,
                tombstone: false,
                digest: 3,
            }],
            want_owned: true,
            wipe_watermark: 0,
            summary: Vec::new(),
        };
        let chunks =
            crate::cluster::collect_chunks(&[g], vec![(key("gone"), 9)], vec![(1, 2)], false);
        vec![
            ("forward", forward.encode_to_vec()),
            (
                "batch",
                pb::ForwardRequest {
                    writes: Vec::new(),
                    replicas: vec![replica, tombstone],
                }
                .encode_to_vec(),
            ),
            ("sync", sync.encode_to_vec()),
            (
                "collect",
                pb::CollectRequest {
                    held_keys: vec![1],
                    held_versions: vec![2],
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            ("wipe", pb::WipeRequest { version: 5 }.encode_to_vec()),
            ("chunk", chunks[0].encode_to_vec()),
        ]
    }

    async fn send(kind: &str, b: &[u8]) {
        let (store, svc) = service(1);
        store
            .push_versioned(prepared("held", BODY), 1.0, || 4)
            .unwrap();
        match kind {
            "forward" => {
                if let Ok(req) = pb::ForwardRequest::decode(b) {
                    let n = req.writes.len();
                    let reply = svc.forward_batch(req).await.unwrap();
                    assert_eq!(reply.results.len(), n);
                }
            }
            "batch" => {
                if let Ok(req) = pb::ForwardRequest::decode(b) {
                    let n = req.replicas.len();
                    let req = pb::ForwardRequest {
                        writes: Vec::new(),
                        replicas: req.replicas,
                    };
                    let reply = svc.forward_batch(req).await.unwrap();
                    assert_eq!(reply.replica_results.len(), n);
                }
            }
            "sync" => {
                if let Ok(req) = pb::SyncRequest::decode(b) {
                    let _ = svc.sync(Request::new(req)).await;
                }
            }
            "collect" => {
                if let Ok(req) = pb::CollectRequest::decode(b) {
                    let _ = svc.collect(Request::new(req)).await;
                }
            }
            "wipe" => {
                if let Ok(req) = pb::WipeRequest::decode(b) {
                    let _ = svc.wipe(Request::new(req)).await;
                }
            }
            _ => {
                if let Ok(chunk) = pb::CollectChunk::decode(b) {
                    if let Ok(c) = crate::cluster::decode_chunks(vec![chunk], NameScheme::Legacy, u64::MAX) {
                        for (k, v) in c.tombstones {
                            store.delete_versioned(&k, v);
                        }
                        for g in c.groups {
                            store.apply_replica(g);
                        }
                    }
                }
            }
        }
        for format in [
            crate::store::render::Format::Text,
            crate::store::render::Format::Protobuf,
        ] {
            store.render(format, &[], &mut Vec::new());
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(192))]
        #[test]
        fn peer_requests_never_panic(
            which in 0usize..6,
            edits in proptest::collection::vec((0usize..4096, proptest::prelude::any::<u8>(), 0u8..4), 0..5),
        ) {
            let (kind, valid) = valid_messages().swap_remove(which);
            let b = crate::testsupport::mutate(&valid, &edits);
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(send(kind, &b));
        }
    }
}

#[tokio::test]
async fn a_forwarded_ttl_is_kept_and_a_bad_one_refused_without_storing_anything() {
    let (store, svc) = service(1);
    let mut good = forwarded("ttl", BODY);
    good.ttl = Some(90.0);
    let mut raw = forwarded("raw", BODY);
    raw.families.clear();
    raw.body = Some(BODY.as_bytes().to_vec().into());
    raw.ttl = Some(30.0);
    let bad: Vec<pb::ForwardedWrite> = [-1.0, f64::NAN, f64::INFINITY, 1e12]
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let mut w = forwarded(&format!("bad{i}"), BODY);
            w.ttl = Some(t);
            w
        })
        .collect();
    let results = forward_all(&svc, [vec![good, raw], bad].concat()).await;
    let codes: Vec<u32> = results.iter().map(|r| r.error_code).collect();
    let invalid = tonic::Code::InvalidArgument as u32;
    assert_eq!(codes, [0, 0, invalid, invalid, invalid, invalid]);
    let held = store.group(&key("ttl")).unwrap();
    assert_eq!(held.expires_at(), Some(held.push_time + 90.0));
    let held = store.group(&key("raw")).unwrap();
    assert_eq!(held.expires_at(), Some(held.push_time + 30.0));
    assert_eq!(store.group_count(), 2, "no refused write stored anything");
}

/// Aggregating pushes from a peer are checked like a client's: one without a body, or with an
/// idempotency key a client could not send, is refused unapplied; a body that does not parse is
/// 400 and adds nothing; a good one is added once, its retry with the same key not again.
#[tokio::test]
async fn forwarded_aggregating_pushes_are_checked_like_a_clients() {
    let (store, svc) = service(1);
    let aggregate = |body: Option<&str>, idem: Option<String>| pb::ForwardedWrite {
        key: wire::key_to_pb(&key("agg")),
        body: body.map(|b| bytes::Bytes::copy_from_slice(b.as_bytes())),
        replace_all: true,
        aggregate: true,
        idempotency_key: idem,
        deadline_unix_ms: forward_deadline_ms(Duration::from_secs(5)),
        ..Default::default()
    };
    let good = "# TYPE c counter\nc 1\n";
    let writes = vec![
        aggregate(None, None),
        aggregate(Some(good), Some("x".repeat(257))),
        aggregate(Some(good), Some("bad key".into())),
        aggregate(Some("c{"), None),
        aggregate(Some(good), Some("k1".into())),
        aggregate(Some(good), Some("k1".into())),
    ];
    let results = forward_all(&svc, writes).await;
    let invalid = tonic::Code::InvalidArgument as u32;
    let codes: Vec<u32> = results.iter().map(|r| r.error_code).collect();
    assert_eq!(codes, vec![invalid, invalid, invalid, 0, 0, 0]);
    assert_eq!(results[3].reply.as_ref().unwrap().status, 400);
    assert_eq!(results[4].reply.as_ref().unwrap().status, 200);
    assert_eq!(results[5].reply.as_ref().unwrap().status, 200);
    let text = text_of(&store, "agg");
    assert!(text.contains("c{instance=\"\",job=\"agg\"} 1\n"), "{text}");
}

/// An aggregating push whose forwarded batch is dropped while its copy is under way (it ran out
/// of `--cluster.grpc-timeout`, or its call was reset, as when a partition cut off the sender or
/// the other owner) is still
/// taken back once too few nodes took it: it must not stay counted on this node alone while its
/// client, answered 503, retries it elsewhere. Until then a retry with its key is refused, not
/// acknowledged as a repeat of a push that may yet be taken back.
#[tokio::test]
async fn an_aggregating_push_whose_call_was_dropped_is_still_taken_back() {
    let silent = silent_peer().await;
    let (store, svc) = service_with(&[("a", 1), ("b", silent)], 2);
    let push = || pb::ForwardedWrite {
        key: wire::key_to_pb(&key("agg")),
        body: Some(bytes::Bytes::from_static(b"# TYPE c counter\nc 1\n")),
        replace_all: true,
        aggregate: true,
        idempotency_key: Some("k1".into()),
        deadline_unix_ms: forward_deadline_ms(Duration::from_secs(5)),
        ..Default::default()
    };
    let call = forward_all(&svc, vec![push()]);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), call)
            .await
            .is_err(),
        "the other owner never answers: the call is still waiting for it when dropped"
    );
    let counted = |v: &str| text_of(&store, "agg").contains(&format!("c{{instance=\"\",job=\"agg\"}} {v}\n"));
    assert!(counted("1"), "added, its copy under way");
    let retry = &forward_all(&svc, vec![push()]).await[0];
    let reply = retry.reply.as_ref().unwrap();
    assert_eq!(reply.status, 503, "{}", reply.message);
    assert!(reply.message.contains("Idempotency-Key"), "{}", reply.message);
    // The copy to the silent owner fails at the peer timeout (2 s): the push is taken back.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !counted("0") {
        assert!(
            std::time::Instant::now() < deadline,
            "the push stayed counted on this node alone: {}",
            text_of(&store, "agg")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
