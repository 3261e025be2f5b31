//! The tonic `Cluster` service: what a node answers its peers (forwarded writes, replicas,
//! collect, wipe, sync).

use std::sync::Arc;

use futures_util::stream::{self, StreamExt};
use tonic::{Request, Response, Status};

use super::super::bounds::BATCH_APPLY_CONCURRENCY;
use super::super::core::{off_runtime_if_large, refuse_decoded, ClusterCore};
use super::super::events::{ClusterEvent, Refusal};
use super::super::read::answer::{collect_chunks, select_for_collect, send_family_chunks};
use super::super::reconcile::sync::answer_sync;
use super::super::write::op::{decoded, write_reply_pb, WriteAnswer, WriteOp};
use super::super::write::replicate::{replica_message, stamp_of, Replica, ReturnTrip};
use super::pb;
use super::pb::cluster_server::Cluster;
use super::wire;
use super::writes::{serve_writes, BatchAdmission, WritesStream};
use crate::ingest::body::BodyFormat;
use crate::ingest::{off_runtime, PushRequest};
use crate::store::PreparedPush;

/// The gRPC service peers call.
#[derive(Clone)]
pub struct ClusterService {
    pub(crate) core: Arc<ClusterCore>,
    /// The bounds each batch of a `Writes` call is served within (the server's concurrency
    /// bound and timeout, which a unary call gets from the server's layers); none in the tests
    /// that call the service directly.
    admission: Option<BatchAdmission>,
}

impl ClusterService {
    pub fn new(core: Arc<ClusterCore>) -> Self {
        ClusterService {
            core,
            admission: None,
        }
    }

    /// Serves every batch of a `Writes` call within `admission`.
    pub fn with_admission(mut self, admission: BatchAdmission) -> Self {
        self.admission = Some(admission);
        self
    }

    /// One batch of a `Writes` call: forwarded writes and replicas, each answered on its own,
    /// in order; a batch over `--cluster.max-batch-items` is refused whole, unapplied.
    pub async fn forward_batch(
        &self,
        req: pb::ForwardRequest,
    ) -> Result<pb::ForwardReply, Status> {
        self.within_batch_limit(req.writes.len() + req.replicas.len())?;
        let writes = stream::iter(req.writes.into_iter().map(|w| self.forwarded(w)))
            .buffered(BATCH_APPLY_CONCURRENCY)
            .collect::<Vec<_>>();
        let (answers, replica_results) = tokio::join!(writes, self.replicate_all(req.replicas));
        let results = answers
            .into_iter()
            .map(|a| match a {
                Ok(a) => pb::ForwardResult {
                    reply: Some(write_reply_pb(a.answer)),
                    error_code: 0,
                    error: String::new(),
                    replica: a.replica,
                    own_replica: a.own,
                    left_to_sender: a.left_to_sender,
                },
                Err(status) => {
                    let (error_code, error) = wire::status_fields(&status);
                    pb::ForwardResult {
                        reply: None,
                        error_code,
                        error,
                        ..Default::default()
                    }
                }
            })
            .collect();
        Ok(pb::ForwardReply {
            results,
            replica_results,
        })
    }

    /// A group state (or tombstone) from the primary, applied when newer than what is held.
    /// Applies a batch's replicas a few at a time; one result each, in order.
    async fn replicate_all(&self, items: Vec<pb::ReplicateRequest>) -> Vec<pb::ReplicateResult> {
        let applied: Vec<_> = stream::iter(items.into_iter().map(|r| self.replicate_one(r)))
            .buffered(BATCH_APPLY_CONCURRENCY)
            .collect()
            .await;
        applied
            .into_iter()
            .map(|a| match a {
                Ok(applied) => pb::ReplicateResult {
                    applied,
                    error_code: 0,
                    error: String::new(),
                },
                Err(status) => {
                    let (error_code, error) = wire::status_fields(&status);
                    pb::ReplicateResult {
                        applied: false,
                        error_code,
                        error,
                    }
                }
            })
            .collect()
    }

    /// Refuses a batched call carrying more than `--cluster.max-batch-items` items, whole:
    /// none of them is applied.
    fn within_batch_limit(&self, items: usize) -> Result<(), Status> {
        let max = self.core.bounds.max_batch_items;
        if items <= max {
            return Ok(());
        }
        let detail = format!(
            "a batch of {items} items exceeds this node's limit of {max} (--cluster.max-batch-items); nothing applied"
        );
        ClusterEvent::Refused {
            reason: Refusal::BatchItems,
            detail: &detail,
        }
        .emit();
        Err(Status::resource_exhausted(detail))
    }

