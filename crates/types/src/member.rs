//! `Member`: one node as the cluster records it, with its role and status.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::id::{fmt_id, NodeId};

/// A member's role in consensus. Mirrors openraft's voter and learner sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Voter,
    Learner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Voter => "voter",
            Role::Learner => "learner",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A member's status as committed by the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Up,
    Down,
    Joining,
    Leaving,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Up => "up",
            Status::Down => "down",
            Status::Joining => "joining",
            Status::Leaving => "leaving",
        }
    }

    /// Whether the member counts as running (ekka's `running_nodes`).
    pub fn is_running(self) -> bool {
        !matches!(self, Status::Down)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One member of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    pub name: String,
    pub addr: String,
    pub role: Role,
    pub status: Status,
    /// Leader-stamped time of the last status change, ms since the Unix epoch.
    pub since_ms: u64,
    /// Leader-stamped time the member was added, ms since the Unix epoch.
    pub joined_at_ms: u64,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}({}) {} {} {}",
            self.name,
            fmt_id(self.id),
            self.addr,
            self.role,
            self.status
        )
    }
}
