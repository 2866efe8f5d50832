//! Membership events: one per committed change, numbered by the revision that made it.

use serde::{Deserialize, Serialize};

use crate::id::NodeId;
use crate::member::{Role, Status};

/// What changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum EventKind {
    MemberJoined,
    MemberLeft,
    MemberRemoved,
    MemberUp,
    MemberDown,
    MemberLeaving,
    RoleChanged { role: Role },
    AddressChanged { addr: String },
    LeaderChanged,
}

impl EventKind {
    /// The event's name in CONTRACT.md (`member_joined`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::MemberJoined => "member_joined",
            EventKind::MemberLeft => "member_left",
            EventKind::MemberRemoved => "member_removed",
            EventKind::MemberUp => "member_up",
            EventKind::MemberDown => "member_down",
            EventKind::MemberLeaving => "member_leaving",
            EventKind::RoleChanged { .. } => "role_changed",
            EventKind::AddressChanged { .. } => "address_changed",
            EventKind::LeaderChanged => "leader_changed",
        }
    }
}

/// One committed change to a member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub revision: u64,
    pub id: NodeId,
    pub name: String,
    #[serde(flatten)]
    pub kind: EventKind,
    pub status: Status,
}
