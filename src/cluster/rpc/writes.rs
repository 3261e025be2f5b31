//! The write path's batches to a peer on one open `Writes` call (`proto/pushgate/cluster.proto`):
//! the sending end (`WriteCall`), and how a node serves the batches a peer sends on it
//! (`serve_writes`).
//!
//! Why one open call instead of a call per batch: with the load spread over the nodes a batch
//! carries a few items, and a unary call's own work (its HEADERS and trailers with their header
//! compression, a stream and a task on both nodes, tonic's layers, and hyper writing the
//! request's HEADERS and DATA in two system calls) cost more than the items. On an open call a
//! batch is one message each way.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tonic::{Status, Streaming};

use super::super::events::{ClusterEvent, Refusal};
use super::channel::PeerChannel;
use super::pb;
use super::pb::cluster_client::ClusterClient;
use super::wire::{copy_status, status_fields};

/// At most this many batches of one call are served at once; the call's next message is read
/// only when one of them is answered, so a peer that sends faster waits in HTTP/2 flow control
/// (its bytes bounded by the stream window). A node keeps at most `BatchLimits::max_inflight`
/// batches in flight per call.
pub const BATCHES_PER_CALL: usize = 4;

/// The answers a node sends on a `Writes` call.
pub type WritesStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<pb::WriteBatchReply, Status>> + Send>>;

/// The bounds a batch is served within, as a unary call is by the server's layers.
#[derive(Clone)]
pub struct BatchAdmission {
    /// The server-wide bound on calls served at once (`--cluster.grpc-max-concurrency`),
    /// shared with the unary calls: a batch holds a permit while it runs, and one that finds
    /// none is refused whole, unapplied.
    pub permits: Arc<Semaphore>,
    pub max: usize,
    /// `--cluster.grpc-timeout`, per batch.
    pub timeout: Duration,
    /// Turns true when the node stops serving its peers: every open call then stops reading,
    /// answers the batches it read and ends, so the server's graceful shutdown (which waits for
    /// the calls in progress) is not held by calls that never end.
    pub stop: tokio::sync::watch::Receiver<bool>,
}

