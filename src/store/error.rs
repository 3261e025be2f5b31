//! Why a write was refused, each reason mapped to one HTTP status.

/// Prefix upstream puts on every consistency-check failure.
pub const INCONSISTENT_PREFIX: &str =
    "pushed metrics are invalid or inconsistent with existing metrics";

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PushError {
    /// The push (or the store after applying it) would be invalid: 400.
    #[error("{INCONSISTENT_PREFIX}: {0}")]
    Invalid(String),
    /// The push is malformed in a way upstream does not even notice (empty or invalid metric
    /// names, unknown types: bugs 1 and 2): 400, and unlike `Invalid` nothing is recorded on
    /// the group.
    #[error("{INCONSISTENT_PREFIX}: {0}")]
    Malformed(String),
    /// A configured limit refuses the request: 413 for sizes, 400 otherwise.
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    LimitExceeded(String),
    /// Not enough cluster members reachable to hold the write: 503.
    #[error("{0}")]
    Unavailable(String),
    /// The body could not be decoded (text or protobuf): 400, nothing recorded.
    #[error("{0}")]
    BadBody(String),
}

impl PushError {
    pub fn status(&self) -> u16 {
        match self {
            PushError::Invalid(_)
            | PushError::Malformed(_)
            | PushError::LimitExceeded(_)
            | PushError::BadBody(_) => 400,
            PushError::TooLarge(_) => 413,
            PushError::Unavailable(_) => 503,
        }
    }
}
