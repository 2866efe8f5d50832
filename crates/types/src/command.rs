//! `Request` (a leader-stamped `Command`), the membership and data commands it carries.

use serde::{Deserialize, Serialize};

use crate::id::{ClusterId, NodeId};
use crate::kv::KvOp;
use crate::lock::LockOp;

/// What a log entry asks the state machine to do, with the time the leader stamped on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Leader's wall clock when it proposed the entry, ms since the Unix epoch.
    pub now_ms: u64,
    pub cmd: Command,
}

/// Why a member is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoveReason {
    /// The member asked to leave.
    Left,
    /// Another member force-removed it, or it was replaced by a node of the same name.
    Removed,
}

/// A change to the cluster state. Only the leader proposes commands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// First entry of a new cluster: records its id and its first member (a voter, up).
    Bootstrap {
        cluster_id: ClusterId,
        id: NodeId,
        name: String,
        addr: String,
        max_voters: u32,
    },
    /// Adds a member as a `joining` learner. A down member with the same name is replaced.
    AddMember {
        id: NodeId,
        name: String,
        addr: String,
    },
    /// Marks a member up, optionally recording a new address.
    MarkUp { id: NodeId, addr: Option<String> },
    /// Marks a member down.
    MarkDown { id: NodeId },
    /// Marks a member as leaving (it asked to leave; removal follows).
    MarkLeaving { id: NodeId },
    /// Mirrors the Raft voter and learner sets into the members' roles.
    SetRoles {
        voters: Vec<NodeId>,
        learners: Vec<NodeId>,
    },
    /// Removes a member.
    RemoveMember { id: NodeId, reason: RemoveReason },
    /// Changes nothing but the revision.
    Noop,
    /// Sets the cluster's autoclean delay: members down this long are removed by the leader
    /// (`0` turns autoclean off). Until set, each leader uses its configured default.
    SetAutoclean { ms: u64 },
    /// A lock operation.
    Lock(LockOp),
    /// A key-value write.
    Kv(KvOp),
    /// Expires the leases and lock waits that ran out by the entry's time (the leader's tick).
    ExpireLocks,
    /// Lock and key-value commands of several clients in one entry, applied in order, each
    /// accepted or refused on its own (`Outcome::Batch`).
    Batch(Vec<DataCommand>),
}

/// A client's lock or key-value command: all a batch can hold. Its variants are encoded as
/// [`Command`]'s of the same names, so a batch entry written before this type existed reads back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataCommand {
    Lock(LockOp),
    Kv(KvOp),
}

impl TryFrom<Command> for DataCommand {
    /// The command itself, when it is not a client's lock or key-value command.
    type Error = Command;

    fn try_from(c: Command) -> Result<DataCommand, Command> {
        match c {
            Command::Lock(op) => Ok(DataCommand::Lock(op)),
            Command::Kv(op) => Ok(DataCommand::Kv(op)),
            other => Err(other),
        }
    }
}

impl From<DataCommand> for Command {
    fn from(c: DataCommand) -> Command {
        match c {
            DataCommand::Lock(op) => Command::Lock(op),
            DataCommand::Kv(op) => Command::Kv(op),
        }
    }
}

impl Command {
    /// A lock or key-value command: what clients may propose through the data API.
    pub fn is_data(&self) -> bool {
        matches!(
            self,
            Command::Lock(_) | Command::Kv(_) | Command::ExpireLocks | Command::Batch(_)
        )
    }
}
