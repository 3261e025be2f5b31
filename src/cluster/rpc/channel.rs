//! The client side of a connection to a peer: a tonic `Channel` whose request bodies end with
//! their last DATA frame.
//!
//! tonic's request body only learns that it has ended when it is polled once more after its
//! message, so hyper sends every unary call as HEADERS, DATA and then an empty DATA frame that
//! carries END_STREAM, which it writes with a system call of its own (and the peer's kernel and
//! h2 handle as a frame of its own). `EndWithLastData` looks one frame ahead, without waiting,
//! so that the message's DATA frame carries END_STREAM.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tonic::transport::Channel;
use tonic::Status;

/// A peer's `Channel` (or, in tests, any service in its place), sending request bodies through
/// `EndWithLastData`.
#[derive(Clone, Debug)]
pub struct PeerChannel<S = Channel>(S);

impl<S> PeerChannel<S> {
    pub fn new(inner: S) -> Self {
        PeerChannel(inner)
    }
}

type GrpcRequest = http::Request<tonic::body::Body>;

impl<S: tower::Service<GrpcRequest>> tower::Service<GrpcRequest> for PeerChannel<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: GrpcRequest) -> Self::Future {
        self.0
            .call(req.map(|body| tonic::body::Body::new(EndWithLastData::new(body))))
    }
}

/// A body that, after each frame, polls its inner body once more without waiting: when that
/// finds the end, `is_end_stream` is true as soon as the last frame has been handed out; a frame
/// or an error it finds is kept and handed out next.
pub struct EndWithLastData<B> {
    inner: B,
    ahead: Option<Result<Frame<Bytes>, Status>>,
    ended: bool,
}

impl<B> EndWithLastData<B> {
    pub fn new(inner: B) -> Self {
        EndWithLastData {
            inner,
            ahead: None,
            ended: false,
        }
    }
}

impl<B> Body for EndWithLastData<B>
where
    B: Body<Data = Bytes, Error = Status> + Unpin,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        let next = match this.ahead.take() {
            Some(next) => next,
            None if this.ended => return Poll::Ready(None),
            None => match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(next) => next,
                None => {
                    this.ended = true;
                    return Poll::Ready(None);
                }
            },
        };
        if next.is_ok() && !this.ended {
            // Pending leaves the waker registered: the caller polls again when there is more.
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(None) => this.ended = true,
                Poll::Ready(Some(more)) => this.ahead = Some(more),
                Poll::Pending => {}
            }
        }
        Poll::Ready(Some(next))
    }

    fn is_end_stream(&self) -> bool {
        self.ahead.is_none() && (self.ended || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if self.ahead.is_some() {
            // The frame held ahead is not counted by the inner body any more.
            return SizeHint::default();
        }
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[path = "channel_tests.rs"]
mod tests;
