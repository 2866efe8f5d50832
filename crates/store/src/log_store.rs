//! `LogStore`: openraft's log storage (storage-v2) on sled: entries, vote, committed, last purged.
//!
//! Entries are serde_json in the `log` tree under their index (u64 big-endian), checked against
//! [`MAX_ENTRY_BYTES`] when written and when read. The vote, the committed log id and the last
//! purged log id are in the `raft` tree. All writes go through one async mutex, so they reach sled
//! in the order openraft issued them; every write says below whether it is flushed before
//! returning (or before openraft is told it is done).
//!
//! `append` writes the entries (readable at once), flushes, and only then reports them to openraft.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use ekka_types::limits::MAX_ENTRY_BYTES;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::data_dir::{TREE_LOG, TREE_RAFT};
use crate::{NodeId, TypeConfig};

/// Keys in the `raft` tree.
const K_VOTE: &[u8] = b"vote";
const K_COMMITTED: &[u8] = b"committed";
const K_PURGED: &[u8] = b"last_purged";

/// The Raft log on sled. Cheap to clone; clones share the trees and the write lock.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    raft: sled::Tree,
    log: sled::Tree,
    /// All write I/O is serialized (openraft's rule).
    write: tokio::sync::Mutex<()>,
}

fn io_err(e: impl std::error::Error + 'static) -> AnyError {
    AnyError::new(&e)
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, AnyError> {
    let b = serde_json::to_vec(v).map_err(io_err)?;
    if b.len() > MAX_ENTRY_BYTES {
        return Err(AnyError::error(format!(
            "record of {} bytes is over the {MAX_ENTRY_BYTES} limit",
            b.len()
        )));
    }
    Ok(b)
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, AnyError> {
    if b.len() > MAX_ENTRY_BYTES {
        return Err(AnyError::error(format!(
            "record of {} bytes is over the {MAX_ENTRY_BYTES} limit",
            b.len()
        )));
    }
    serde_json::from_slice(b).map_err(io_err)
}

fn idx_key(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

impl LogStore {
    pub(crate) fn open(db: &sled::Db) -> Result<LogStore, String> {
        let store = LogStore {
            inner: Arc::new(Inner {
                db: db.clone(),
                raft: db.open_tree(TREE_RAFT).map_err(|e| e.to_string())?,
                log: db.open_tree(TREE_LOG).map_err(|e| e.to_string())?,
                write: tokio::sync::Mutex::new(()),
            }),
        };
        // A purge persists its purge point before deleting; finish one a crash interrupted.
        let purged: Option<LogId<NodeId>> = store.get(K_PURGED).map_err(|e| e.to_string())?;
        if let Some(p) = purged {
            store
                .delete_up_to(p.index)
                .map_err(|e| format!("finishing a purge: {e}"))?;
        }
        Ok(store)
    }

    /// Deletes the entries at or below `index`, from the front. Not flushed: entries at or below
    /// the persisted purge point are never read, and the next open deletes them again.
    fn delete_up_to(&self, index: u64) -> Result<(), sled::Error> {
        let keys: Vec<sled::IVec> = self
            .inner
            .log
            .range(..=idx_key(index))
            .keys()
            .collect::<Result<_, _>>()?;
        for k in keys {
            self.inner.log.remove(k)?;
        }
        Ok(())
    }

    fn get<T: DeserializeOwned>(&self, k: &[u8]) -> Result<Option<T>, AnyError> {
        match self.inner.raft.get(k).map_err(io_err)? {
            None => Ok(None),
            Some(v) => decode(&v).map(Some),
        }
    }

    async fn put<T: Serialize>(&self, k: &[u8], v: &T) -> Result<(), AnyError> {
        self.inner.raft.insert(k, encode(v)?).map_err(io_err)?;
        // Flushed before returning.
        self.inner.db.flush_async().await.map_err(io_err)?;
        Ok(())
    }

    fn last_entry_id(&self) -> Result<Option<LogId<NodeId>>, AnyError> {
        match self.inner.log.last().map_err(io_err)? {
            None => Ok(None),
            Some((_, v)) => {
                let e: Entry<TypeConfig> = decode(&v)?;
                Ok(Some(e.log_id))
            }
        }
    }
}

impl LogStore {
    /// Appends `entries` and returns once they are durable: the write path of openraft's
    /// `append`, for tools and tests that have no openraft callback.
    pub async fn append_flushed(
        &self,
        entries: impl IntoIterator<Item = Entry<TypeConfig>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.write_entries(entries)
            .await?
            .map_err(|e| StorageIOError::write_logs(io_err(e)).into())
    }

    /// Writes a batch (readable on return) and flushes it; the outer error is a write failure,
    /// the inner one a flush failure (what the openraft callback reports).
    async fn write_entries(
        &self,
        entries: impl IntoIterator<Item = Entry<TypeConfig>>,
    ) -> Result<Result<(), std::io::Error>, StorageError<NodeId>> {
        let _w = self.inner.write.lock().await;
        let mut batch = sled::Batch::default();
        for e in entries {
            let v = encode(&e).map_err(|err| StorageIOError::write_log_entry(e.log_id, err))?;
            batch.insert(&idx_key(e.log_id.index), v);
        }
        self.inner
            .log
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(io_err(e)))?;
        // Readable now; durable after this flush, and only then acknowledged. openraft 0.9
        // replicates an entry only once the leader reports it flushed, so the flush is on every
        // write's path; it runs on sled's I/O threads so that the runtime's thread goes on
        // serving the network meanwhile (the agent runs on one runtime thread). Concurrent
        // client writes already share one entry (the node's batcher), and a follower appends
        // whole batches.
        let r = self.inner.db.flush_async().await;
        Ok(r.map(|_| ()).map_err(std::io::Error::other))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => match i.checked_add(1) {
                Some(s) => s,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) if *i < start => return Ok(Vec::new()),
            Bound::Excluded(i) if *i <= start => return Ok(Vec::new()),
            Bound::Included(i) => Bound::Included(idx_key(*i)),
            Bound::Excluded(i) => Bound::Excluded(idx_key(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for kv in self
            .inner
            .log
            .range::<[u8; 8], _>((Bound::Included(idx_key(start)), end))
        {
            let (_, v) = kv.map_err(|e| StorageIOError::read_logs(io_err(e)))?;
            out.push(decode(&v).map_err(StorageIOError::read_logs)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let purged: Option<LogId<NodeId>> =
            self.get(K_PURGED).map_err(StorageIOError::read_logs)?;
        let last = self.last_entry_id().map_err(StorageIOError::read_logs)?;
        Ok(LogState {
            last_purged_log_id: purged,
            // Entries at or below the purge point are deleted at open, so `last` is newer when
            // present; max() keeps the contract even if it were not.
            last_log_id: last.max(purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let _w = self.inner.write.lock().await;
        // Flushed (by put): a vote must never be forgotten.
        self.put(K_VOTE, vote)
            .await
            .map_err(StorageIOError::write_vote)?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.get(K_VOTE).map_err(StorageIOError::read_vote)?)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        let _w = self.inner.write.lock().await;
        // Written, not flushed: it becomes durable with the next flush (the next append's, or
        // sled's periodic one). A restart, and `ekka recover` without any peer, replay the state
        // machine up to what reached the disk; a lost tail is only re-learned from the leader or
        // left uncommitted, never wrongly applied. Flushing here would put an fsync on every
        // commit in openraft's core loop.
        let v = encode(&committed).map_err(StorageIOError::write)?;
        self.inner
            .raft
            .insert(K_COMMITTED, v)
            .map_err(|e| StorageIOError::write(io_err(e)))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        let c: Option<Option<LogId<NodeId>>> =
            self.get(K_COMMITTED).map_err(StorageIOError::read)?;
        Ok(c.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let r = self.write_entries(entries).await?;
        callback.log_io_completed(r);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let _w = self.inner.write.lock().await;
        // Delete from the back so a crash never leaves a hole.
        let keys: Vec<sled::IVec> = self
            .inner
            .log
            .range(idx_key(log_id.index)..)
            .keys()
            .collect::<Result<_, _>>()
            .map_err(|e| StorageIOError::write_logs(io_err(e)))?;
        for k in keys.into_iter().rev() {
            self.inner
                .log
                .remove(k)
                .map_err(|e| StorageIOError::write_logs(io_err(e)))?;
        }
        // Flushed before returning.
        self.inner
            .db
            .flush_async()
            .await
            .map_err(|e| StorageIOError::write_logs(io_err(e)))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let _w = self.inner.write.lock().await;
        // Record the purge point first (flushed by put), then delete from the front (not
        // flushed: see delete_up_to).
        self.put(K_PURGED, &log_id)
            .await
            .map_err(StorageIOError::write_logs)?;
        self.delete_up_to(log_id.index)
            .map_err(|e| StorageIOError::write_logs(io_err(e)))?;
        Ok(())
    }
}
