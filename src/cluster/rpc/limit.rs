//! The server-wide bound on the gRPC calls a node serves at once
//! (`--cluster.grpc-max-concurrency`): a call beyond it is refused at once with
//! RESOURCE_EXHAUSTED, before its message is read, so a flood of calls holds neither memory nor
//! tasks. (tower's concurrency limit queues instead: the waiting calls' messages would pile up.)

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Semaphore;
use tonic::Status;

use super::super::events::{ClusterEvent, Refusal};

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
    type Response = http::Response<ResBody>;
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
                    // Held until the answer is ready: the request's message is read and applied
                    // within it (a streamed answer's chunks are already built by then).
                    let answer = call.await;
                    drop(permit);
                    answer
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
                let answer = Status::resource_exhausted(detail).into_http();
                Box::pin(async move { Ok(answer) })
            }
        }
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
            assert_eq!(call.await.unwrap().into_body(), "ok");
        }
        let again = svc.call(http::Request::new(())).await.unwrap();
        assert_eq!(again.into_body(), "ok");
    }
}
