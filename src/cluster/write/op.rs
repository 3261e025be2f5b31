//! A write as it travels through the cluster (`WriteOp`), and what it ends with (`WriteAnswer`):
//! the HTTP answer, told apart exactly as a single node's error would be.

use crate::ingest::PushRequest;
use crate::store::{GroupKey, PreparedPush, PushError, Store, Validation};

use super::super::rpc::pb;

/// A write as the primary applies it.
pub(crate) enum WriteOp {
    Push(PreparedPush),
    /// A push not decoded yet: an entry-heavy node forwards the body as it came, for the
    /// primary to decode (`ForwardedWrite.body`).
    Raw(PushRequest),
    /// The receiving node refused the push: record the failure on the group, answer 400.
    Failure {
        key: GroupKey,
        message: String,
    },
    Delete(GroupKey),
    /// An aggregating push (`/aggregate`), decoded only by the primary that adds it in.
    Aggregate {
        req: PushRequest,
        idempotency_key: Option<String>,
    },
}

impl WriteOp {
    pub(crate) fn key(&self) -> &GroupKey {
        match self {
            WriteOp::Push(p) => &p.key,
            WriteOp::Raw(r) | WriteOp::Aggregate { req: r, .. } => &r.key,
            WriteOp::Failure { key, .. } | WriteOp::Delete(key) => key,
        }
    }
}

/// What a write ended with, as the HTTP layer answers it.
#[derive(Debug, Clone)]
pub(crate) struct WriteAnswer {
    pub(crate) status: u16,
    pub(crate) message: String,
    /// Which refusal an error is (`WriteReply.refusal`; unspecified: told apart by status and
    /// message).
    pub(crate) refusal: pb::Refusal,
}

impl WriteAnswer {
    pub(crate) fn ok(status: u16) -> Self {
        WriteAnswer {
            status,
            message: String::new(),
            refusal: pb::Refusal::Unspecified,
        }
    }
    pub(crate) fn unavailable(message: String) -> Self {
        WriteAnswer {
            status: 503,
            message,
            refusal: pb::Refusal::Unavailable,
        }
    }
    pub(crate) fn from_error(e: &PushError) -> Self {
        let refusal = match e {
            PushError::Invalid(_) => pb::Refusal::Invalid,
            PushError::Malformed(_) => pb::Refusal::Malformed,
            PushError::TooLarge(_) => pb::Refusal::TooLarge,
            PushError::LimitExceeded(_) => pb::Refusal::Limit,
            PushError::Unavailable(_) => pb::Refusal::Unavailable,
            PushError::BadBody(_) => pb::Refusal::BadBody,
        };
        WriteAnswer {
            status: e.status(),
            message: e.to_string(),
            refusal,
        }
    }
    /// Back to the error the single node would have returned (same status, same message).
    pub(crate) fn into_result(self) -> Result<(), PushError> {
        if matches!(self.status, 200 | 202) {
            return Ok(());
        }
        let prefix = format!("{}: ", crate::store::error::INCONSISTENT_PREFIX);
        let message = self.message;
        let unprefixed = |m: String| match m.strip_prefix(&prefix) {
            Some(rest) => rest.to_owned(),
            None => m,
        };
        let named = match self.refusal {
            pb::Refusal::Unspecified => None,
            pb::Refusal::Invalid => Some(PushError::Invalid(unprefixed(message.clone()))),
            pb::Refusal::Malformed => Some(PushError::Malformed(unprefixed(message.clone()))),
            pb::Refusal::TooLarge => Some(PushError::TooLarge(message.clone())),
            pb::Refusal::Limit => Some(PushError::LimitExceeded(message.clone())),
            pb::Refusal::Unavailable => Some(PushError::Unavailable(message.clone())),
            pb::Refusal::BadBody => Some(PushError::BadBody(message.clone())),
        };
        // A refusal that does not go with the status is not trusted.
        if let Some(e) = named.filter(|e| e.status() == self.status) {
            return Err(e);
        }
        // An answer that names no refusal (a recorded failure) is told by status and message.
        match self.status {
            503 => Err(PushError::Unavailable(message)),
            413 => Err(PushError::TooLarge(message)),
            _ => match message.strip_prefix(&prefix) {
                Some(rest) => Err(PushError::Invalid(rest.to_owned())),
                None => Err(PushError::LimitExceeded(message)),
            },
        }
    }

