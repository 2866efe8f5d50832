//! ekka-node: a running ekka node. openraft wiring over `ekka-store`, the tonic transport and
//! services, join / leave / force-leave with ekka's semantics, the leader's status monitor, and
//! the embedding API ([`Node`]).

mod autocluster;
mod compaction;
mod config;
mod data;
mod error;
mod fault;
mod monitor;
mod network;
mod node;
mod recover;
mod server;

pub use compaction::LogStats;
pub use config::{
    Discovery, NodeConfig, DEFAULT_COOKIE, DEFAULT_SNAPSHOT_LOG_BYTES, MIN_SNAPSHOT_LOG_BYTES,
};
pub use data::{KvRange, LocalLocks, LockGrant, LockGuard, Read};
pub use ekka_discovery as discovery;
pub use error::{from_status, to_status};
pub use node::{Action, ForceLeaveOutcome, JoinOutcome, Node};
pub use recover::{recover, RecoverReport};
