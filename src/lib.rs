//! ekka: Raft-based cluster membership for Rust services and the `ekka` agent.
//!
//! Embed a [`Node`] to get strongly-consistent cluster state (members with roles and statuses,
//! join / leave / force-leave with ekka's semantics, callbacks) without running anything else, or
//! run the `ekka` binary and drive it with [`Client`] or the CLI. See `README.md` and
//! `ARCHITECTURE.md`.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() -> Result<(), ekka::ApiError> {
//! let dir = tempfile::tempdir().unwrap();
//! let mut config = ekka::NodeConfig::new("n1", dir.path());
//! config.listen = "127.0.0.1:0".into();
//! let node = ekka::Node::start(config).await?;
//! node.on_reboot(|| println!("membership changed"));
//! let status = node.status().await?;
//! assert_eq!(status.running_nodes(), ["n1"]);
//! node.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub use ekka_client::{Client, KvWatcher, LockGrant, Outcome, Tls, TlsFiles, Watcher};
pub use ekka_node::{
    Action, ForceLeaveOutcome, JoinOutcome, LocalLocks, LockGuard, Node, NodeConfig, Read,
};
pub use ekka_types::{ApiError, ClusterStatus, ErrorCode, Event, EventKind, Member, Role, Status};

/// The core model: ids, members, commands and the state machine.
pub use ekka_types as types;

/// The README's Rust examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
