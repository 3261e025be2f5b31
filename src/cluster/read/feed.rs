//! A peer's family-by-family answer after its heads: one reader per peer on a blocking thread
//! of its own (peers' chunks are decoded in parallel with each other and with the render)
//! checks every promise of `CollectChunk.families` and hands the families to the render a few
//! chunks ahead (`PeerFeed`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;

use super::super::rpc::pb;
use super::collect::collect_ended;
use super::stream::NOT_SHOWN;
use crate::exposition::{MetricType, NameScheme};
use crate::store::family::SharedBlock;
use crate::store::key::PackedKey;
use crate::store::{GroupKey, StoredFamily};

/// Decoded family chunks a peer's reader may hold ahead of the render.
pub(super) const READ_AHEAD: usize = 2;

/// A member's entry in its name's `FamilyIndex`, for a copy the view shows.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) rank: u32,
    pub(super) typ: MetricType,
    pub(super) help: Arc<str>,
    pub(super) empty: bool,
}

/// One family name's members from a peer's chunk, those the view shows: (rank, family), in
/// the order sent; the first run of a name carries the index entries of the copies shown.
#[derive(Debug)]
pub(super) struct PeerFamily {
    pub(super) name: String,
    pub(super) index: Option<Vec<Entry>>,
    pub(super) members: VecDeque<(u32, StoredFamily)>,
}

/// What a peer's reader hands the render: a chunk's families, or why the answer is given up.
pub(super) type Fed = Result<Vec<PeerFamily>, String>;

/// The render's end of a peer's reader: decoded families not yet merged.
pub(super) struct PeerFeed {
    pub(super) rx: tokio::sync::mpsc::Receiver<Fed>,
    pub(super) pending: VecDeque<PeerFamily>,
    pub(super) done: bool,
    /// The first sort key and rank of the last member taken in order (`take_ordered`).
    pub(super) last: (Vec<u8>, Option<u32>),
}

impl PeerFeed {
    /// The name of the next family this peer sends, waiting for its next chunk if need be;
    /// `None` once its answer is over.
    pub(super) fn next_name(&mut self) -> Result<Option<&str>, String> {
        while self.pending.is_empty() && !self.done {
            match self.rx.blocking_recv() {
                Some(Ok(families)) => self.pending.extend(families),
                Some(Err(e)) => return Err(e),
                None => self.done = true,
            }
        }
        Ok(self.pending.front().map(|f| f.name.as_str()))
    }

    /// The next member of family `name` from this peer (rank, family), `None` after its last.
    pub(super) fn take_member(&mut self, name: &str) -> Result<Option<(u32, StoredFamily)>, String> {
        while self.next_name()? == Some(name) {
            let front = self.pending.front_mut().expect("a family is pending");
            if let Some(m) = front.members.pop_front() {
                return Ok(Some(m));
            }
            self.pending.pop_front();
        }
        Ok(None)
    }

    /// [`Self::take_member`], checking that the peer keeps the order its index promised: by
    /// first series' sort key, then key order.
    pub(super) fn take_ordered(&mut self, name: &str) -> Result<Option<(u32, StoredFamily)>, String> {
        let Some((r, f)) = self.take_member(name)? else {
            self.last = (Vec::new(), None);
            return Ok(None);
        };
        let first = f.key_range().0;
        if let (prev, Some(prev_rank)) = &self.last {
            if (first, r) <= (prev.as_slice(), *prev_rank) {
                return Err(format!(
                    "a peer sent family {name:?} out of order; the response is incomplete"
                ));
            }
        }
        self.last.0.clear();
        self.last.0.extend_from_slice(first);
        self.last.1 = Some(r);
        Ok(Some((r, f)))
    }
}

/// A shown group's key: whole for messages, packed for the checks.
pub(super) type ShownKey = (Arc<GroupKey>, PackedKey);

