//! ekka-store: the openraft type configuration, the data dir, and the sled-backed log store and
//! state machine (openraft storage-v2). Only this crate imports sled.
//!
//! - [`DataDir`]: the locked data dir: node id, cluster id, reset, and the sled db.
//! - [`LogStore`]: `RaftLogStorage` (entries, vote, committed, purge point).
//! - [`StateMachineStore`]: `RaftStateMachine` over an in-memory `ClusterState`, persisted as
//!   snapshots; openraft replays the committed entries after the snapshot at startup.
//!
//! Durability: every acknowledged write is flushed with sled's `flush` (on one flusher thread per
//! data dir, which serves all flushes waiting at once with one), which survives the process
//! being killed. A log entry counts toward a commit, and is applied, only once it is flushed
//! (see [`LogStore`]). sled 0.34 flushes with `sync_file_range`, not `fsync` (sled #1452), so a
//! power loss may still lose recent writes; quorum replication covers that.

mod data_dir;
mod error;
mod flusher;
mod log_store;
mod state_machine;

use std::io::Cursor;

pub use data_dir::DataDir;
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
