//! ekka-proto: the generated gRPC code for `proto/ekka/v1` and its conversions to ekka-types.
//!
//! Conversions from protobuf are `TryFrom` and fail with [`ProtoError`] on a missing or unknown
//! field; nothing here unwraps a value that came from the network.

use ekka_types::{ApiError, ClusterStatus, ErrorCode, Event, EventKind, Member, Role, Status};

/// Generated protobuf and tonic code for package `ekka.v1`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("ekka.v1");
}

/// gRPC metadata key carrying the cluster cookie.
pub const COOKIE_HEADER: &str = "x-ekka-cookie";
/// gRPC metadata key carrying the caller's cluster id (16-digit hex), on peer RPCs.
pub const CLUSTER_HEADER: &str = "x-ekka-cluster";
/// gRPC metadata key carrying the error code of a failed call.
pub const ERROR_HEADER: &str = "x-ekka-error";
/// gRPC metadata key carrying the leader's address, when known.
pub const LEADER_HEADER: &str = "x-ekka-leader";
/// gRPC metadata key set on a request that was already forwarded once.
pub const FORWARDED_HEADER: &str = "x-ekka-forwarded";
/// gRPC metadata key naming the sending process on peer RPCs: `<incarnation hex>@<its address>`.
pub const SENDER_HEADER: &str = "x-ekka-sender";

/// The cookie used when none is configured; agents started with it log a warning.
pub const DEFAULT_COOKIE: &str = "ekka-default-cookie";

pub mod envelope;
pub mod tls;
pub use envelope::{payload_version_readable, MIN_PAYLOAD_VERSION, PAYLOAD_VERSION};

