//! The server-wide bound on the gRPC calls a node serves at once
//! (`--cluster.grpc-max-concurrency`): a call beyond it is refused at once with
//! RESOURCE_EXHAUSTED, before its message is read, so a flood of calls holds neither memory nor
//! tasks. (tower's concurrency limit queues instead: the waiting calls' messages would pile up.)
//!
//! It also counts what tonic refuses by itself, inside it, so that every bound of the cluster
//! plane shows in `pushgate_cluster_refused_total`: a message over
//! `--cluster.grpc-max-message-bytes` (tonic answers OUT_OF_RANGE, a code pushgate's own
//! handlers never use) and a call dropped unfinished (`--cluster.grpc-timeout` elapsed, or the
//! caller went away).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Semaphore;
use tonic::Status;

use super::super::events::{ClusterEvent, Refusal};
use super::writes::BatchAdmission;

/// A tower layer refusing calls beyond `max` in flight.
#[derive(Clone)]
pub struct GlobalLimitLayer {
    permits: Arc<Semaphore>,
    max: usize,
}

impl GlobalLimitLayer {
    pub fn new(max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        GlobalLimitLayer {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// The same bound for each batch of a `Writes` call (which holds a permit of its own only
    /// while it starts), with `timeout` (`--cluster.grpc-timeout`) per batch; the calls end
    /// when `stop` turns true.
    pub fn batch_admission(
        &self,
        timeout: std::time::Duration,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> BatchAdmission {
        BatchAdmission {
            permits: self.permits.clone(),
            max: self.max,
            timeout,
            stop,
        }
    }
}

impl<S> tower::Layer<S> for GlobalLimitLayer {
    type Service = GlobalLimit<S>;
    fn layer(&self, inner: S) -> GlobalLimit<S> {
        GlobalLimit {
            inner,
            permits: self.permits.clone(),
            max: self.max,
        }
    }
}

/// The service `GlobalLimitLayer` wraps around the routes.
#[derive(Clone)]
pub struct GlobalLimit<S> {
    inner: S,
    permits: Arc<Semaphore>,
    max: usize,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, Req, ResBody> tower::Service<http::Request<Req>> for GlobalLimit<S>
where
    S: tower::Service<http::Request<Req>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<Counted<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Req>) -> Self::Future {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let call = self.inner.call(req);
                Box::pin(async move {
                    let unfinished = Unfinished;
                    // Held until the answer is ready: the request's message is read and applied
                    // within it (a streamed answer's chunks are already built by then).
                    let answer = call.await;
                    drop(permit);
                    std::mem::forget(unfinished);
                    answer.map(|a| {
                        count_tonic_refusal(a.headers());
                        a.map(|inner| Counted { inner })
                    })
                })
            }
            Err(_) => {
                let detail = format!(
                    "this node serves {} peer calls at once already (--cluster.grpc-max-concurrency)",
                    self.max
                );
                ClusterEvent::Refused {
                    reason: Refusal::Concurrency,
                    detail: &detail,
                }
                .emit();
                let answer = Status::resource_exhausted(detail).into_http::<Counted<ResBody>>();
                Box::pin(async move { Ok(answer) })
            }
        }
    }
}

/// Counts a call whose future is dropped before its answer: tonic's timeout drops it, and so
/// does a caller that resets its stream.
struct Unfinished;

impl Drop for Unfinished {
    fn drop(&mut self) {
        ClusterEvent::Refused {
            reason: Refusal::Timeout,
            detail: "a peer call was dropped unfinished (--cluster.grpc-timeout, or its caller went away)",
        }
        .emit();
    }
}

/// An answer's body, which counts tonic's refusal of an oversized message when it comes in the
/// trailers (where a unary call's decode error is sent, after the headers).
#[derive(Default)]
pub struct Counted<B> {
    inner: B,
}

impl<B: http_body::Body + Unpin> http_body::Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(trailers) = frame.trailers_ref() {
                count_tonic_refusal(trailers);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Counts an answer tonic made itself for a message over the decode limit.
fn count_tonic_refusal(headers: &http::HeaderMap) {
    let out_of_range = (tonic::Code::OutOfRange as i32).to_string();
    if headers.get("grpc-status").map(|v| v.as_bytes()) == Some(out_of_range.as_bytes()) {
        ClusterEvent::Refused {
            reason: Refusal::MessageBytes,
            detail: "a peer's message is over --cluster.grpc-max-message-bytes",
        }
        .emit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{Layer, Service, ServiceExt};

    /// Calls over the limit are refused at once (RESOURCE_EXHAUSTED), and a call finishing
    /// frees its place.
    #[tokio::test]
    async fn calls_beyond_the_limit_are_refused_at_once() {
        let (release, released) = tokio::sync::watch::channel(false);
        let inner = tower::service_fn(move |_req: http::Request<()>| {
            let mut released = released.clone();
            async move {
                let _ = released.wait_for(|r| *r).await;
                Ok::<_, Infallible>(http::Response::new(String::from("ok")))
            }
        });
        let mut svc = GlobalLimitLayer::new(2).layer(inner);
        let held: Vec<_> = (0..2).map(|_| svc.call(http::Request::new(()))).collect();
        let refused = svc
            .ready()
            .await
            .unwrap()
            .call(http::Request::new(()))
            .await
            .unwrap();
        assert_eq!(
            refused.headers().get("grpc-status").unwrap(),
            &(tonic::Code::ResourceExhausted as i32).to_string()
        );
        release.send(true).unwrap();
        for call in held {
            assert_eq!(call.await.unwrap().into_body().inner, "ok");
        }
        let again = svc.call(http::Request::new(())).await.unwrap();
        assert_eq!(again.into_body().inner, "ok");
    }

    /// A call dropped before its answer (tonic's timeout drops it) is counted as `timeout`, a
    /// finished one is not; an OUT_OF_RANGE in the trailers is counted as `message_bytes`.
    #[test]
    fn dropped_calls_and_oversized_messages_are_counted() {
        let r = crate::telemetry::SelfRecorder::default();
        metrics::with_local_recorder(&r, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let never = tower::service_fn(|_req: http::Request<()>| async {
                    std::future::pending::<Result<http::Response<String>, Infallible>>().await
                });
                let mut svc = GlobalLimitLayer::new(4).layer(never);
                let call = svc.call(http::Request::new(()));
                let timed_out =
                    tokio::time::timeout(std::time::Duration::from_millis(10), call).await;
                assert!(timed_out.is_err());
                let ok = tower::service_fn(|_req: http::Request<()>| async {
                    Ok::<_, Infallible>(http::Response::new(String::from("ok")))
                });
                let answer = GlobalLimitLayer::new(4)
                    .layer(ok)
                    .call(http::Request::new(()))
                    .await
                    .unwrap();
                assert_eq!(answer.into_body().inner, "ok");
            });
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("11"));
            count_tonic_refusal(&trailers);
        });
        let text = r.text();
        for line in [
            "pushgate_cluster_refused_total{reason=\"timeout\"} 1\n",
            "pushgate_cluster_refused_total{reason=\"message_bytes\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }
}
