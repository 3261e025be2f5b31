//! Between HTTP and the store: a push as the HTTP layer hands it over (URL parsed, body read
//! and decompressed by [`body`]), decoded and validated by whichever node applies it.

pub mod body;
pub mod inflight;

use self::body::{decode_body, BodyFormat};
use crate::store::{prepare_push, prepare_text, GroupKey, PreparedPush, PushError, Validation};

/// A push as the HTTP layer hands it over: the URL parsed, the body read (and decompressed)
/// but not decoded. Whichever node applies it decodes it (`PushRequest::prepare_now`): a cluster
/// node that receives most of the load can leave that to the group's primary.
#[derive(Debug)]
pub struct PushRequest {
    pub key: GroupKey,
    pub body: bytes::Bytes,
    pub format: BodyFormat,
    /// PUT (true) replaces the whole group, POST only the families in the body.
    pub replace_all: bool,
}

impl PushRequest {
    /// Whether decoding and applying the push is left to the blocking pool.
    pub fn is_large(&self) -> bool {
        self.body.len() > INLINE_BODY_LIMIT
    }

    /// Decodes the body and validates the push (names, limits, one push's own consistency).
    /// `Invalid` is the refusal a node records on the group (push_failure_time_seconds); every
    /// other error changes nothing.
    pub fn prepare_now(self, v: &Validation) -> Result<PreparedPush, PushError> {
        if let BodyFormat::Text = self.format {
            // Checked and encoded straight from the parser's borrowed model.
            let parsed = crate::exposition::parse_text_borrowed(&self.body, v.names)
                .map_err(|e| PushError::BadBody(e.to_string()))?;
            return prepare_text(self.key, &parsed, self.replace_all, v);
        }
        let families = decode_body(self.format, &self.body, v.names)
            .map_err(|e| PushError::BadBody(e.to_string()))?;
        prepare_push(self.key, families, self.replace_all, v)
    }
}

/// Payloads above this size (prepared families, group states) are decoded on the blocking
/// pool, not a runtime thread.
pub const INLINE_PREPARE_LIMIT: usize = 256 * 1024;

/// Push bodies above this size (about 2,000 series of text) are decoded, prepared and applied
/// on the blocking pool.
pub const INLINE_BODY_LIMIT: usize = 64 * 1024;

/// Runs a push's work on the blocking pool when `large`, inline otherwise (a thread handoff
/// costs more than a small push's work).
pub async fn off_runtime<T: Send + 'static>(
    large: bool,
    work: impl FnOnce() -> Result<T, PushError> + Send + 'static,
) -> Result<T, PushError> {
    if large {
        tokio::task::spawn_blocking(work)
            .await
            .unwrap_or_else(|e| Err(PushError::Unavailable(format!("push worker failed: {e}"))))
    } else {
        work()
    }
}
