//! ekka-types: the pure core of ekka-rs: identities, members, commands and `ClusterState::apply`.
//!
//! Nothing in this crate reads a clock, a random source, the disk or the network: time enters only
//! as the leader-stamped `now_ms` of a [`Request`], so every replica that applies the same log
//! reaches the same state.

pub mod check;
pub mod command;
pub mod error;
pub mod event;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod id;
pub mod kv;
pub mod limits;
pub mod lock;
pub mod member;
pub mod outcome;
pub mod state;
pub mod status;
pub mod time;

pub use command::{Command, DataCommand, RemoveReason, Request};
pub use error::{ApiError, ErrorCode};
pub use event::{Event, EventKind};
pub use id::{fmt_id, parse_id, ClusterId, NodeId};
pub use kv::{KvEntry, KvEvent, KvOp, KvRange, KvSpace, Value};
pub use lock::{Lock, LockGrant, LockOp, LockTable, Waiter};
pub use member::{Member, Role, Status};
pub use outcome::{op_revision, OpResult, Outcome, Reject, Response};
pub use state::ClusterState;
pub use status::ClusterStatus;
pub use time::millis;
