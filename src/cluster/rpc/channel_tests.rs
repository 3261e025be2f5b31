//! Tests of `channel.rs`.

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
