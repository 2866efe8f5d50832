//! ekka-node: a running ekka node. openraft wiring over `ekka-store`, the tonic transport and
//! services, join / leave / force-leave with ekka's semantics, the leader's status monitor, and
//! the embedding API ([`Node`]).
//!
//! The modules, bottom up (each uses only those above it; ARCHITECTURE.md has the map):
//! `config`, `error`, `timings`; `transport::{pool, network}`; `runtime` (the Raft core, the
//! leader's side of every request, faults, compaction); `watch`; `membership` and `data`;
//! `transport::server`; `node` (the facade); `recover` (offline).

mod config;
mod data;
mod error;
mod membership;
mod node;
mod recover;
mod runtime;
mod timings;
mod transport;
mod watch;

pub use config::{
    Discovery, NodeConfig, DEFAULT_COOKIE, DEFAULT_SNAPSHOT_LOG_BYTES, MIN_SNAPSHOT_LOG_BYTES,
};
pub use data::{LocalLocks, Read};
pub use ekka_discovery as discovery;
pub use ekka_types::{KvRange, LockGrant};
pub use error::{from_status, to_status};
pub use membership::{ForceLeaveOutcome, JoinOutcome};
pub use node::data_api::LockGuard;
pub use node::Node;
pub use recover::{recover, RecoverReport};
pub use runtime::compaction::LogStats;
pub use runtime::core::Action;
