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

/// What is left of `deadline` as a call timeout (at least a millisecond).
pub fn remaining(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Answers `item * 10`, fails items equal to 7, and records every batch it was given. A
    /// batch containing 99 fails as a whole; one containing 50 makes the transport panic.
    struct Fake {
        batches: Mutex<Vec<Vec<u32>>>,
        gate: tokio::sync::Semaphore,
        calls: AtomicUsize,
    }

    impl Default for Fake {
        fn default() -> Self {
            Fake {
                batches: Mutex::new(Vec::new()),
                gate: tokio::sync::Semaphore::new(0),
                calls: AtomicUsize::new(0),
            }
        }
    }

    struct FakeRef(Arc<Fake>);

    impl Transport for FakeRef {
        type Item = u32;
        type Output = u32;

        async fn send(&self, items: Vec<u32>, _deadline: Instant) -> Vec<Result<u32, Status>> {
            self.0.calls.fetch_add(1, Ordering::SeqCst);
            self.0.batches.lock().push(items.clone());
            // Each call waits for a permit, so a test decides when calls end.
            self.0.gate.acquire().await.unwrap().forget();
            assert!(!items.contains(&50), "transport panicked");
            if items.contains(&99) {
                return items
                    .iter()
                    .map(|_| Err(Status::unavailable("peer down")))
                    .collect();
            }
            items
                .into_iter()
                .map(|i| {
                    if i == 7 {
                        Err(Status::invalid_argument("seven"))
                    } else {
                        Ok(i * 10)
                    }
                })
                .collect()
        }
    }

    fn batcher(limits: BatchLimits) -> (Arc<Fake>, Arc<Batcher<FakeRef>>) {
        let fake = Arc::new(Fake::default());
        (fake.clone(), Batcher::new(FakeRef(fake), limits))
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    fn one_inflight(max_items: usize) -> BatchLimits {
        BatchLimits {
            max_inflight: 1,
            large_call_bytes: usize::MAX,
            slow_call: None,
            max_items,
            max_bytes: 1000,
        }
    }

    #[tokio::test]
    async fn a_lone_call_goes_out_at_once_and_gets_its_answer() {
        let (fake, b) = batcher(BatchLimits::default());
        fake.gate.add_permits(1);
        assert_eq!(b.call(4, 1, soon()).await.unwrap(), 40);
        assert_eq!(*fake.batches.lock(), vec![vec![4]]);
        settle().await;
        assert_eq!(b.inflight(), 0);
    }

    #[tokio::test]
    async fn calls_queued_behind_an_inflight_call_share_the_next_one_and_get_their_own_results() {
        let (fake, b) = batcher(one_inflight(100));
        let first = tokio::spawn({
            let b = b.clone();
            async move { b.call(1, 1, soon()).await }
        });
        settle().await;
        let rest: Vec<_> = [2u32, 7, 3]
            .into_iter()
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { b.call(i, 1, soon()).await })
            })
            .collect();
        settle().await;
        // Only the first call is out; the others wait for it.
        assert_eq!(*fake.batches.lock(), vec![vec![1]]);
        fake.gate.add_permits(2);
        assert_eq!(first.await.unwrap().unwrap(), 10);
        let mut results = Vec::new();
        for r in rest {
            results.push(r.await.unwrap());
        }
        assert_eq!(*fake.batches.lock(), vec![vec![1], vec![2, 7, 3]]);
        assert_eq!(results[0].as_ref().unwrap(), &20);
        assert_eq!(
            results[1].as_ref().unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(results[2].as_ref().unwrap(), &30);
        settle().await;
        assert_eq!(b.inflight(), 0);
    }

    #[tokio::test]
    async fn a_failed_call_fails_each_of_its_items_only() {
        let (fake, b) = batcher(one_inflight(100));
        let first = tokio::spawn({
            let b = b.clone();
            async move { b.call(1, 1, soon()).await }
        });
        settle().await;
        let queued: Vec<_> = [99u32, 5]
            .into_iter()
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { b.call(i, 1, soon()).await })
            })
            .collect();
        settle().await;
        fake.gate.add_permits(3);
        assert_eq!(first.await.unwrap().unwrap(), 10);
        for q in queued {
            assert_eq!(
                q.await.unwrap().unwrap_err().code(),
                tonic::Code::Unavailable
            );
        }
        // The batcher is usable afterwards.
        assert_eq!(b.call(6, 1, soon()).await.unwrap(), 60);
    }

    #[tokio::test]
    async fn batches_respect_item_and_byte_limits() {
        let (fake, b) = batcher(one_inflight(2));
        let first = tokio::spawn({
            let b = b.clone();
            async move { b.call(1, 1, soon()).await }
        });
        settle().await;
        let sizes = [(2u32, 1usize), (3, 1), (4, 1), (5, 600), (6, 600)];
        let queued: Vec<_> = sizes
            .into_iter()
            .map(|(i, bytes)| {
                let b = b.clone();
                tokio::spawn(async move { b.call(i, bytes, soon()).await })
            })
            .collect();
        settle().await;
        fake.gate.add_permits(10);
        first.await.unwrap().unwrap();
        for q in queued {
            q.await.unwrap().unwrap();
        }
        assert_eq!(
            *fake.batches.lock(),
            vec![vec![1], vec![2, 3], vec![4, 5], vec![6]]
        );
    }

    #[tokio::test]
    async fn small_calls_go_one_at_a_time_even_with_room_for_more() {
        let (fake, b) = batcher(BatchLimits {
            max_inflight: 2,
            large_call_bytes: 100,
            slow_call: None,
            max_items: 10,
            max_bytes: 1000,
        });
        let mut calls = Vec::new();
        for i in [1u32, 2, 3, 4] {
            let b = b.clone();
            calls.push((i, tokio::spawn(async move { b.call(i, 1, soon()).await })));
            // Each call gets the chance to go out before the next is made.
            settle().await;
        }
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
        fake.gate.add_permits(10);
        for (i, c) in calls {
            assert_eq!(c.await.unwrap().unwrap(), i * 10);
        }
        assert_eq!(*fake.batches.lock(), vec![vec![1], vec![2, 3, 4]]);
        settle().await;
        assert_eq!(b.inflight(), 0);
    }

    #[tokio::test]
    async fn only_large_calls_in_flight_let_another_start_up_to_max_inflight() {
        let (fake, b) = batcher(BatchLimits {
            max_inflight: 2,
            large_call_bytes: 100,
            slow_call: None,
            max_items: 10,
            max_bytes: 10_000,
        });
        let mut calls = Vec::new();
        let mut call = |i: u32, bytes: usize| {
            let b = b.clone();
            calls.push((
                i,
                tokio::spawn(async move { b.call(i, bytes, soon()).await }),
            ));
        };
        // A large call is out: a small one may start beside it, but not a third call.
        call(1, 500);
        settle().await;
        call(2, 1);
        settle().await;
        call(3, 1);
        call(4, 500);
        settle().await;
        assert_eq!(*fake.batches.lock(), vec![vec![1], vec![2]]);
        // The large call ends first (the gate is first come, first served): its sender leaves
        // the queue to the small call's sender.
        fake.gate.add_permits(1);
        settle().await;
        assert_eq!(*fake.batches.lock(), vec![vec![1], vec![2]]);
        assert_eq!(b.inflight(), 1);
        // The small call ends: the queue leaves as one batch, large with item 4.
        fake.gate.add_permits(1);
        settle().await;
        assert_eq!(*fake.batches.lock(), vec![vec![1], vec![2], vec![3, 4]]);
        // Beside that large batch one more may start, large or not; then no more.
        call(5, 500);
        settle().await;
        call(6, 1);
        settle().await;
        assert_eq!(
            *fake.batches.lock(),
            vec![vec![1], vec![2], vec![3, 4], vec![5]]
        );
        assert_eq!(b.inflight(), 2);
        fake.gate.add_permits(10);
        for (i, c) in calls {
            assert_eq!(c.await.unwrap().unwrap(), i * 10);
        }
        assert_eq!(
            *fake.batches.lock(),
            vec![vec![1], vec![2], vec![3, 4], vec![5], vec![6]]
        );
        settle().await;
        assert_eq!(b.inflight(), 0);
        assert_eq!(b.state.lock().large, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_call_lets_another_start_beside_it_up_to_max_inflight() {
        let (fake, b) = batcher(BatchLimits {
            max_inflight: 2,
            large_call_bytes: usize::MAX,
            slow_call: Some(Duration::from_millis(50)),
            max_items: 10,
            max_bytes: 1000,
        });
        let mut calls = Vec::new();
        let mut call = |i: u32| {
            let b = b.clone();
            calls.push((i, tokio::spawn(async move { b.call(i, 1, soon()).await })));
        };
        call(1);
        settle().await;
        call(2);
        settle().await;
        // The first call is not slow yet: the second item waits for it.
        assert_eq!(*fake.batches.lock(), vec![vec![1]]);
        tokio::time::sleep(Duration::from_millis(60)).await;
        settle().await;
        // Now it is: the waiting item leaves beside it.
        assert_eq!(*fake.batches.lock(), vec![vec![1], vec![2]]);
        // Two calls in flight (max_inflight): a third item waits even once both are slow.
        call(3);
        settle().await;
        tokio::time::sleep(Duration::from_millis(60)).await;
        settle().await;
        assert_eq!(*fake.batches.lock(), vec![vec![1], vec![2]]);
        fake.gate.add_permits(10);
        for (i, c) in calls {
            assert_eq!(c.await.unwrap().unwrap(), i * 10);
        }
        assert_eq!(*fake.batches.lock(), vec![vec![1], vec![2], vec![3]]);
        settle().await;
        assert_eq!(b.inflight(), 0);
        assert_eq!(b.state.lock().large, 0);
    }

    #[tokio::test]
    async fn a_caller_past_its_deadline_gets_deadline_exceeded_and_its_item_is_not_sent() {
        let (fake, b) = batcher(one_inflight(100));
        let first = tokio::spawn({
            let b = b.clone();
            async move { b.call(1, 1, Instant::now() + Duration::from_secs(60)).await }
        });
        settle().await;
        // Queued behind the first call with a short deadline, which passes while it waits.
        let short = b
            .call(2, 1, Instant::now() + Duration::from_millis(10))
            .await;
        assert_eq!(short.unwrap_err().code(), tonic::Code::DeadlineExceeded);
        let dropped = {
            let b = b.clone();
            tokio::spawn(
                async move { b.call(3, 1, Instant::now() + Duration::from_secs(60)).await },
            )
        };
        settle().await;
        dropped.abort();
        let _ = dropped.await;
        let kept = {
            let b = b.clone();
            tokio::spawn(
                async move { b.call(4, 1, Instant::now() + Duration::from_secs(60)).await },
            )
        };
        settle().await;
        fake.gate.add_permits(2);
        assert_eq!(first.await.unwrap().unwrap(), 10);
        assert_eq!(kept.await.unwrap().unwrap(), 40);
        // Neither the expired item nor the abandoned one went out.
        assert_eq!(*fake.batches.lock(), vec![vec![1], vec![4]]);
    }

    #[tokio::test]
    async fn items_whose_deadline_passed_in_the_queue_are_answered_without_being_sent() {
        let (fake, b) = batcher(one_inflight(100));
        let first = tokio::spawn({
            let b = b.clone();
            async move { b.call(1, 1, soon()).await }
        });
        settle().await;
        // Pushed straight onto the queue with a deadline already past (a caller racing its own
        // timeout): the sender must answer it, not send it.
        let (reply, answer) = oneshot::channel();
        b.state.lock().queue.push_back(Pending {
            item: 2,
            bytes: 1,
            deadline: Instant::now() - Duration::from_millis(1),
            reply,
        });
        fake.gate.add_permits(1);
        first.await.unwrap().unwrap();
        let got = answer.await.unwrap();
        assert_eq!(got.unwrap_err().code(), tonic::Code::DeadlineExceeded);
        assert_eq!(*fake.batches.lock(), vec![vec![1]]);
    }

    #[tokio::test]
    async fn a_panicking_transport_frees_its_slot_and_fails_its_callers() {
        let (fake, b) = batcher(one_inflight(100));
        fake.gate.add_permits(10);
        let err = b.call(50, 1, soon()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        settle().await;
        assert_eq!(b.inflight(), 0);
        assert_eq!(b.call(5, 1, soon()).await.unwrap(), 50);
    }

    /// Answers fewer results than items.
    struct Short;

    impl Transport for Short {
        type Item = u32;
        type Output = u32;

        async fn send(&self, _items: Vec<u32>, _deadline: Instant) -> Vec<Result<u32, Status>> {
            vec![Ok(1)]
        }
    }

    #[tokio::test]
    async fn a_miscounted_answer_fails_every_item_of_the_batch() {
        let b = Batcher::new(Short, BatchLimits::default());
        // A lone item gets the single answer.
        assert_eq!(b.call(1, 1, soon()).await.unwrap(), 1);
        let b2 = Batcher::new(
            Short,
            BatchLimits {
                max_inflight: 1,
                ..BatchLimits::default()
            },
        );
        let (reply_a, answer_a) = oneshot::channel();
        let (reply_b, answer_b) = oneshot::channel();
        {
            let mut st = b2.state.lock();
            for (item, reply) in [(1, reply_a), (2, reply_b)] {
                st.queue.push_back(Pending {
                    item,
                    bytes: 1,
                    deadline: soon(),
                    reply,
                });
            }
            st.inflight = 1;
        }
        tokio::spawn(b2.clone().send_until_empty()).await.unwrap();
        for a in [answer_a, answer_b] {
            assert_eq!(a.await.unwrap().unwrap_err().code(), tonic::Code::Internal);
        }
        assert_eq!(b2.inflight(), 0);
    }
}