/// Reads a peer's families after its heads (on a blocking thread of its own, so that peers'
/// chunks are decoded in parallel with each other and with the render), checking every promise
/// of `CollectChunk.families` but the order within a name (the render checks that), and hands
/// them to the render a few chunks ahead.
pub(super) struct Reader {
    pub(super) peer: String,
    pub(super) declared: u64,
    pub(super) started: Instant,
    /// Per head index: its rank in the view (`NOT_SHOWN`: its families are skipped, not
    /// decoded) and its key, packed for the checks of its families (each key comes up cold:
    /// the families come name by name, not group by group).
    pub(super) keys: Vec<(u32, Option<ShownKey>)>,
    pub(super) names: NameScheme,
    pub(super) deadline: Duration,
    pub(super) runtime: tokio::runtime::Handle,
}

/// Where a peer's answer stands: the name being sent, its index (head index, type, HELP and
/// emptiness of each member, in order) and how many members of it came.
#[derive(Default)]
pub(super) struct Progress {
    pub(super) name: Option<String>,
    pub(super) index: Vec<(u32, MetricType, Arc<str>, bool)>,
    pub(super) came: usize,
    /// Per head index, the number of the name whose index listed it last (1 for the first
    /// name): a group twice in one index breaks the answer.
    pub(super) listed: Vec<u32>,
    pub(super) names: u32,
}

impl Reader {
    pub(super) fn read(
        self,
        mut stream: Box<tonic::Streaming<pb::CollectChunk>>,
        tx: tokio::sync::mpsc::Sender<Fed>,
    ) {
        let mut received: u64 = 0;
        let mut progress = Progress {
            listed: vec![0; self.keys.len()],
            ..Default::default()
        };
        let res = loop {
            let next = self
                .runtime
                .block_on(tokio::time::timeout(self.deadline, stream.message()));
            let chunk = match next {
                Ok(Ok(Some(c))) => c,
                Ok(Ok(None)) if progress.came == progress.index.len() => break Ok(()),
                Ok(Ok(None)) => break Err("the answer ended inside a family".to_owned()),
                Ok(Err(status)) => break Err(status.to_string()),
                Err(_) => break Err("deadline exceeded between chunks".to_owned()),
            };
            received = received.saturating_add(chunk.encoded_len() as u64);
            if received > self.declared {
                break Err(format!(
                    "sent more family bytes than the {} it declared",
                    self.declared
                ));
            }
            match self.decode(chunk, &mut progress) {
                Ok(families) => {
                    if tx.blocking_send(Ok(families)).is_err() {
                        // The render is over (it failed elsewhere): stop reading.
                        break Ok(());
                    }
                }
                Err(e) => {
                    super::super::core::refuse_decoded(e.clone());
                    break Err(e);
                }
            }
        };
        collect_ended(
            &self.peer,
            self.started,
            res.as_ref().err().map(String::as_str),
        );
        if let Err(e) = res {
            let _ = tx.blocking_send(Err(format!(
                "the merged scrape lost peer {}'s answer midway ({e}); the response is incomplete",
                self.peer
            )));
        }
    }

