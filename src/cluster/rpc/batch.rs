//! Natural batching of the calls to one peer.
//!
//! One call to a peer is in flight at a time. A call made while it is outstanding waits in a
//! queue; when the in-flight call ends, everything queued (up to `max_items` items and about
//! `max_bytes` bytes) leaves together in the next one. At low load every call goes out at once,
//! alone, so batching adds no latency; under load the per-call cost (HTTP/2 frames, tonic, task
//! wake-ups and a loopback or network write on both sides) is shared by many items. Only while
//! every call in flight is large (`large_call_bytes`: a big push, or a batch that filled up) or
//! slow (in flight longer than `slow_call`: a peer that stopped answering, or a forwarded write
//! whose primary waits on a replica) may another one start, up to `max_inflight`, so small
//! writes do not wait behind a long transfer or a stalled call.
//!
//! Every item keeps its own deadline and gets its own result: an item whose caller stopped
//! waiting (deadline passed, or its future dropped) before it was sent is not sent at all, and a
//! call that fails as a whole fails each of its items with that status.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tonic::Status;

/// Sends one batch to the peer.
pub trait Transport: Send + Sync + 'static {
    type Item: Send + 'static;
    type Output: Send + 'static;

    /// Sends `items` in one call that has to end by `deadline`; answers one result per item, in
    /// order (a call that failed as a whole answers its status for every item).
    fn send(
        &self,
        items: Vec<Self::Item>,
        deadline: Instant,
    ) -> impl Future<Output = Vec<Result<Self::Output, Status>>> + Send;
}

/// How much goes into one call, and how many calls may be outstanding.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Calls in flight at most; beyond the first, only while those in flight are all large or
    /// slow.
    pub max_inflight: usize,
    /// A call carrying at least this many bytes lets another start beside it.
    pub large_call_bytes: usize,
    /// A call in flight longer than this lets another start beside it (None: never).
    pub slow_call: Option<Duration>,
    pub max_items: usize,
    /// A batch is closed before an item would take it past this size (an item larger than this
    /// travels alone).
    pub max_bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_inflight: 4,
            large_call_bytes: 256 << 10,
            // Far above a call's usual few milliseconds, far below the peer timeout (2 s).
            slow_call: Some(Duration::from_millis(50)),
            max_items: 256,
            max_bytes: 4 << 20,
        }
    }
}

type Reply<O> = oneshot::Sender<Result<O, Status>>;

struct Pending<T, O> {
    item: T,
    bytes: usize,
    deadline: Instant,
    reply: Reply<O>,
}

struct State<T, O> {
    queue: VecDeque<Pending<T, O>>,
    /// Senders holding a slot (sending a batch, or about to take the next one).
    inflight: usize,
    /// Of those, the ones sending a large batch or whose call became slow.
    large: usize,
}

impl<T, O> State<T, O> {
    /// Whether a sender may send (another) batch beside the `others` other slots held: when
    /// none is held, or every other one is sending a large batch and there is room.
    fn may_send(&self, others: usize, max_inflight: usize) -> bool {
        others == 0 || (others == self.large && others < max_inflight)
    }
}

/// The batching queue of one peer for one kind of call.
pub struct Batcher<X: Transport> {
    transport: X,
    limits: BatchLimits,
    state: Mutex<State<X::Item, X::Output>>,
}

impl<X: Transport> Batcher<X> {
    pub fn new(transport: X, limits: BatchLimits) -> Arc<Self> {
        Arc::new(Batcher {
            transport,
            limits: BatchLimits {
                max_inflight: limits.max_inflight.max(1),
                large_call_bytes: limits.large_call_bytes,
                slow_call: limits.slow_call,
                max_items: limits.max_items.max(1),
                max_bytes: limits.max_bytes,
            },
            state: Mutex::new(State {
                queue: VecDeque::new(),
                inflight: 0,
                large: 0,
            }),
        })
    }

