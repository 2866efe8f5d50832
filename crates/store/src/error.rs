//! `StoreError`: why a data dir could not be opened or changed. Every variant names the dir.
//!
//! Errors inside openraft's storage traits are openraft `StorageError`s instead (see
//! `log_store.rs` and `state_machine.rs`); this enum is for the data dir's own operations.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (or another `DataDir` in this one) holds the dir's `LOCK`.
    #[error("data dir {path} is in use by another ekka agent")]
    Locked { path: PathBuf },
    /// The dir is not empty and has no marker file: it is someone else's; it is left untouched.
    #[error(
        "data dir {path} is not empty and is not an ekka data dir (no {marker} file); \
         refusing to use it"
    )]
    Foreign { path: PathBuf, marker: &'static str },
    /// The dir is ours but its contents cannot be read; it is left untouched.
    #[error("data dir {path} is corrupt: {message}; refusing to use it")]
    Corrupt { path: PathBuf, message: String },
    /// The store's bytes changed, or its log is shorter than what it had made durable; the dir
    /// is left untouched. The text starts with the path and `damaged store:` (CONTRACT.md).
    #[error(
        "{path}: damaged store: {what}. The data dir was left as it is: move it aside and start \
         this node with an empty data dir to rejoin its cluster as a new member, or, if no \
         quorum is left, run `ekka cluster recover` on a surviving member's data dir"
    )]
    Damaged { path: PathBuf, what: String },
    /// A file system operation on the dir failed.
    #[error("data dir {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// sled failed while reading or writing the dir's database.
    #[error("data dir {path}: storage error: {message}")]
    Db { path: PathBuf, message: String },
}