    async fn replicate_one(&self, req: pb::ReplicateRequest) -> Result<bool, Status> {
        let _applying = self.core.admit()?;
        self.core.take_replica(req).await
    }

    /// One forwarded write of a `Writes` batch: the families arrive prepared by the receiving node, so
    /// their layout is validated (`StoredFamily::from_wire`) but nothing is decoded or encoded.
    async fn forwarded(&self, w: pb::ForwardedWrite) -> Result<ForwardedAnswer, Status> {
        let _applying = self.core.admit()?;
        self.core.entry.served();
        expired(w.deadline_unix_ms)?;
        let names = self.core.names();
        let key = wire::key_from_pb(w.key, names).map_err(refuse_decoded)?;
        let unreachable = bounded(w.unreachable);
        let ttl = crate::store::codec::checked_ttl(w.ttl).map_err(Status::invalid_argument)?;
        let request = |body| PushRequest {
            key: key.clone(),
            body,
            format: if w.body_protobuf {
                BodyFormat::ProtobufDelimited
            } else {
                BodyFormat::Text
            },
            replace_all: w.replace_all,
            ttl,
        };
        if w.aggregate {
            // Added and replicated here before the answer, whatever the sender asked
            // (ForwardedWrite.aggregate): only this node can take the push back if too few
            // nodes take it.
            let body = w
                .body
                .ok_or_else(|| refuse_decoded("an aggregating write without a body".to_owned()))?;
            let idempotency_key = w.idempotency_key;
            if idempotency_key
                .as_deref()
                .is_some_and(|k| !crate::store::aggregate::valid_idempotency_key(k))
            {
                return Err(refuse_decoded(
                    "an idempotency key that is not 1 to 256 visible ASCII characters".to_owned(),
                ));
            }
            let op = WriteOp::Aggregate {
                req: request(body),
                idempotency_key,
            };
            let answer = self.core.aggregate_as_primary(op, unreachable).await;
            return Ok(ForwardedAnswer {
                answer,
                replica: None,
                own: None,
                left_to_sender: false,
            });
        }
        let op = if w.delete {
            WriteOp::Delete(key)
        } else if let Some(body) = w.body {
            // Decoded and checked here, refused as a single node would refuse it.
            let req = request(body);
            let large = req.is_large();
            let v = self.core.validation.clone();
            let store = self.core.store.clone();
            match off_runtime(large, move || decoded(req, &v, &store, false)).await {
                Ok(op) => op,
                Err(e) => {
                    return Ok(ForwardedAnswer {
                        answer: WriteAnswer::from_error(&e),
                        replica: None,
                        own: None,
                        left_to_sender: w.sender_replicates,
                    })
                }
            }
        } else if !w.refused.is_empty() {
            WriteOp::Failure {
                key,
                message: w.refused,
            }
        } else {
            let size: usize = w.families.iter().map(|f| f.len()).sum();
            let raw = w.families;
            let replace_all = w.replace_all;
            let group = key.clone();
            let timestamps = w.has_timestamps;
            let families = off_runtime_if_large(size, move || {
                wire::prepared_from_wire(&raw, &group, names, replace_all, timestamps)
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(refuse_decoded)?;
            WriteOp::Push(PreparedPush {
                key,
                families,
                replace_all: w.replace_all,
                has_timestamps: w.has_timestamps,
                aggregating: false,
                agg_digest: 0,
                ttl,
            })
        };
        if w.sender_replicates {
            // Applied here and answered at once: the sender sends the replicas, so this call
            // waits on no other call.
            let key = op.key().clone();
            let applied = self.core.apply_here(op);
            let (replica, own) = match applied.replica {
                Some(Replica::Put(g)) if w.own_replica => (None, Some(stamp_of(&g))),
                Some(r) => (Some(replica_message(&key, r)), None),
                None => (None, None),
            };
            return Ok(ForwardedAnswer {
                answer: applied.answer,
                replica,
                own,
                left_to_sender: true,
            });
        }
        // A sender that leaves the replication to this node (an entry point for most of its
        // load): replicated before it is answered.
        let mut trip =
            (!w.from.is_empty() && w.from != self.core.self_id.as_str()).then_some(ReturnTrip {
                sender: w.from,
                replica: None,
                own_ok: w.own_replica,
                own: None,
            });
        let answer = self
            .core
            .apply_as_primary(op, unreachable, trip.as_mut())
            .await;
        let (replica, own) = trip.map(|t| (t.replica, t.own)).unwrap_or_default();
        Ok(ForwardedAnswer {
            answer,
            replica,
            own,
            left_to_sender: false,
        })
    }
}

/// A forwarded write's answer on the primary, with what travels back for the sender to hold or
/// (`left_to_sender`) to replicate.
pub(crate) struct ForwardedAnswer {
    answer: WriteAnswer,
    replica: Option<pb::ReplicateRequest>,
    own: Option<pb::OwnReplica>,
    left_to_sender: bool,
}

/// Keeps the list of nodes a peer found unreachable bounded.
pub(crate) fn bounded(mut unreachable: Vec<String>) -> Vec<String> {
    unreachable.truncate(64);
    unreachable
}

/// A forwarded write that arrives after its sender stopped waiting is refused unapplied: the
/// sender has already given the write to another node (or failed it), so applying this copy
/// now could put an older value over newer acknowledged ones.
pub(crate) fn expired(deadline_unix_ms: u64) -> Result<(), Status> {
    let now_ms = crate::time::unix_millis();
    if deadline_unix_ms != 0 && now_ms > deadline_unix_ms {
        return Err(Status::deadline_exceeded(format!(
            "forwarded write arrived {} ms after its sender's deadline; not applied",
            now_ms - deadline_unix_ms
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn replicate(
        &self,
        request: Request<pb::ReplicateRequest>,
    ) -> Result<Response<pb::ReplicateReply>, Status> {
        let applied = self.replicate_one(request.into_inner()).await?;
        Ok(Response::new(pb::ReplicateReply { applied }))
    }

    type WritesStream = WritesStream;

    async fn writes(
        &self,
        request: Request<tonic::Streaming<pb::WriteBatch>>,
    ) -> Result<Response<WritesStream>, Status> {
        let svc = self.clone();
        Ok(Response::new(serve_writes(
            request.into_inner(),
            self.admission.clone(),
            move |batch| {
                let svc = svc.clone();
                async move { svc.forward_batch(batch).await }
            },
        )))
    }

    type CollectStream = std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<pb::CollectChunk, Status>> + Send>,
    >;

    async fn collect(
        &self,
        request: Request<pb::CollectRequest>,
    ) -> Result<Response<Self::CollectStream>, Status> {
        let store = self.core.store.clone();
        let req = request.into_inner();
        let (ring, r) = (self.core.ring(), self.core.replication_factor);
        if req.by_family {
            // The heads go out as soon as they are encoded, the families as they follow: the
            // caller renders the first families while this node encodes the next. Encoding
            // does not wait for the caller to read (the queue is unbounded: at most the whole
            // answer, which a group-by-group answer holds too): a node that encoded only as
            // fast as the caller read made chunks wait on context switches at both ends.
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::task::spawn_blocking(move || {
                let sel = select_for_collect(&store, &req, &ring, r);
                let tombstones = store.tombstones();
                send_family_chunks(
                    &sel.groups,
                    tombstones,
                    sel.deferred,
                    req.text_only,
                    &mut |c| tx.send(Ok(c)).is_ok(),
                );
            });
            return Ok(Response::new(Box::pin(
                tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
            )));
        }
        let chunks = tokio::task::spawn_blocking(move || {
            let sel = select_for_collect(&store, &req, &ring, r);
            collect_chunks(&sel.groups, store.tombstones(), sel.deferred, req.text_only)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(Box::pin(tokio_stream::iter(
            chunks.into_iter().map(Ok).collect::<Vec<_>>(),
        ))))
    }

    async fn wipe(
        &self,
        request: Request<pb::WipeRequest>,
    ) -> Result<Response<pb::WipeReply>, Status> {
        let version = request.into_inner().version;
        self.core.peer_version(version, "wipe")?;
        self.core.wipe_local(version);
        Ok(Response::new(pb::WipeReply {}))
    }

    async fn sync(
        &self,
        request: Request<pb::SyncRequest>,
    ) -> Result<Response<pb::SyncReply>, Status> {
        let req = request.into_inner();
        let core = self.core.clone();
        let reply = tokio::task::spawn_blocking(move || answer_sync(&core, req))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(Status::invalid_argument)?;
        Ok(Response::new(reply))
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
