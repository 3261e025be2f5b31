//! Merging a scrape's answers: the newest version of each group wins (a newer tombstone hides
//! it), and a group several peers sent in the same version is decoded once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::task::JoinSet;

use super::super::core::{refuse_decoded, refuse_peer};
use super::super::events::PeerRefusal;
use super::super::rpc::{pb, wire};
use crate::exposition::NameScheme;
use crate::store::{GroupKey, GroupSnapshot};

/// The merged view being built: the newest version of each group, `None` for a tombstone.
pub(crate) type Newest =
    HashMap<Arc<GroupKey>, (u64, Option<GroupSnapshot>), foldhash::fast::RandomState>;

/// Keeps the newest of what is in `newest` and `groups`/`tombstones` (a tombstone hides a group
/// of the same or an older version; of two equal versions the group already there stays).
pub(crate) fn merge_newest(
    newest: &mut Newest,
    groups: Vec<GroupSnapshot>,
    tombstones: Vec<(GroupKey, u64)>,
) {
    for (k, v) in tombstones {
        let k = Arc::new(k);
        match newest.get(&k) {
            Some((cur, _)) if *cur > v => {}
            _ => {
                newest.insert(k, (v, None));
            }
        }
    }
    for g in groups {
        match newest.get(&g.key) {
            Some((cur, _)) if *cur >= g.version => {}
            _ => {
                newest.insert(g.key.clone(), (g.version, Some(g)));
            }
        }
    }
}

/// Decodes the peers' answers into `newest`, one copy of each group: a group that a peer with
/// another view of the ring sent too is set aside, and decoded after all if an answer turns out
/// undecodable (the merge keeps one).
pub(crate) async fn merge_answers(
    newest: &mut Newest,
    mut answers: Vec<(String, Vec<pb::CollectChunk>)>,
    names: NameScheme,
    newest_allowed: u64,
) {
    let mut raw: Vec<Vec<pb::CollectChunk>> =
        answers.iter_mut().map(|(_, c)| std::mem::take(c)).collect();
    let spares = drop_repeated_groups(&mut raw);
    let ids: Vec<String> = answers.into_iter().map(|(id, _)| id).collect();
    if merge_decoded(
        newest,
        spawn_decoding(ids.iter().cloned().zip(raw), names, newest_allowed),
    )
    .await
    {
        let spares = ids.into_iter().zip(spares).map(|(id, s)| (id, vec![s]));
        merge_decoded(newest, spawn_decoding(spares, names, newest_allowed)).await;
    }
}

/// Decodes each peer's answer on the blocking pool, in parallel.
pub(crate) fn spawn_decoding(
    answers: impl IntoIterator<Item = (String, Vec<pb::CollectChunk>)>,
    names: NameScheme,
    newest_allowed: u64,
) -> JoinSet<Result<Collected, ()>> {
    let mut decoding = JoinSet::new();
    for (id, chunks) in answers {
        decoding.spawn_blocking(move || {
            decode_chunks(chunks, names, newest_allowed).map_err(|e| {
                tracing::debug!(peer = %id, err = %e, "collect answer undecodable; its groups come from replicas");
            })
        });
    }
    decoding
}

/// Merges every decoded answer into `newest`; true when one could not be decoded (none of its
/// groups is used).
pub(crate) async fn merge_decoded(
    newest: &mut Newest,
    mut decoding: JoinSet<Result<Collected, ()>>,
) -> bool {
    let mut failed = false;
    while let Some(done) = decoding.join_next().await {
        match done {
            Ok(Ok(c)) => merge_newest(newest, c.groups, c.tombstones),
            _ => failed = true,
        }
    }
    failed
}

/// Shared by the server and the gateway: what a collect returned.
pub struct Collected {
    pub groups: Vec<GroupSnapshot>,
    pub tombstones: Vec<(GroupKey, u64)>,
}

/// Decodes collect chunks for a merged view (on the blocking pool: this validates every
/// family). The groups' families are read in place (`group_in_bytes`): they keep the chunks'
/// buffers alive until the view is dropped, and are not copied. A group or tombstone dated
/// after `newest_allowed` (the clock skew a peer is allowed) is left out and counted: it would
/// hide every later write to its group from the merged view.
pub fn decode_chunks(
    chunks: Vec<pb::CollectChunk>,
    names: NameScheme,
    newest_allowed: u64,
) -> Result<Collected, String> {
    let mut out = Collected {
        groups: Vec::new(),
        tombstones: Vec::new(),
    };
    let future = |what: &str, version: u64| {
        let future = version > newest_allowed;
        if future {
            refuse_peer(
                PeerRefusal::FutureVersion,
                format!("collected {what} dated beyond --cluster.max-clock-skew; left out"),
            );
        }
        future
    };
    for c in chunks {
        for g in c.groups {
            let g = wire::group_in_bytes(&g, names).map_err(|e| {
                let status = refuse_decoded(e);
                status.message().to_owned()
            })?;
            if !future("group", g.version) {
                out.groups.push(g);
            }
        }
        for t in c.tombstones {
            let key = wire::key_from_pb(t.key, names)
                .map_err(|e| refuse_decoded(e).message().to_owned())?;
            if !future("tombstone", t.version) {
                out.tombstones.push((key, t.version));
            }
        }
    }
    Ok(out)
}

/// Moves out of `answers` (one list of chunks per peer) the groups that an earlier chunk, of
/// this or an earlier peer's answer, already carries in the same version: with replication,
/// every group the collecting node lacks comes from each of its other owners, and decoding one
/// copy is enough. Only chunks that list their groups' key hashes and versions are looked at.
/// Returns the copies moved out, one chunk per peer, for the case where a kept copy turns out
/// undecodable.
pub fn drop_repeated_groups(answers: &mut [Vec<pb::CollectChunk>]) -> Vec<pb::CollectChunk> {
    let mut seen: HashSet<(u64, u64), foldhash::fast::RandomState> = Default::default();
    let mut spares = Vec::with_capacity(answers.len());
    for answer in answers.iter_mut() {
        let mut spare = pb::CollectChunk::default();
        for chunk in answer.iter_mut() {
            let n = chunk.groups.len();
            if chunk.group_keys.len() != n || chunk.group_versions.len() != n {
                continue;
            }
            let groups = std::mem::take(&mut chunk.groups);
            for (i, g) in groups.into_iter().enumerate() {
                if seen.insert((chunk.group_keys[i], chunk.group_versions[i])) {
                    chunk.groups.push(g);
                } else {
                    spare.groups.push(g);
                }
            }
            chunk.group_keys.clear();
            chunk.group_versions.clear();
        }
        spares.push(spare);
    }
    spares
}
