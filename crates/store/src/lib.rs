//! ekka-store: the openraft type configuration, the data dir, and the sled-backed log store and
//! state machine (openraft storage-v2). Only this crate imports sled.
//!
//! - [`DataDir`]: the locked data dir: node id, cluster id, reset, and the sled db.
//! - [`LogStore`]: `RaftLogStorage` (entries, vote, committed, purge point).
//! - [`StateMachineStore`]: `RaftStateMachine` over an in-memory `ClusterState`, persisted as
//!   snapshots; openraft replays the committed entries after the snapshot at startup.
//!
//! Durability: every acknowledged write is on the device: sled's `flush` (which only calls
//! `sync_file_range`) is followed by `fdatasync` of sled's log file and `fsync` of every new file
//! and directory entry (`sync.rs`), on one flusher thread per data dir that serves every flush
//! waiting at once with one (group commit). A log entry counts toward a commit, and is applied,
//! only once it is durable (see [`LogStore`]); the vote before it is acknowledged. A damaged
//! store is refused at open, untouched (`check.rs`, `watermark.rs`).

mod check;
mod data_dir;
mod error;
mod flusher;
mod log_store;
mod state_machine;
mod sync;
mod watermark;

use std::io::Cursor;

pub use data_dir::{DataDir, JoinIntent};
pub use error::StoreError;
pub use log_store::LogStore;
pub use state_machine::{SharedState, StateMachineStore};

/// A node id (random, kept in the data dir).
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// openraft's type configuration for ekka.
    pub TypeConfig:
        D = ekka_types::Request,
        R = ekka_types::Response,
        NodeId = u64,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// The Raft instance type.
pub type Raft = openraft::Raft<TypeConfig>;
