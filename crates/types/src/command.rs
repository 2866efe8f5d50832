//! `Request` (a leader-stamped `Command`), `Response` and the reasons a command is rejected.

use serde::{Deserialize, Serialize};
use std::fmt;

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

/// Why the state machine refused a command. The state is unchanged when it does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reject {
    NotBootstrapped,
    AlreadyBootstrapped,
    NameInUse {
        name: String,
    },
    NoSuchMember {
        id: NodeId,
    },
    TooManyMembers,
    TooManyVoters {
        max_voters: u32,
    },
    WouldLoseQuorum,
    InvalidArgument {
        message: String,
    },
    LockHeld {
        resource: String,
    },
    LockNotHeld {
        resource: String,
    },
    TooManyLocks,
    /// `cas`: the key's revision is `revision` (0: absent), not the one expected.
    CompareFailed {
        key: String,
        revision: u64,
    },
    KvFull {
        message: String,
    },
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reject::NotBootstrapped => f.write_str("the cluster is not bootstrapped"),
            Reject::AlreadyBootstrapped => f.write_str("the cluster is already bootstrapped"),
            Reject::NameInUse { name } => write!(f, "an up member is already named {name}"),
            Reject::NoSuchMember { id } => write!(f, "no member with id {}", crate::fmt_id(*id)),
            Reject::TooManyMembers => write!(
                f,
                "the cluster already has {} members",
                crate::limits::MAX_MEMBERS
            ),
            Reject::TooManyVoters { max_voters } => {
                write!(f, "more than max_voters ({max_voters}) voters")
            }
            Reject::WouldLoseQuorum => {
                f.write_str("the change would leave fewer up voters than the quorum")
            }
            Reject::InvalidArgument { message } => f.write_str(message),
            Reject::LockHeld { resource } => write!(f, "{resource} is held by another owner"),
            Reject::LockNotHeld { resource } => {
                write!(f, "this token does not hold {resource}")
            }
            Reject::TooManyLocks => {
                write!(f, "{} locks are already held", crate::limits::MAX_LOCKS)
            }
            Reject::CompareFailed { key, revision } => {
                write!(f, "{key} is at revision {revision}")
            }
            Reject::KvFull { message } => f.write_str(message),
        }
    }
}

/// The result of applying one entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The revision (log index) of the entry.
    pub revision: u64,
    /// `None` when the command was applied; the reason when it was refused.
    pub rejected: Option<Reject>,
    /// What an applied lock or key-value command produced.
    #[serde(default)]
    pub outcome: Outcome,
}

/// What an applied data command produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    #[default]
    None,
    /// The lock is held with `token` until `expires_ms` (leader time).
    Granted {
        token: u64,
        expires_ms: u64,
    },
    /// The acquirer waits in line at `position` (0: next).
    Queued {
        position: u32,
    },
    Renewed {
        expires_ms: u64,
    },
    Released,
    /// A put; `prev_revision` is the key's previous `mod_revision` (0: it was new).
    Put {
        prev_revision: u64,
    },
    Deleted {
        existed: bool,
    },
    /// The results of a `Batch`, one per command, in order.
    Batch(Vec<OpResult>),
}

/// One command's result inside a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpResult {
    /// The operation's revision: `log index × OPS_PER_ENTRY + position`.
    pub revision: u64,
    pub rejected: Option<Reject>,
    pub outcome: Outcome,
}

/// The revision of the `k`-th operation of the entry at `log_idx`.
pub fn op_revision(log_idx: u64, k: usize) -> u64 {
    log_idx
        .saturating_mul(crate::limits::OPS_PER_ENTRY)
        .saturating_add(k as u64)
}

impl Response {
    pub fn is_ok(&self) -> bool {
        self.rejected.is_none()
    }
}