    /// A peer's answer is used as an HTTP status: only the statuses a write can have pass.
    pub(crate) fn sanitized(self) -> Self {
        match self.status {
            200 | 202 | 400 | 413 | 503 => self,
            other => WriteAnswer::unavailable(format!(
                "a cluster peer answered with unexpected status {other}"
            )),
        }
    }
}

pub(crate) fn write_reply_pb(a: WriteAnswer) -> pb::WriteReply {
    pb::WriteReply {
        status: u32::from(a.status),
        message: a.message,
        version: 0,
        refusal: a.refusal.into(),
    }
}

/// A push decoded and validated: the write to apply (a push refused as `Invalid` is a failure
/// to record on its group, like upstream), or the refusal that changes nothing. With
/// `check_here`, also checked against the groups `store` holds (the receiving node's check; the
/// primary's is part of applying the push); a repeated series of a family that conflicts with
/// those groups is refused for the conflict either way, as a single node refuses it.
pub(crate) fn decoded(
    req: PushRequest,
    v: &Validation,
    store: &Store,
    check_here: bool,
) -> Result<WriteOp, PushError> {
    let key = req.key.clone();
    let checked = req.prepare_now(v, Some(store)).and_then(|p| match check_here {
        true => store.check_consistency(&p).map(|_| p),
        false => Ok(p),
    });
    match checked {
        Ok(p) => Ok(WriteOp::Push(p)),
        Err(e @ PushError::Invalid(_)) => Ok(WriteOp::Failure {
            key,
            message: e.to_string(),
        }),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_round_trip_to_the_single_node_errors() {
        let every = [
            PushError::Invalid("x".into()),
            PushError::Malformed("bad name".into()),
            PushError::TooLarge("too big".into()),
            PushError::LimitExceeded("too many".into()),
            PushError::Unavailable("retry".into()),
            PushError::BadBody("text format parsing error".into()),
        ];
        for e in every {
            // Through the wire, as a peer's reply.
            let reply = write_reply_pb(WriteAnswer::from_error(&e));
            let back = WriteAnswer {
                status: reply.status as u16,
                refusal: reply.refusal(),
                message: reply.message,
            };
            assert_eq!(back.into_result(), Err(e));
        }
        assert!(WriteAnswer::ok(202).into_result().is_ok());
        let odd = WriteAnswer {
            status: 999,
            message: String::new(),
            refusal: pb::Refusal::Unspecified,
        }
        .sanitized();
        assert_eq!(odd.status, 503);
    }

    #[test]
    fn a_refusal_without_a_name_or_with_another_status_is_told_by_status_and_message() {
        let answer = |status, message: &str, refusal| WriteAnswer {
            status,
            message: message.to_owned(),
            refusal,
        };
        let prefixed = PushError::Invalid("x".into()).to_string();
        let unnamed = pb::Refusal::Unspecified;
        // As a recorded failure is answered.
        assert_eq!(
            answer(400, &prefixed, unnamed).into_result(),
            Err(PushError::Invalid("x".into()))
        );
        assert_eq!(
            answer(400, "limit", unnamed).into_result(),
            Err(PushError::LimitExceeded("limit".into()))
        );
        assert_eq!(
            answer(413, "big", unnamed).into_result(),
            Err(PushError::TooLarge("big".into()))
        );
        assert_eq!(
            answer(503, "down", unnamed).into_result(),
            Err(PushError::Unavailable("down".into()))
        );
        // A name that does not go with the status is not trusted.
        assert_eq!(
            answer(503, "down", pb::Refusal::BadBody).into_result(),
            Err(PushError::Unavailable("down".into()))
        );
    }
}
