//! `DataDir`: an exclusively locked ekka data dir holding the node's identity and its sled db.
//!
//! Layout: `EKKA_DATA` (marker with the format version), `LOCK` (flock held while open), `db/`
//! (sled). sled trees: `meta` (format, node id, cluster id), `raft` (vote, committed, last purged),
//! `log` (entries by big-endian index), `sm` (the last snapshot).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use fs2::FileExt;
use rand::Rng;

use crate::error::StoreError;
use crate::log_store::LogStore;
use crate::state_machine::StateMachineStore;

pub(crate) const MARKER: &str = "EKKA_DATA";
const MARKER_TEXT: &str = "ekka-rs data dir, format 1\n";
const FORMAT: &[u8] = b"1";

/// sled keys in the `meta` tree.
const K_FORMAT: &[u8] = b"format";
const K_NODE_ID: &[u8] = b"node_id";
const K_CLUSTER_ID: &[u8] = b"cluster_id";

/// An open, locked data dir. Dropping it releases the lock.
pub struct DataDir {
    path: PathBuf,
    _lock: File,
    pub(crate) db: sled::Db,
    meta: sled::Tree,
}

impl DataDir {
    /// Opens (creating if missing) and locks the data dir at `path`.
    ///
    /// A non-empty directory without the marker is refused as foreign; a directory whose
    /// database cannot be read is refused as corrupt; neither is ever modified.
    pub fn open(path: &Path) -> Result<DataDir, StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(path).map_err(io)?;
        let marker = path.join(MARKER);
        if !marker.exists() {
            let mut entries = std::fs::read_dir(path).map_err(io)?;
            if entries.next().is_some() {
                return Err(StoreError::Foreign {
                    path: path.to_path_buf(),
                    marker: MARKER,
                });
            }
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join("LOCK"))
            .map_err(io)?;
        if lock.try_lock_exclusive().is_err() {
            return Err(StoreError::Locked {
                path: path.to_path_buf(),
            });
        }
        let fresh = !marker.exists();
        if fresh {
            // Flushed: the marker must exist before the db so a crash leaves a recognisable dir.
            std::fs::write(&marker, MARKER_TEXT).map_err(io)?;
            File::open(&marker).and_then(|f| f.sync_all()).map_err(io)?;
        } else {
            let text = std::fs::read_to_string(&marker).map_err(io)?;
            if text != MARKER_TEXT {
                return Err(StoreError::Corrupt {
                    path: path.to_path_buf(),
                    message: format!("unknown marker {:?}", text.trim()),
                });
            }
        }
        let corrupt = |message: String| StoreError::Corrupt {
            path: path.to_path_buf(),
            message,
        };
        let db_path = path.join("db");
        if !fresh && !db_path.exists() {
            return Err(corrupt("the db directory is missing".into()));
        }
        let db = sled::Config::new()
            .path(&db_path)
            .cache_capacity(16 * 1024 * 1024)
            .open()
            .map_err(|e| corrupt(format!("sled: {e}")))?;
        let meta = db
            .open_tree("meta")
            .map_err(|e| corrupt(format!("sled: {e}")))?;
        let dir = DataDir {
            path: path.to_path_buf(),
            _lock: lock,
            db,
            meta,
        };
        match dir.meta.get(K_FORMAT).map_err(|e| corrupt(e.to_string()))? {
            Some(f) if f.as_ref() == FORMAT => {}
            Some(f) => return Err(corrupt(format!("unknown format {:?}", f.as_ref()))),
            None if fresh => {
                dir.put_meta(K_FORMAT, FORMAT)?;
            }
            None => return Err(corrupt("no format record".into())),
        }
        match dir.read_u64(K_NODE_ID)? {
            Some(id) if id != 0 => {}
            Some(_) => return Err(corrupt("node id 0".into())),
            None if fresh => {
                dir.put_u64(K_NODE_ID, random_id())?;
            }
            None => return Err(corrupt("no node id".into())),
        }
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn db_err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Db {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn corrupt(&self, message: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            message: message.into(),
        }
    }

    fn put_meta(&self, k: &[u8], v: &[u8]) -> Result<(), StoreError> {
        self.meta.insert(k, v).map_err(|e| self.db_err(e))?;
        // Flushed before returning: identity must survive a crash.
        self.db.flush().map_err(|e| self.db_err(e))?;
        Ok(())
    }

    fn put_u64(&self, k: &[u8], v: u64) -> Result<(), StoreError> {
        self.put_meta(k, &v.to_be_bytes())
    }

    fn read_u64(&self, k: &[u8]) -> Result<Option<u64>, StoreError> {
        match self.meta.get(k).map_err(|e| self.db_err(e))? {
            None => Ok(None),
            Some(v) => {
                let b: [u8; 8] = v.as_ref().try_into().map_err(|_| {
                    self.corrupt(format!("{} is not 8 bytes", String::from_utf8_lossy(k)))
                })?;
                Ok(Some(u64::from_be_bytes(b)))
            }
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        // Checked non-zero and readable at open; a later read failure is reported as 0, which no
        // node ever uses.
        self.read_u64(K_NODE_ID).ok().flatten().unwrap_or(0)
    }

    /// Sets the node id (used to keep the id across a reset when joining another cluster).
    pub fn set_node_id(&self, id: u64) -> Result<(), StoreError> {
        assert!(id != 0, "node id 0 is reserved");
        self.put_u64(K_NODE_ID, id)
    }

    /// The cluster this node belongs to, 0 for none yet.
    pub fn cluster_id(&self) -> u64 {
        self.read_u64(K_CLUSTER_ID).ok().flatten().unwrap_or(0)
    }

    pub fn set_cluster_id(&self, id: u64) -> Result<(), StoreError> {
        self.put_u64(K_CLUSTER_ID, id)
    }

    /// New openraft store handles over this dir's db. Call again after a [`DataDir::reset`].
    pub fn open_stores(&self) -> Result<(LogStore, StateMachineStore), StoreError> {
        let log = LogStore::open(&self.db).map_err(|e| self.db_err(e))?;
        let sm = StateMachineStore::open(&self.db).map_err(|e| self.corrupt(e))?;
        Ok((log, sm))
    }

    /// Wipes vote, log, snapshot and cluster id, and gives the node a new id (returned). Only
    /// while no Raft instance runs on this dir's stores.
    pub fn reset(&self) -> Result<u64, StoreError> {
        for t in ["raft", "log", "sm"] {
            let tree = self.db.open_tree(t).map_err(|e| self.db_err(e))?;
            tree.clear().map_err(|e| self.db_err(e))?;
        }
        self.meta.remove(K_CLUSTER_ID).map_err(|e| self.db_err(e))?;
        let id = random_id();
        // put_u64 flushes: the wipe and the new id are durable together.
        self.put_u64(K_NODE_ID, id)?;
        Ok(id)
    }
}

fn random_id() -> u64 {
    rand::thread_rng().gen_range(1..=u64::MAX)
}
