//! The streamed merged scrape writes exactly what rendering the merged groups writes; a peer's
//! answer that breaks its promises midway ends the response with an error, never a short valid
//! one, and one that breaks them before its heads end is left out.

use std::time::Duration;

use prost::Message;

use super::super::feed::{Progress, Reader};
use super::*;
use crate::exposition::MetricType;
use crate::store::StoredFamily;
use crate::cluster::gateway::ClusterGateway;
use crate::cluster::rpc::server::ClusterService;
use crate::cluster::testkit::*;
use crate::gateway::Gateway;
use crate::store::family::intern;
use crate::store::key::PackedKey;
use crate::store::{prepare_push, Store, Validation};

fn push(store: &Store, labels: &[(&str, &str)], body: &str, version: u64) {
    let key = GroupKey::new(labels.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    let families =
        crate::exposition::parse_text(body.as_bytes(), NameScheme::Legacy).expect("valid text");
    let p = prepare_push(key, families, true, &Validation::default()).expect("valid push");
    store.push_versioned(p, version as f64, || version).unwrap();
}

const OTHER: &str = "# HELP a other help\na{q=\"1\"} 1\n# TYPE zz gauge\nzz{q=\"1\"} 3\nm{x=\"3\"} 3\nm{x=\"1\"} 1\n";

/// Node a's gateway in a cluster of a, b and c (R = 2) whose stores hold groups in several
/// versions, deleted ones, a pair of colliding keys and families of several shapes; c's
/// service is wrapped by `c`.
async fn three_nodes(c: fn(ClusterService) -> TestPeer) -> ClusterGateway {
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let port = |i: usize| listeners[i].local_addr().unwrap().port();
    let members = [("a", port(0)), ("b", port(1)), ("c", port(2))];
    let (store_a, a) = node("a", &members, 2);
    let (store_b, b) = node("b", &members, 2);
    let (store_c, svc_c) = node("c", &members, 2);
    for g in 0..40 {
        let job = format!("g{g:02}");
        let body = if g % 3 == 0 { OTHER } else { BODY };
        push(&store_b, &[("job", &job)], body, 10);
        push(&store_c, &[("job", &job)], body, 10);
    }
    for g in 40..50 {
        let job = format!("g{g}");
        push(&store_a, &[("job", &job)], BODY, 5);
        push(&store_b, &[("job", &job)], OTHER, 10);
    }
    for g in 50..55 {
        push(&store_a, &[("job", &format!("g{g}"))], OTHER, 20);
    }
    push(&store_c, &[("job", "gone")], BODY, 30);
    push(&store_b, &[("job", "gone")], BODY, 30);
    store_b.delete_versioned(&key("gone"), 40);
    push(&store_b, &[("job", "coll")], "m{x=\"2\"} 2\n", 10);
    // Members whose series interleave (`a` sorts before the grouping labels), on all three.
    push(&store_b, &[("job", "p")], "m{a=\"1\"} 1\nm{a=\"3\"} 3\n", 10);
    push(&store_c, &[("job", "q")], "m{a=\"2\"} 2\nm{a=\"4\"} 4\n", 10);
    push(&store_a, &[("job", "r")], "m{a=\"0\"} 0\nm{a=\"2\"} 2\n", 10);
    push(&store_c, &[("job", "coll"), ("instance", "")], BODY, 10);
    let mut listeners = listeners.into_iter().skip(1);
    serve_on(listeners.next().unwrap(), b);
    serve_on(listeners.next().unwrap(), c(svc_c));
    ClusterGateway::new(a.core.clone())
}

/// The gateway's own families: one joins a group family's name (of the same type), one comes
/// last.
fn own() -> Vec<StoredFamily> {
    [("zz", "own help"), ("zzz_own", "")]
        .into_iter()
        .map(|(n, h)| StoredFamily::gauge(intern(n), intern(h), &[], 1.0))
        .collect()
}

/// What rendering the merged groups (every peer's groups held, then rendered) writes.
async fn rendered_whole(gateway: &ClusterGateway, format: Format) -> Vec<u8> {
    let text_only = matches!(format, Format::Text);
    let groups = gateway
        .core
        .merged_groups(Duration::from_secs(2), text_only)
        .await
        .unwrap();
    let reserved = gateway.core.store.options().reserved.clone();
    let mut out = Vec::new();
    crate::scrape::merged::render_groups(&groups, reserved, &own(), format, None, &mut out);
    out
}

async fn streamed(gateway: &ClusterGateway, format: Format) -> Result<Vec<u8>, String> {
    let mut chunks = gateway
        .render_stream(format, own(), false, None)
        .await
        .map_err(|r| r.0)?;
    let mut body = Vec::new();
    while let Some(c) = chunks.recv().await {
        body.extend_from_slice(&c.map_err(|e| e.to_string())?);
    }
    Ok(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_merged_scrape_writes_what_the_merged_groups_render() {
    let gateway = three_nodes(TestPeer::new).await;
    for format in [Format::Text, Format::Protobuf] {
        let want = rendered_whole(&gateway, format).await;
        let text = String::from_utf8_lossy(&want);
        if format == Format::Text {
            // The view has what the test meant it to have.
            assert!(text.contains("job=\"g49\""), "{text}");
            assert!(text.contains("job=\"g54\""), "{text}");
            assert!(!text.contains("job=\"gone\""), "{text}");
            assert!(text.contains("# HELP zz own help"), "{text}");
            assert!(
                text.contains("m{a=\"2\",instance=\"\",job=\"r\"} 2\nm{a=\"3\",instance=\"\",job=\"p\"} 3\n"),
                "{text}"
            );
            assert!(text.contains("zz{instance=\"\",job=\"g00\",q=\"1\"} 3"), "{text}");
        }
        // Twice: the second render reuses the member orders the first remembered.
        for round in 0..2 {
            let got = streamed(&gateway, format).await.unwrap();
            assert!(
                got == want,
                "{format:?}, round {round}:\n{}\n---- want ----\n{}",
                String::from_utf8_lossy(&got),
                text
            );
        }
        let (whole, _) = gateway.render(format, own()).await.unwrap();
        assert!(whole == want, "{format:?}: Gateway::render differs");
    }
    // This node's groups change between scrapes (a group whose series now sort first, a new
    // one, a family's series replaced): an order remembered for the old members is not used.
    let store = &gateway.core.store;
    push(store, &[("job", "r")], "m{a=\"5\"} 5\n# TYPE zz gauge\nzz{a=\"0\"} 1\n", 50);
    push(store, &[("job", "g54")], "m{a=\"00\"} 0\n", 50);
    push(store, &[("job", "new")], BODY, 50);
    for round in 0..2 {
        let want = rendered_whole(&gateway, Format::Text).await;
        let got = streamed(&gateway, Format::Text).await.unwrap();
        assert!(
            got == want,
            "after a change, round {round}:\n{}\n---- want ----\n{}",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want)
        );
    }
}

/// A peer that answers a `by_family` call group by group, without heads, breaks the protocol
/// before anything is written: its answer is left out (as one that does not decode), and the
/// scrape is served from the other nodes' copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_answering_without_heads_is_left_out() {
    let gateway = three_nodes(groups_only).await;
    let got = String::from_utf8(streamed(&gateway, Format::Text).await.unwrap()).unwrap();
    assert!(got.contains("job=\"g49\""), "b's groups are in: {got}");
    assert!(got.contains("job=\"g05\""), "groups c shares with b are in: {got}");
    assert!(!got.contains("job=\"q\""), "c's answer was taken: {got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_answer_broken_midway_ends_the_scrape_with_an_error() {
    let gateway = three_nodes(damaged).await;
    let got = streamed(&gateway, Format::Text).await;
    let err = got.unwrap_err();
    assert!(err.contains("incomplete"), "{err}");
}

fn reader(heads: usize) -> Reader {
    let keys = (0..heads)
        .map(|i| {
            let k = key(&format!("g{i}"));
            (i as u32, Some((Arc::new(k.clone()), PackedKey::of(&k))))
        })
        .collect();
    Reader {
        peer: "b".into(),
        declared: u64::MAX,
        started: Instant::now(),
        keys,
        names: NameScheme::Legacy,
        deadline: Duration::from_secs(1),
        runtime: tokio::runtime::Handle::current(),
    }
}

/// A run of family `name` with one member for each of `groups` (group g's own series), with
/// its index when `indexed`.
fn run_of(name: &str, groups: &[u32], indexed: bool) -> pb::CollectedFamily {
    let mut members = Vec::new();
    let mut ends = Vec::new();
    for &g in groups {
        let labels = [("job".to_string(), format!("g{g}"))];
        StoredFamily::gauge(intern(name), intern("h"), &labels, 1.0).to_wire(&mut members);
        ends.push(members.len() as u32);
    }
    let index = indexed.then(|| pb::FamilyIndex {
        groups: groups.to_vec(),
        types: vec![MetricType::Gauge as i32 as u32; groups.len()],
        helps: vec![0; groups.len()],
        help_texts: vec!["h".into()],
        empty: vec![false; groups.len()],
    });
    pb::CollectedFamily {
        name: name.into(),
        groups: groups.to_vec(),
        members: members.into(),
        ends,
        index,
    }
}

fn run(name: &str, groups: &[u32]) -> pb::CollectedFamily {
    run_of(name, groups, true)
}

fn chunk(families: Vec<pb::CollectedFamily>) -> pb::CollectChunk {
    pb::CollectChunk {
        families,
        ..Default::default()
    }
}

fn progress(heads: usize) -> Progress {
    Progress {
        listed: vec![0; heads],
        ..Default::default()
    }
}

#[tokio::test]
async fn family_chunks_are_refused_unless_they_follow_their_index() {
    let r = reader(3);
    let mut p = progress(3);
    // A name's index, its members continued into the next chunk, then the next name.
    let mut first = run("a", &[2, 0, 1]);
    let rest = run_of("a", &[1], false);
    first.groups.pop();
    first.ends.pop();
    let ok = r.decode(chunk(vec![first]), &mut p).unwrap();
    assert_eq!(ok[0].members.len(), 2);
    assert_eq!(ok[0].index.as_ref().unwrap().len(), 3);
    let snapshot = |p: &Progress| Progress {
        name: p.name.clone(),
        index: p.index.clone(),
        came: p.came,
        listed: p.listed.clone(),
        names: p.names,
    };
    let before_rest = snapshot(&p);
    r.decode(chunk(vec![rest.clone()]), &mut p).unwrap();
    r.decode(chunk(vec![run("b", &[0]), run("c", &[1, 2])]), &mut snapshot(&p))
        .unwrap();
    let refuse = |c: pb::CollectChunk, from: &Progress, want: &str| {
        let err = r.decode(c, &mut snapshot(from)).unwrap_err();
        assert!(err.contains(want), "{err} (wanted {want:?})");
    };
    refuse(chunk(vec![run("b", &[0])]), &before_rest, "before the last one ended");
    refuse(chunk(vec![run_of("a", &[0], false)]), &before_rest, "out of its index's order");
    refuse(chunk(vec![run("a", &[1])]), &before_rest, "indexed twice");
    refuse(chunk(vec![run_of("a", &[1, 1], false)]), &before_rest, "more members than its index");
    refuse(chunk(vec![run("a", &[0])]), &p, "indexed twice");
    refuse(chunk(vec![run("0", &[0])]), &p, "out of order");
    refuse(chunk(vec![run_of("b", &[0], false)]), &p, "without its index");
    refuse(chunk(vec![run("b", &[1, 1])]), &p, "lists a group twice");
    refuse(chunk(vec![run("b", &[3])]), &p, "without a head");
    let mut unmatched = run("b", &[0, 1]);
    unmatched.ends.pop();
    refuse(chunk(vec![unmatched]), &p, "unmatched ends");
    let mut short_index = run("b", &[0, 1]);
    short_index.index.as_mut().unwrap().empty.pop();
    refuse(chunk(vec![short_index]), &p, "unmatched lengths");
    let mut bad_help = run("b", &[0]);
    bad_help.index.as_mut().unwrap().helps[0] = 1;
    refuse(chunk(vec![bad_help]), &p, "HELP out of its index");
    let mut bad_type = run("b", &[0]);
    bad_type.index.as_mut().unwrap().types[0] = 99;
    refuse(chunk(vec![bad_type]), &p, "unknown type");
    let mut other_type = run("b", &[0]);
    other_type.index.as_mut().unwrap().types[0] = MetricType::Counter as i32 as u32;
    refuse(chunk(vec![other_type]), &p, "other than its index says");
    let mut other_help = run("b", &[0]);
    other_help.index.as_mut().unwrap().help_texts[0] = "g".into();
    refuse(chunk(vec![other_help]), &p, "other than its index says");
    let mut outside = run("b", &[0]);
    outside.ends[0] += 1;
    refuse(chunk(vec![outside]), &p, "outside its message");
    let mut misnamed = run("b", &[0]);
    misnamed.name = "bb".into();
    refuse(chunk(vec![misnamed]), &p, "other than its index says");
    let mut cut = run("b", &[0]);
    cut.members.truncate(cut.members.len() - 2);
    cut.ends[0] -= 2;
    refuse(chunk(vec![cut]), &p, "group");
    // Another group's series in a member: refused like a replica's.
    let mut foreign = run("b", &[1]);
    foreign.groups = vec![0];
    foreign.index.as_mut().unwrap().groups = vec![0];
    refuse(chunk(vec![foreign]), &p, "group");
    let mut with_heads = chunk(vec![run("b", &[0])]);
    with_heads.heads_end = true;
    refuse(with_heads, &p, "carry heads");
}

#[tokio::test]
async fn members_of_copies_the_view_does_not_show_are_skipped() {
    let mut r = reader(3);
    r.keys[1].0 = NOT_SHOWN;
    let got = r.decode(chunk(vec![run("a", &[0, 1, 2])]), &mut progress(3)).unwrap();
    let ranks: Vec<u32> = got[0].members.iter().map(|m| m.0).collect();
    assert_eq!(ranks, vec![0, 2]);
    let shown: Vec<u32> = got[0].index.iter().flatten().map(|e| e.rank).collect();
    assert_eq!(shown, vec![0, 2]);
}

#[test]
fn a_peer_sends_heads_then_families_by_name_in_head_order() {
    let store = Store::new(crate::store::StoreOptions::default());
    push(&store, &[("job", "x")], &format!("{OTHER}n{{a=\"2\"}} 1\n"), 3);
    push(&store, &[("job", "y")], &format!("{BODY}n{{a=\"1\"}} 1\n"), 4);
    let groups = store.snapshot();
    let chunks = super::super::answer::family_chunks(&groups, vec![(key("t"), 9)], vec![(1, 2)], true);
    assert!(chunks[0].heads_end);
    assert_eq!(chunks[0].heads.len(), 2);
    assert_eq!(chunks[0].tombstones.len(), 1);
    assert_eq!(chunks[0].deferred_keys, vec![1]);
    let declared: u64 = chunks[1..].iter().map(|c| c.encoded_len() as u64).sum();
    // A bound, and not far above what came.
    assert!(
        declared <= chunks[0].family_bytes && chunks[0].family_bytes < 2 * declared + 512,
        "declared {}, sent {declared}",
        chunks[0].family_bytes
    );
    let names: Vec<(&str, usize, bool)> = chunks[1..]
        .iter()
        .flat_map(|c| &c.families)
        .map(|f| (f.name.as_str(), f.groups.len(), f.index.is_some()))
        .collect();
    assert_eq!(
        names,
        vec![("a", 2, true), ("b", 1, true), ("m", 1, true), ("n", 2, true), ("zz", 1, true)]
    );
    // Within a name, members by first series, not by head or key: x's `n` (`a="2"`) after
    // y's (`a="1"`), though x comes first in key order.
    let m = chunks[1..]
        .iter()
        .flat_map(|c| &c.families)
        .find(|f| f.name == "n")
        .unwrap();
    let job = |gi: u32| groups[gi as usize].key.get("job").unwrap().to_owned();
    assert_eq!(vec![job(m.groups[0]), job(m.groups[1])], vec!["y", "x"]);
}

type Edits = Vec<crate::testsupport::Edit>;

fn edits() -> impl proptest::strategy::Strategy<Value = Edits> {
    proptest::collection::vec((0usize..4096, proptest::prelude::any::<u8>(), 0u8..4), 1..6)
}

/// A peer's whole family-by-family answer for two groups: its heads chunk and family chunks,
/// encoded.
fn answer_bytes() -> Vec<Vec<u8>> {
    let store = Store::new(crate::store::StoreOptions::default());
    push(&store, &[("job", "g0")], OTHER, 3);
    push(&store, &[("job", "g1")], BODY, 4);
    let groups = store.snapshot();
    super::super::answer::family_chunks(&groups, vec![(key("t"), 9)], vec![(1, 2)], false)
        .iter()
        .map(|c| c.encode_to_vec())
        .collect()
}

proptest::proptest! {
    /// A peer's answer, edited: its heads decode or are refused, and its families, read by the
    /// reader for those heads, decode or are refused; never a panic.
    #[test]
    fn edited_family_answers_never_panic(edits in edits(), which in 0usize..8) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let _entered = runtime.enter();
        let mut chunks = answer_bytes();
        let i = which % chunks.len();
        chunks[i] = crate::testsupport::mutate(&chunks[i], &edits);
        let Ok(first) = pb::CollectChunk::decode(chunks[0].as_slice()) else {
            return Ok(());
        };
        let Ok((heads, _, _)) = decode_heads(vec![first], NameScheme::Legacy, u64::MAX) else {
            return Ok(());
        };
        let r = Reader {
            keys: heads
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    let key = h.as_ref().map(|h| (h.key.clone(), PackedKey::of(&h.key)));
                    (i as u32, key)
                })
                .collect(),
            ..reader(0)
        };
        let mut p = progress(heads.len());
        for c in &chunks[1..] {
            if let Ok(c) = pb::CollectChunk::decode(c.as_slice()) {
                if r.decode(c, &mut p).is_err() {
                    break;
                }
            }
        }
    }
}
