//! What applying a command gives back: `Response` (the command's revision and `Outcome`, or the
//! `Reject` that refused it), one `OpResult` per command of a batch, and the revision scheme.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::id::NodeId;

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
            Reject::NoSuchMember { id } => {
                write!(f, "no member with id {}", crate::id::fmt_id(*id))
            }
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