/// A protobuf message that does not convert to an ekka type.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("field {0} is missing")]
    Missing(&'static str),
    #[error("field {field} has an unknown value {value}")]
    Unknown { field: &'static str, value: i32 },
    #[error("field {field} is invalid: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

/// The ekka error code a status carries in its `ERROR_HEADER`, if it carries one.
pub fn ekka_code(st: &tonic::Status) -> Option<ErrorCode> {
    st.metadata()
        .get(ERROR_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<ErrorCode>().ok())
}

/// Reads an API error back from a gRPC status made by the server's `to_status`. A status without
/// an ekka error code is classified by its gRPC code; a transport failure (nothing answered) is
/// `node_down`.
pub fn error_from_status(st: &tonic::Status) -> ApiError {
    let code = ekka_code(st).unwrap_or(match st.code() {
        tonic::Code::Unauthenticated => ErrorCode::Unauthenticated,
        tonic::Code::InvalidArgument => ErrorCode::InvalidArgument,
        tonic::Code::Unavailable => ErrorCode::NodeDown,
        tonic::Code::DeadlineExceeded => ErrorCode::Unavailable,
        // No ekka code: the connection failed (h2 reset, "transport error", a process
        // killed mid-answer), never an internal error of the agent. Callers that sent a
        // write turn this into outcome_unknown first.
        tonic::Code::Unknown
        | tonic::Code::Internal
        | tonic::Code::Cancelled
        | tonic::Code::Aborted => ErrorCode::Unavailable,
        _ => ErrorCode::Internal,
    });
    let leader = st
        .metadata()
        .get(LEADER_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    ApiError {
        code,
        message: st.message().to_string(),
        leader,
    }
}

impl From<Role> for pb::Role {
    fn from(r: Role) -> Self {
        match r {
            Role::Voter => pb::Role::Voter,
            Role::Learner => pb::Role::Learner,
        }
    }
}

fn role_from_i32(v: i32) -> Result<Role, ProtoError> {
    match pb::Role::try_from(v) {
        Ok(pb::Role::Voter) => Ok(Role::Voter),
        Ok(pb::Role::Learner) => Ok(Role::Learner),
        Ok(pb::Role::Unspecified) => Err(ProtoError::Missing("role")),
        Err(_) => Err(ProtoError::Unknown {
            field: "role",
            value: v,
        }),
    }
}

impl From<Status> for pb::MemberStatus {
    fn from(s: Status) -> Self {
        match s {
            Status::Up => pb::MemberStatus::Up,
            Status::Down => pb::MemberStatus::Down,
            Status::Joining => pb::MemberStatus::Joining,
            Status::Leaving => pb::MemberStatus::Leaving,
        }
    }
}

fn status_from_i32(v: i32) -> Result<Status, ProtoError> {
    match pb::MemberStatus::try_from(v) {
        Ok(pb::MemberStatus::Up) => Ok(Status::Up),
        Ok(pb::MemberStatus::Down) => Ok(Status::Down),
        Ok(pb::MemberStatus::Joining) => Ok(Status::Joining),
        Ok(pb::MemberStatus::Leaving) => Ok(Status::Leaving),
        Ok(pb::MemberStatus::Unspecified) => Err(ProtoError::Missing("status")),
        Err(_) => Err(ProtoError::Unknown {
            field: "status",
            value: v,
        }),
    }
}

impl From<&Member> for pb::Member {
    fn from(m: &Member) -> Self {
        pb::Member {
            id: m.id,
            name: m.name.clone(),
            addr: m.addr.clone(),
            role: pb::Role::from(m.role) as i32,
            status: pb::MemberStatus::from(m.status) as i32,
            since_ms: m.since_ms,
            joined_at_ms: m.joined_at_ms,
        }
    }
}

impl TryFrom<pb::Member> for Member {
    type Error = ProtoError;

    fn try_from(m: pb::Member) -> Result<Self, ProtoError> {
        if m.name.is_empty() {
            return Err(ProtoError::Missing("member.name"));
        }
        Ok(Member {
            id: m.id,
            name: m.name,
            addr: m.addr,
            role: role_from_i32(m.role)?,
            status: status_from_i32(m.status)?,
            since_ms: m.since_ms,
            joined_at_ms: m.joined_at_ms,
        })
    }
}

impl From<&ClusterStatus> for pb::StatusReply {
    fn from(s: &ClusterStatus) -> Self {
        pb::StatusReply {
            cluster_id: s.cluster_id,
            node: Some(pb::NodeInfo {
                id: s.node_id,
                name: s.node_name.clone(),
                addr: s.node_addr.clone(),
            }),
            leader: s.leader.clone(),
            term: s.term,
            revision: s.revision,
            members: s.members.iter().map(pb::Member::from).collect(),
            stale: s.stale,
        }
    }
}

impl TryFrom<pb::StatusReply> for ClusterStatus {
    type Error = ProtoError;

    fn try_from(r: pb::StatusReply) -> Result<Self, ProtoError> {
        let node = r.node.ok_or(ProtoError::Missing("node"))?;
        let mut members = r
            .members
            .into_iter()
            .map(Member::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        members.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(ClusterStatus {
            cluster_id: r.cluster_id,
            node_id: node.id,
            node_name: node.name,
            node_addr: node.addr,
            leader: r.leader,
            term: r.term,
            revision: r.revision,
            members,
            stale: r.stale,
        })
    }
}

impl From<&Event> for pb::WatchEvent {
    fn from(e: &Event) -> Self {
        let (role, addr) = match &e.kind {
            EventKind::RoleChanged { role } => (Some(pb::Role::from(*role) as i32), None),
            EventKind::AddressChanged { addr } => (None, Some(addr.clone())),
            _ => (None, None),
        };
        pb::WatchEvent {
            revision: e.revision,
            event: e.kind.as_str().to_string(),
            id: e.id,
            name: e.name.clone(),
            status: pb::MemberStatus::from(e.status) as i32,
            role,
            addr,
        }
    }
}

impl TryFrom<pb::WatchEvent> for Event {
    type Error = ProtoError;

    fn try_from(w: pb::WatchEvent) -> Result<Self, ProtoError> {
        let kind = match w.event.as_str() {
            "member_joined" => EventKind::MemberJoined,
            "member_left" => EventKind::MemberLeft,
            "member_removed" => EventKind::MemberRemoved,
            "member_up" => EventKind::MemberUp,
            "member_down" => EventKind::MemberDown,
            "member_leaving" => EventKind::MemberLeaving,
            "leader_changed" => EventKind::LeaderChanged,
            "role_changed" => EventKind::RoleChanged {
                role: role_from_i32(w.role.ok_or(ProtoError::Missing("role"))?)?,
            },
            "address_changed" => EventKind::AddressChanged {
                addr: w.addr.ok_or(ProtoError::Missing("addr"))?,
            },
            other => {
                return Err(ProtoError::Invalid {
                    field: "event",
                    message: format!("unknown event {other:?}"),
                })
            }
        };
        Ok(Event {
            revision: w.revision,
            id: w.id,
            name: w.name,
            kind,
            status: status_from_i32(w.status)?,
        })
    }
}

/// Whether a failed call without an ekka error code certainly never reached the agent: the
/// connection could not be made (refused, no route, bad name), or the status is one the agent or
/// tonic gives before a request is handled (a wrong cookie, a malformed request).
pub fn never_sent(st: &tonic::Status) -> bool {
    use tonic::Code;
    if !matches!(
        st.code(),
        Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled | Code::Aborted
    ) {
        return true;
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(st);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused
                    | AddrNotAvailable
                    | NotFound
                    | HostUnreachable
                    | NetworkUnreachable
            ) {
                return true;
            }
        }
        let text = e.to_string();
        if [
            "tcp connect error",
            "dns error",
            "error trying to connect",
            "Connection refused",
        ]
        .iter()
        .any(|m| text.contains(m))
        {
            return true;
        }
        cur = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member() -> Member {
        Member {
            id: 42,
            name: "n1".into(),
            addr: "127.0.0.1:4370".into(),
            role: Role::Learner,
            status: Status::Joining,
            since_ms: 5,
            joined_at_ms: 3,
        }
    }

    #[test]
    fn events_round_trip() {
        for kind in [
            EventKind::MemberDown,
            EventKind::LeaderChanged,
            EventKind::RoleChanged { role: Role::Voter },
            EventKind::AddressChanged {
                addr: "127.0.0.1:9".into(),
            },
        ] {
            let e = Event {
                revision: 7,
                id: 3,
                name: "n3".into(),
                kind,
                status: Status::Up,
            };
            assert_eq!(Event::try_from(pb::WatchEvent::from(&e)), Ok(e));
        }
        let mut bad = pb::WatchEvent::from(&Event {
            revision: 1,
            id: 1,
            name: "n".into(),
            kind: EventKind::MemberUp,
            status: Status::Up,
        });
        bad.event = "member_exploded".into();
        assert!(Event::try_from(bad).is_err());
    }

    #[test]
    fn member_round_trips() {
        let m = member();
        assert_eq!(Member::try_from(pb::Member::from(&m)), Ok(m));
    }

    #[test]
    fn missing_and_unknown_fields_are_errors() {
        let mut p = pb::Member::from(&member());
        p.role = 0;
        assert_eq!(
            Member::try_from(p.clone()),
            Err(ProtoError::Missing("role"))
        );
        p.role = 99;
        assert!(matches!(
            Member::try_from(p),
            Err(ProtoError::Unknown { field: "role", .. })
        ));
        let reply = pb::StatusReply::default();
        assert_eq!(
            ClusterStatus::try_from(reply),
            Err(ProtoError::Missing("node"))
        );
    }
}