    /// A new name's index, checked: names strictly ascending, the previous name complete, one
    /// entry per member with a valid type and HELP, each head existing and listed once.
    fn start_name(
        &self,
        name: &str,
        index: Option<pb::FamilyIndex>,
        progress: &mut Progress,
    ) -> Result<Vec<Entry>, String> {
        if progress.name.as_deref().is_some_and(|n| name <= n) {
            return Err(format!("family {name:?} out of order"));
        }
        if progress.came != progress.index.len() {
            return Err(format!("family {name:?} before the last one ended"));
        }
        let index = index.ok_or_else(|| format!("family {name:?} without its index"))?;
        let n = index.groups.len();
        if index.types.len() != n || index.helps.len() != n || index.empty.len() != n {
            return Err(format!("family {name:?} with an index of unmatched lengths"));
        }
        progress.names += 1;
        progress.name = Some(name.to_owned());
        progress.came = 0;
        progress.index.clear();
        let helps: Vec<Arc<str>> = index
            .help_texts
            .iter()
            .map(|h| crate::store::family::intern(h))
            .collect();
        let mut shown = Vec::new();
        for i in 0..n {
            let gi = index.groups[i];
            let listed = progress
                .listed
                .get_mut(gi as usize)
                .ok_or_else(|| format!("family {name:?} of a group without a head"))?;
            if *listed == progress.names {
                return Err(format!("family {name:?} lists a group twice"));
            }
            *listed = progress.names;
            let typ = i32::try_from(index.types[i])
                .ok()
                .and_then(|t| MetricType::try_from(t).ok())
                .ok_or_else(|| format!("family {name:?} with an unknown type"))?;
            let help = helps
                .get(index.helps[i] as usize)
                .ok_or_else(|| format!("family {name:?} with a HELP out of its index"))?
                .clone();
            let rank = self.keys[gi as usize].0;
            if rank != NOT_SHOWN {
                shown.push(Entry {
                    rank,
                    typ,
                    help: help.clone(),
                    empty: index.empty[i],
                });
            }
            progress.index.push((gi, typ, help, index.empty[i]));
        }
        Ok(shown)
    }

    /// One chunk's families, checked: only families, each run following its name's index,
    /// every member a valid family of its group matching its index entry. Members of copies
    /// the view does not show are skipped.
    pub(super) fn decode(
        &self,
        c: pb::CollectChunk,
        progress: &mut Progress,
    ) -> Result<Vec<PeerFamily>, String> {
        if !c.groups.is_empty()
            || !c.heads.is_empty()
            || !c.tombstones.is_empty()
            || c.heads_end
            || !c.deferred_keys.is_empty()
        {
            return Err("a collect answer's families carry heads or groups".into());
        }
        let mut out = Vec::with_capacity(c.families.len());
        for fam in c.families {
            let index = if progress.name.as_deref() == Some(fam.name.as_str()) {
                if fam.index.is_some() {
                    return Err(format!("family {:?} indexed twice", fam.name));
                }
                None
            } else {
                Some(self.start_name(&fam.name, fam.index, progress)?)
            };
            if fam.groups.len() != fam.ends.len() {
                return Err(format!("family {:?} with unmatched ends", fam.name));
            }
            let mut block = SharedBlock::new(fam.members.clone());
            let mut ranks = Vec::new();
            let mut at = 0usize;
            for (&gi, &end) in fam.groups.iter().zip(&fam.ends) {
                let Some((want, typ, help, empty)) = progress.index.get(progress.came) else {
                    return Err(format!("family {:?} with more members than its index", fam.name));
                };
                if *want != gi {
                    return Err(format!("family {:?} out of its index's order", fam.name));
                }
                progress.came += 1;
                let end = end as usize;
                if end < at || end > fam.members.len() {
                    return Err(format!("family {:?} outside its message", fam.name));
                }
                let (rank, key) = &self.keys[gi as usize];
                if let (true, Some(key)) = (*rank != NOT_SHOWN, key) {
                    block
                        .add_wire(at, end - at, &key.1, self.names)
                        .map_err(|e| format!("group {}: {e}", key.0))?;
                    ranks.push((*rank, *typ, help.clone(), *empty));
                }
                at = end;
            }
            let families = block.finish();
            let mut members = VecDeque::with_capacity(families.len());
            for (f, (rank, typ, help, empty)) in families.into_iter().zip(ranks) {
                if *f.name != *fam.name || f.typ != typ || f.help != help || f.is_empty() != empty
                {
                    return Err(format!(
                        "family {:?} other than its index says ({:?})",
                        fam.name, f.name
                    ));
                }
                members.push_back((rank, f));
            }
            out.push(PeerFamily {
                name: fam.name,
                index,
                members,
            });
        }
        Ok(out)
    }
}

