//! The batching queue against a fake transport: batches, limits, deadlines, failures.

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
        tokio::spawn(async move { b.call(3, 1, Instant::now() + Duration::from_secs(60)).await })
    };
    settle().await;
    dropped.abort();
    let _ = dropped.await;
    let kept = {
        let b = b.clone();
        tokio::spawn(async move { b.call(4, 1, Instant::now() + Duration::from_secs(60)).await })
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
