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
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A body that yields scripted polls: a frame, Pending, an error, or the end.
    enum Step {
        Data(&'static str),
        Pending,
        Fail,
    }

    struct Scripted(VecDeque<Step>);

    impl Body for Scripted {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            match self.0.pop_front() {
                None => Poll::Ready(None),
                Some(Step::Data(d)) => {
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(d.as_bytes())))))
                }
                Some(Step::Pending) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Some(Step::Fail) => Poll::Ready(Some(Err(Status::internal("broken")))),
            }
        }
    }

    /// Polls to the end; each entry: the frame's data (or "pending"/"error"/"end") and whether
    /// the body said it had ended right after that poll.
    fn drain(steps: Vec<Step>) -> Vec<(String, bool)> {
        let mut body = EndWithLastData::new(Scripted(steps.into()));
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut seen = Vec::new();
        loop {
            let got = match Pin::new(&mut body).poll_frame(&mut cx) {
                Poll::Pending => "pending".to_owned(),
                Poll::Ready(None) => "end".to_owned(),
                Poll::Ready(Some(Err(_))) => "error".to_owned(),
                Poll::Ready(Some(Ok(f))) => {
                    String::from_utf8(f.into_data().expect("a data frame").to_vec()).unwrap()
                }
            };
            let done = got == "end";
            seen.push((got, body.is_end_stream()));
            if done {
                return seen;
            }
        }
    }

    fn s(x: &str, end: bool) -> (String, bool) {
        (x.to_owned(), end)
    }

    #[test]
    fn the_last_data_frame_is_known_to_end_the_body() {
        assert_eq!(
            drain(vec![Step::Data("msg")]),
            vec![s("msg", true), s("end", true)]
        );
    }

    #[test]
    fn frames_found_ahead_are_handed_out_in_order() {
        assert_eq!(
            drain(vec![Step::Data("a"), Step::Data("b"), Step::Data("c")]),
            vec![s("a", false), s("b", false), s("c", true), s("end", true)]
        );
    }

    #[test]
    fn a_body_not_ready_after_a_frame_is_not_taken_as_ended() {
        assert_eq!(
            drain(vec![
                Step::Data("a"),
                Step::Pending,
                Step::Data("b"),
                Step::Pending
            ]),
            vec![s("a", false), s("b", false), s("end", true)]
        );
    }

    #[tokio::test]
    async fn a_peer_channel_sends_bodies_that_end_with_their_message() {
        use tower::{Service, ServiceExt};
        let seen = tower::service_fn(|req: GrpcRequest| async move {
            let mut body = req.into_body();
            let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
            let data = frame
                .expect("a frame")
                .expect("no error")
                .into_data()
                .unwrap();
            Ok::<_, std::convert::Infallible>((data, body.is_end_stream()))
        });
        let mut channel = PeerChannel::new(seen);
        let req = http::Request::new(tonic::body::Body::new(Scripted(
            vec![Step::Data("msg")].into(),
        )));
        let (data, ended) = channel.ready().await.unwrap().call(req).await.unwrap();
        assert_eq!(&data[..], b"msg");
        assert!(ended, "the body is known to have ended with its only frame");
    }

    #[test]
    fn an_error_found_ahead_follows_the_frame_before_it() {
        assert_eq!(
            drain(vec![Step::Data("a"), Step::Fail]),
            vec![s("a", false), s("error", false), s("end", true)]
        );
    }
}
