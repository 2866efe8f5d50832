//! `StoreError`: why a data dir could not be opened or changed.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("data dir {path} is in use by another ekka agent")]
    Locked { path: PathBuf },
    #[error("data dir {path} is not empty and is not an ekka data dir (no {marker} file); refusing to use it")]
    Foreign { path: PathBuf, marker: &'static str },
    #[error("data dir {path} is corrupt: {message}; refusing to use it")]
    Corrupt { path: PathBuf, message: String },
    #[error("data dir {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("data dir {path}: storage error: {message}")]
    Db { path: PathBuf, message: String },
}
