//! `ErrorCode`: the stable error codes of the CLI and the API (CONTRACT.md).

use std::fmt;
use std::str::FromStr;

/// An error code as printed by the CLI (`error: <code>: <message>`) and carried by API errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    NodeDown,
    AlreadyInCluster,
    InOtherCluster,
    NodeNotInCluster,
    NameInUse,
    WouldLoseQuorum,
    Singleton,
    Unauthenticated,
    Unavailable,
    LockHeld,
    LockNotHeld,
    InvalidArgument,
    InvalidConfig,
    /// watch: the revision asked for is older than the retained events.
    Compacted,
    /// kv cas: the key's revision is not the expected one.
    CompareFailed,
    /// kv get: no such key.
    KeyNotFound,
    /// A size or count limit would be exceeded.
    ResourceExhausted,
    /// A write may or may not have been applied: it was sent (or proposed) and then the
    /// connection broke, the deadline passed or the node's storage failed (CLI exit 3).
    OutcomeUnknown,
    /// This node's storage failed (disk full, read-only, I/O error); it serves nothing more.
    Storage,
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 20] = [
        ErrorCode::NodeDown,
        ErrorCode::AlreadyInCluster,
        ErrorCode::InOtherCluster,
        ErrorCode::NodeNotInCluster,
        ErrorCode::NameInUse,
        ErrorCode::WouldLoseQuorum,
        ErrorCode::Singleton,
        ErrorCode::Unauthenticated,
        ErrorCode::Unavailable,
        ErrorCode::LockHeld,
        ErrorCode::LockNotHeld,
        ErrorCode::InvalidArgument,
        ErrorCode::InvalidConfig,
        ErrorCode::Compacted,
        ErrorCode::CompareFailed,
        ErrorCode::KeyNotFound,
        ErrorCode::ResourceExhausted,
        ErrorCode::OutcomeUnknown,
        ErrorCode::Storage,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NodeDown => "node_down",
            ErrorCode::AlreadyInCluster => "already_in_cluster",
            ErrorCode::InOtherCluster => "in_other_cluster",
            ErrorCode::NodeNotInCluster => "node_not_in_cluster",
            ErrorCode::NameInUse => "name_in_use",
            ErrorCode::WouldLoseQuorum => "would_lose_quorum",
            ErrorCode::Singleton => "singleton",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::LockHeld => "lock_held",
            ErrorCode::LockNotHeld => "lock_not_held",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::InvalidConfig => "invalid_config",
            ErrorCode::Compacted => "compacted",
            ErrorCode::CompareFailed => "compare_failed",
            ErrorCode::KeyNotFound => "key_not_found",
            ErrorCode::ResourceExhausted => "resource_exhausted",
            ErrorCode::OutcomeUnknown => "outcome_unknown",
            ErrorCode::Storage => "storage",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorCode {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        ErrorCode::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or(())
    }
}

/// An error code with its message: what an operation that failed reports.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// The leader's address, when the error is about not being the leader.
    pub leader: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            leader: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for c in ErrorCode::ALL {
            assert_eq!(c.as_str().parse::<ErrorCode>(), Ok(c));
        }
        assert!("nope".parse::<ErrorCode>().is_err());
    }
}
