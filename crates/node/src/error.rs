//! Mapping between ekka errors, openraft errors and `tonic::Status`.

use ekka_proto::{ERROR_HEADER, LEADER_HEADER};
use ekka_types::{ApiError, ErrorCode, Reject};
use tonic::metadata::AsciiMetadataValue;

/// Turns an API error into a gRPC status. This is the only place that does, and it attaches the
/// error code and the leader hint as metadata.
pub fn to_status(e: ApiError) -> tonic::Status {
    let code = match e.code {
        ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
        ErrorCode::Unavailable => tonic::Code::Unavailable,
        ErrorCode::InvalidArgument | ErrorCode::InvalidConfig => tonic::Code::InvalidArgument,
        ErrorCode::Internal => tonic::Code::Internal,
        ErrorCode::NodeNotInCluster | ErrorCode::KeyNotFound => tonic::Code::NotFound,
        ErrorCode::ResourceExhausted => tonic::Code::ResourceExhausted,
        ErrorCode::NodeDown | ErrorCode::Storage => tonic::Code::Unavailable,
        ErrorCode::OutcomeUnknown => tonic::Code::Unknown,
        _ => tonic::Code::FailedPrecondition,
    };
    let mut st = tonic::Status::new(code, e.message);
    st.metadata_mut().insert(
        ERROR_HEADER,
        AsciiMetadataValue::from_static(e.code.as_str()),
    );
    if let Some(l) = e.leader.and_then(|l| AsciiMetadataValue::try_from(l).ok()) {
        st.metadata_mut().insert(LEADER_HEADER, l);
    }
    st
}

/// Reads an API error back from a gRPC status (the inverse of [`to_status`]).
pub fn from_status(st: &tonic::Status) -> ApiError {
    ekka_proto::error_from_status(st)
}

/// The error for a command the state machine refused.
pub fn from_reject(r: Reject) -> ApiError {
    let code = match &r {
        Reject::NameInUse { .. } => ErrorCode::NameInUse,
        Reject::NoSuchMember { .. } => ErrorCode::NodeNotInCluster,
        Reject::WouldLoseQuorum => ErrorCode::WouldLoseQuorum,
        Reject::NotBootstrapped => ErrorCode::Unavailable,
        Reject::LockHeld { .. } => ErrorCode::LockHeld,
        Reject::LockNotHeld { .. } => ErrorCode::LockNotHeld,
        Reject::CompareFailed { .. } => ErrorCode::CompareFailed,
        Reject::KvFull { .. } | Reject::TooManyLocks => ErrorCode::ResourceExhausted,
        _ => ErrorCode::InvalidArgument,
    };
    ApiError::new(code, r.to_string())
}

pub fn unavailable(m: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Unavailable, m)
}

/// The error for a write that was proposed and may have been applied, though its answer is lost.
pub fn outcome_unknown(m: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::OutcomeUnknown, m.to_string())
}

pub fn internal(m: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::Internal, m.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trip_keeps_code_and_leader() {
        let mut e = ApiError::new(ErrorCode::WouldLoseQuorum, "no");
        e.leader = Some("127.0.0.1:5".into());
        let back = from_status(&to_status(e.clone()));
        assert_eq!(back, e);
        let plain = from_status(&tonic::Status::unauthenticated("bad cookie"));
        assert_eq!(plain.code, ErrorCode::Unauthenticated);
        let down = from_status(&tonic::Status::unavailable("connection refused"));
        assert_eq!(down.code, ErrorCode::NodeDown);
    }
}