/// Serves the batches of one `Writes` call with `handle`, a few at a time, and answers each as
/// it ends. The call ends when the peer ends its side and every batch read is answered.
pub fn serve_writes<F, Fut>(
    inbound: Streaming<pb::WriteBatch>,
    admission: Option<BatchAdmission>,
    handle: F,
) -> WritesStream
where
    F: Fn(pb::ForwardRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<pb::ForwardReply, Status>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(BATCHES_PER_CALL);
    tokio::spawn(async move {
        let mut inbound = inbound;
        let mut stop = admission.as_ref().map(|a| a.stop.clone());
        let mut running = FuturesUnordered::new();
        let mut reading = true;
        let mut failed = None;
        while reading || !running.is_empty() {
            tokio::select! {
                () = stopping(&mut stop), if reading => reading = false,
                next = inbound.next(), if reading && running.len() < BATCHES_PER_CALL => match next {
                    Some(Ok(batch)) => running.push(run_batch(batch, admission.as_ref(), &handle)),
                    // The peer ended its side: the batches read are still answered.
                    None => reading = false,
                    // A message that could not be read (over --cluster.grpc-max-message-bytes,
                    // or not a batch): the batches read before it are answered, then the call
                    // ends with its status, which fails the batch at the sender (and is counted
                    // by the server's `GlobalLimit` as the trailers go out).
                    Some(Err(status)) => {
                        failed = Some(status);
                        reading = false;
                    }
                },
                Some(reply) = running.next(), if !running.is_empty() => {
                    if tx.send(Ok(reply)).await.is_err() {
                        // Nobody reads the answers any more (the call was reset).
                        return;
                    }
                }
            }
        }
        if let Some(status) = failed {
            let _ = tx.send(Err(status)).await;
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Resolves once the node stops serving (or whoever could tell it to has gone); never without
/// a signal to wait on.
async fn stopping(stop: &mut Option<tokio::sync::watch::Receiver<bool>>) {
    match stop {
        Some(rx) => {
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
        None => std::future::pending().await,
    }
}

/// One batch, within `admission`, answered under its id.
async fn run_batch<F, Fut>(
    batch: pb::WriteBatch,
    admission: Option<&BatchAdmission>,
    handle: &F,
) -> pb::WriteBatchReply
where
    F: Fn(pb::ForwardRequest) -> Fut,
    Fut: Future<Output = Result<pb::ForwardReply, Status>>,
{
    let id = batch.id;
    let refused = |status: Status| {
        let (error_code, error) = status_fields(&status);
        pb::WriteBatchReply {
            id,
            reply: None,
            error_code,
            error,
        }
    };
    let _permit = match admission {
        Some(a) => match a.permits.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                let detail = format!(
                    "this node serves {} peer calls at once already (--cluster.grpc-max-concurrency); nothing applied",
                    a.max
                );
                ClusterEvent::Refused {
                    reason: Refusal::Concurrency,
                    detail: &detail,
                }
                .emit();
                return refused(Status::resource_exhausted(detail));
            }
        },
        None => None,
    };
    let Some(items) = batch.batch else {
        return refused(Status::invalid_argument(
            "a write batch without its items; nothing applied",
        ));
    };
    let run = handle(items);
    let result = match admission {
        Some(a) => match tokio::time::timeout(a.timeout, run).await {
            Ok(r) => r,
            Err(_) => {
                let detail = "a peer's write batch was not answered within --cluster.grpc-timeout";
                ClusterEvent::Refused {
                    reason: Refusal::Timeout,
                    detail,
                }
                .emit();
                Err(Status::deadline_exceeded(detail))
            }
        },
        None => run.await,
    };
    match result {
        Ok(reply) => pb::WriteBatchReply {
            id,
            reply: Some(reply),
            error_code: 0,
            error: String::new(),
        },
        Err(status) => refused(status),
    }
}

/// The sending end of the `Writes` call to one peer: opened on first use, and again after it
/// ended (the connection failed, or the peer restarted), each time by the next batch.
pub struct WriteCall {
    client: ClusterClient<PeerChannel>,
    open: Mutex<Option<OpenCall>>,
}

/// One open call: where batches go, and the batches waiting for their answers.
struct OpenCall {
    batches: mpsc::UnboundedSender<pb::WriteBatch>,
    waiting: Arc<Mutex<Waiting>>,
}

type Answer = oneshot::Sender<Result<pb::ForwardReply, Status>>;

#[derive(Default)]
struct Waiting {
    next_id: u64,
    answers: HashMap<u64, Answer>,
    /// Why the call ended; set once, and no batch is added after it.
    ended: Option<Status>,
}

impl WriteCall {
    pub fn new(client: ClusterClient<PeerChannel>) -> Self {
        WriteCall {
            client,
            open: Mutex::new(None),
        }
    }

    /// Sends one batch and waits for its answer until `deadline`. A call that ends before the
    /// answer fails the batch with the call's status.
    pub async fn send(
        &self,
        batch: pb::ForwardRequest,
        deadline: Instant,
    ) -> Result<pb::ForwardReply, Status> {
        let (answer, answered) = oneshot::channel();
        let (id, waiting) = self.enqueue(batch, answer)?;
        match tokio::time::timeout_at(deadline.into(), answered).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Status::unavailable("the call carrying this batch ended")),
            Err(_) => {
                // A late answer finds no one waiting and is dropped.
                waiting.lock().answers.remove(&id);
                Err(Status::deadline_exceeded(
                    "no answer from the peer before the deadline",
                ))
            }
        }
    }

    /// Puts the batch on the open call (opening one if none is), under a fresh id.
    fn enqueue(
        &self,
        batch: pb::ForwardRequest,
        answer: Answer,
    ) -> Result<(u64, Arc<Mutex<Waiting>>), Status> {
        let mut open = self.open.lock();
        let live = open
            .as_ref()
            .is_some_and(|c| c.waiting.lock().ended.is_none());
        if !live {
            *open = Some(self.open_call());
        }
        let call = open.as_ref().expect("a call was just opened");
        let id = {
            let mut w = call.waiting.lock();
            if let Some(ended) = &w.ended {
                return Err(copy_status(ended));
            }
            let id = w.next_id;
            w.next_id += 1;
            w.answers.insert(id, answer);
            id
        };
        let sent = call.batches.send(pb::WriteBatch {
            id,
            batch: Some(batch),
        });
        if sent.is_err() {
            call.waiting.lock().answers.remove(&id);
            return Err(Status::unavailable("the call to the peer ended"));
        }
        Ok((id, call.waiting.clone()))
    }

    /// Starts a call whose answers a task of its own hands to the waiting batches. The call's
    /// request side ends when this `WriteCall` drops its sender (the peer then ends the call).
    fn open_call(&self) -> OpenCall {
        let (batches, rx) = mpsc::unbounded_channel();
        let waiting = Arc::new(Mutex::new(Waiting::default()));
        let mut client = self.client.clone();
        let answers_to = waiting.clone();
        tokio::spawn(async move {
            let outbound = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
            let ended = match client.writes(outbound).await {
                Err(status) => status,
                Ok(answers) => {
                    let mut answers = answers.into_inner();
                    loop {
                        match answers.message().await {
                            Ok(Some(a)) => {
                                let to = answers_to.lock().answers.remove(&a.id);
                                if let Some(to) = to {
                                    let _ = to.send(batch_result(a));
                                }
                            }
                            Ok(None) => break Status::unavailable("the peer ended the call"),
                            Err(status) => break status,
                        }
                    }
                }
            };
            let left = {
                let mut w = answers_to.lock();
                w.ended = Some(copy_status(&ended));
                std::mem::take(&mut w.answers)
            };
            for (_, to) in left {
                let _ = to.send(Err(copy_status(&ended)));
            }
        });
        OpenCall { batches, waiting }
    }
}

/// A batch's answer: its items' answers, or the status it was refused with whole.
fn batch_result(a: pb::WriteBatchReply) -> Result<pb::ForwardReply, Status> {
    match (a.error_code, a.reply) {
        (0, Some(reply)) => Ok(reply),
        (0, None) => Err(Status::internal("a batch's answer carries no item answers")),
        (code, _) => Err(super::wire::item_status(code, a.error)),
    }
}

/// Sends one batch on a call of its own and waits for its answer: for tests that speak to a
/// node from outside the write path (the nodes' own batches go on their queues' open calls).
#[cfg(any(test, feature = "testsuite"))]
pub async fn one_batch<T>(
    client: &mut ClusterClient<T>,
    batch: pb::ForwardRequest,
    timeout: Duration,
) -> Result<pb::ForwardReply, Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    let once = tokio_stream::once(pb::WriteBatch {
        id: 0,
        batch: Some(batch),
    });
    let call = async {
        let mut answers = client.writes(once).await?.into_inner();
        match answers.message().await? {
            Some(a) => batch_result(a),
            None => Err(Status::unavailable("the peer ended the call unanswered")),
        }
    };
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer before the deadline")))
}

#[cfg(test)]
#[path = "writes_tests.rs"]
mod tests;