    /// Sends `item` (about `bytes` bytes on the wire) with the next batch and waits for its
    /// result until `deadline`.
    pub async fn call(
        self: &Arc<Self>,
        item: X::Item,
        bytes: usize,
        deadline: Instant,
    ) -> Result<X::Output, Status> {
        let (reply, answer) = oneshot::channel();
        let start_sender = {
            let mut st = self.state.lock();
            st.queue.push_back(Pending {
                item,
                bytes,
                deadline,
                reply,
            });
            let start = st.may_send(st.inflight, self.limits.max_inflight);
            if start {
                st.inflight += 1;
            }
            start
        };
        if start_sender {
            tokio::spawn(self.clone().send_until_empty());
        }
        match tokio::time::timeout_at(deadline.into(), answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Status::unavailable(
                "the call carrying this request was abandoned",
            )),
            Err(_) => Err(Status::deadline_exceeded(
                "no answer from the peer before the deadline",
            )),
        }
    }

    /// One in-flight slot: sends batches until the queue is empty, then frees the slot.
    async fn send_until_empty(self: Arc<Self>) {
        // Frees the slot if this task is dropped or panics mid-call, so the queue never stalls.
        let mut slot = Slot {
            batcher: Some(&self),
            large: false,
        };
        // Let the task that started this sender finish its current step first: calls it makes
        // in the same step (a forwarded batch replicating each of its writes) share one call.
        tokio::task::yield_now().await;
        loop {
            let batch = self.next_batch(&mut slot);
            if batch.is_empty() {
                return;
            }
            let deadline = batch
                .iter()
                .map(|p| p.deadline)
                .max()
                .expect("a batch has at least one item");
            let n = batch.len();
            let (items, replies): (Vec<_>, Vec<_>) =
                batch.into_iter().map(|p| (p.item, p.reply)).unzip();
            let send = self.transport.send(items, deadline);
            let mut results = match self.limits.slow_call {
                None => send.await,
                Some(after) => {
                    tokio::pin!(send);
                    tokio::select! {
                        results = &mut send => results,
                        () = tokio::time::sleep(after) => {
                            self.call_is_slow(&mut slot);
                            send.await
                        }
                    }
                }
            };
            if results.len() != n {
                let msg = format!("the peer answered {} of {n} batched items", results.len());
                results = (0..n).map(|_| Err(Status::internal(msg.clone()))).collect();
            }
            for (reply, result) in replies.into_iter().zip(results) {
                // The caller may have stopped waiting; nothing to do then.
                let _ = reply.send(result);
            }
        }
    }

    /// The call in flight on `slot` has taken longer than `slow_call`: it now lets another start
    /// beside it (like a large one), and one starts at once if items wait.
    fn call_is_slow(self: &Arc<Self>, slot: &mut Slot<'_, X>) {
        let start = {
            let mut st = self.state.lock();
            if !slot.large {
                slot.large = true;
                st.large += 1;
            }
            let start = !st.queue.is_empty() && st.may_send(st.inflight, self.limits.max_inflight);
            if start {
                st.inflight += 1;
            }
            start
        };
        if start {
            tokio::spawn(self.clone().send_until_empty());
        }
    }

    /// Takes the next batch off the queue, dropping items nobody waits for any more. An empty
    /// batch means the queue was empty, or another sender of small batches holds a slot and
    /// takes the queue: this slot was freed under the same lock.
    fn next_batch(&self, slot: &mut Slot<'_, X>) -> Vec<Pending<X::Item, X::Output>> {
        let now = Instant::now();
        let mut st = self.state.lock();
        if slot.large {
            slot.large = false;
            st.large -= 1;
        }
        let mut batch = Vec::new();
        if !st.may_send(st.inflight - 1, self.limits.max_inflight) {
            st.inflight -= 1;
            slot.batcher = None;
            return batch;
        }
        let mut bytes = 0usize;
        while let Some(p) = st.queue.pop_front() {
            if p.reply.is_closed() {
                continue;
            }
            if p.deadline <= now {
                let _ = p.reply.send(Err(Status::deadline_exceeded(
                    "the deadline passed before the request could be sent",
                )));
                continue;
            }
            if !batch.is_empty()
                && (batch.len() >= self.limits.max_items
                    || bytes.saturating_add(p.bytes) > self.limits.max_bytes)
            {
                st.queue.push_front(p);
                break;
            }
            bytes = bytes.saturating_add(p.bytes);
            batch.push(p);
        }
        if batch.is_empty() {
            st.inflight -= 1;
            slot.batcher = None;
        } else if bytes >= self.limits.large_call_bytes {
            st.large += 1;
            slot.large = true;
        }
        batch
    }

    #[cfg(test)]
    fn inflight(&self) -> usize {
        self.state.lock().inflight
    }
}

/// Frees an in-flight slot when dropped before the sender finished normally.
struct Slot<'a, X: Transport> {
    batcher: Option<&'a Batcher<X>>,
    /// Counted among the large (or slow) calls in flight.
    large: bool,
}

impl<X: Transport> Drop for Slot<'_, X> {
    fn drop(&mut self) {
        if let Some(b) = self.batcher.take() {
            let mut st = b.state.lock();
            st.inflight -= 1;
            if self.large {
                st.large -= 1;
            }
        }
    }
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
