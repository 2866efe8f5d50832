//! `LogStore`: openraft's log storage (storage-v2) on sled: entries, vote, committed, last purged.
//!
//! Entries are in `ekka_codec`'s format (MessagePack; data dirs written before it hold
//! JSON, which still reads) in the `log` tree under their index (u64 big-endian), checked against
//! [`MAX_ENTRY_BYTES`] when written and when read. The vote, the committed log id and the last
//! purged log id are in the `raft` tree. All writes go through one async mutex, so they reach sled
//! in the order openraft issued them; every write says below whether it is flushed before
//! returning (or before openraft is told it is done).
//!
//! `append` writes the entries (readable at once) and reports them to openraft at once, without
//! flushing them: the leader asks for the flush as it sends the entries to followers
//! ([`LogStore::request_durable`], `network.rs`), so it runs while they travel, as the Raft thesis
//! (section 10.2.1) allows and etcd does, and one flush covers every append made since the last
//! send. What keeps an unflushed entry from
//! counting is [`LogStore::wait_durable`], which three places await before they let an entry
//! count: a follower before it answers an AppendEntries (`server.rs`), the leader before it
//! hands a follower's answer to openraft (`network.rs`), and the state machine before it applies
//! (which covers a one-voter cluster, whose leader commits alone). So every entry counted toward
//! a commit is durable where it was counted, as before; only the leader's flush no longer
//! delays replication. openraft 0.9 awaits the append callback before it sends the entries to
//! any follower, so an in-order callback after the flush put two flushes one after the other on
//! every write.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use ekka_codec as codec;
use ekka_types::limits::{MAX_APPEND_BYTES, MAX_ENTRY_BYTES};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::data_dir::Closer;
use crate::data_dir::{TREE_LOG, TREE_RAFT};
use crate::flusher::Flusher;
use crate::watermark::Watermark;
use crate::{NodeId, TypeConfig};

/// Keys in the `raft` tree.
const K_VOTE: &[u8] = b"vote";
const K_COMMITTED: &[u8] = b"committed";
pub(crate) const K_PURGED: &[u8] = b"last_purged";

/// The Raft log on sled. Cheap to clone; clones share the trees and the write lock.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    flusher: Flusher,
    /// The durable-index watermark: raised after flushes, lowered before a truncation.
    watermark: Watermark,
    raft: sled::Tree,
    log: sled::Tree,
    /// All write I/O is serialized (openraft's rule).
    write: tokio::sync::Mutex<()>,
    /// Appends not known to be durable yet: last index -> (first index, flusher write number).
    unflushed: Mutex<BTreeMap<u64, (u64, u64)>>,
    /// Encoded bytes of every entry written since the store was opened (see `appended_bytes`).
    appended_bytes: AtomicU64,
    /// Last: dropped after the trees and the flusher's db handle (see `Closer`).
    closer: Option<Arc<Closer>>,
}

fn io_err(e: impl std::error::Error + 'static) -> AnyError {
    AnyError::new(&e)
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, AnyError> {
    let b = codec::encode(v).map_err(io_err)?;
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
    codec::decode(b).map_err(io_err)
}

fn idx_key(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

impl LogStore {
    pub(crate) fn open(
        db: &sled::Db,
        flusher: Flusher,
        watermark: Watermark,
        closer: Option<Arc<Closer>>,
    ) -> Result<LogStore, String> {
        let store = LogStore {
            inner: Arc::new(Inner {
                flusher,
                watermark,
                raft: db.open_tree(TREE_RAFT).map_err(|e| e.to_string())?,
                log: db.open_tree(TREE_LOG).map_err(|e| e.to_string())?,
                write: tokio::sync::Mutex::new(()),
                unflushed: Mutex::new(BTreeMap::new()),
                appended_bytes: AtomicU64::new(0),
                closer,
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
        self.inner.flusher.flush().await.map_err(io_err)?;
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
        let seq = self.write_entries(entries).await?;
        self.inner
            .flusher
            .wait(seq)
            .await
            .map_err(|e| StorageIOError::write_logs(io_err(e)).into())
    }

    /// The closer of this store's data dir, for the state machine to hold too.
    pub(crate) fn closer(&self) -> Option<Arc<Closer>> {
        self.inner.closer.clone()
    }

    /// Why a flush of this store's db failed, once one has (a storage fault: the node must stop).
    pub fn flush_failure(&self) -> Option<String> {
        self.inner.flusher.failure()
    }

    /// Encoded bytes of the entries written since this store was opened, counting entries later
    /// truncated or purged: the node snapshots when it has grown by a byte budget since the last
    /// snapshot (`NodeConfig::snapshot_log_bytes`).
    pub fn appended_bytes(&self) -> u64 {
        self.inner.appended_bytes.load(Ordering::Relaxed)
    }

    /// The flusher this store's db shares with the state machine.
    pub(crate) fn flusher(&self) -> &Flusher {
        &self.inner.flusher
    }

    /// The flusher's write number of the append holding `index`, if it may not be durable yet.
    fn unflushed_seq(&self, index: u64) -> Option<u64> {
        let m = self.inner.unflushed.lock();
        // Appends are contiguous and numbered in order, so the number of the one holding
        // `index` covers every earlier one too.
        m.range(index..)
            .next()
            .filter(|(_, (first, _))| *first <= index)
            .map(|(_, (_, seq))| *seq)
    }

    /// Asks for a flush of the entry at `index` and every entry before it, without waiting: the
    /// leader calls it as it sends entries, so its flush runs while they travel.
    pub fn request_durable(&self, index: u64) {
        if let Some(seq) = self.unflushed_seq(index) {
            self.inner.flusher.request(seq);
        }
    }

    /// Returns once the entry at `index`, and every entry before it, is durable (at once when it
    /// already is, or when this store holds no such entry), asking for the flush if nobody has
    /// yet. See the module docs for who calls it.
    pub async fn wait_durable(&self, index: u64) -> std::io::Result<()> {
        match self.unflushed_seq(index) {
            Some(seq) => self.inner.flusher.wait(seq).await,
            None => Ok(()),
        }
    }

    /// Writes a batch (readable on return) and numbers it for the flusher, without asking for a
    /// flush; returns the number to wait on.
    pub(crate) async fn write_entries(
        &self,
        entries: impl IntoIterator<Item = Entry<TypeConfig>>,
    ) -> Result<u64, StorageError<NodeId>> {
        // Encoded first, so an entry that cannot be stored leaves the log as it was.
        let mut encoded: Vec<(LogId<NodeId>, Vec<u8>)> = Vec::new();
        for e in entries {
            let v = encode(&e).map_err(|err| StorageIOError::write_log_entry(e.log_id, err))?;
            encoded.push((e.log_id, v));
        }
        let span = match (encoded.first(), encoded.last()) {
            (Some((first, _)), Some((last, _))) => Some((first.index, last.index)),
            _ => None,
        };
        let bytes: usize = encoded.iter().map(|(_, v)| v.len()).sum();
        let _w = self.inner.write.lock().await;
        self.inner
            .appended_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        for (log_id, v) in encoded {
            // One insert per entry, not a `sled::Batch`: sled seals and writes its I/O buffer
            // (a pool job, a wake-up of every idle pool thread and a `sync_file_range`) before and
            // after every batch. Inserts reach sled's log in order and a crash keeps a prefix of
            // them, so the log never gets a hole, as with the removes of `truncate`.
            self.inner
                .log
                .insert(idx_key(log_id.index), v)
                .map_err(|err| StorageIOError::write_log_entry(log_id, io_err(err)))?;
        }
        // Flushed later, on the flusher thread, once someone needs it durable (see the module
        // docs); the runtime's thread goes on serving the network meanwhile.
        let seq = self.inner.flusher.note();
        if let Some((first, last)) = span {
            let mut m = self.inner.unflushed.lock();
            m.retain(|_, (_, s)| !self.inner.flusher.is_durable(*s));
            m.insert(last, (first, seq));
            self.inner.watermark.noted(seq, last);
        }
        Ok(seq)
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

    /// Replication reads entries through here: a byte budget, not only openraft's entry count,
    /// bounds what one AppendEntries carries and what the leader holds in memory for it.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        if start >= end {
            return Ok(Vec::new());
        }
        self.entries_within_budget(start, end).await
    }
}

impl LogStore {
    /// Entries from `start` on, before `end`, as long as they stay under [`MAX_APPEND_BYTES`]
    /// (at least one): what one AppendEntries carries.
    async fn entries_within_budget(
        &self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for kv in self.inner.log.range(idx_key(start)..idx_key(end)) {
            let (_, v) = kv.map_err(|e| StorageIOError::read_logs(io_err(e)))?;
            bytes += v.len();
            if bytes > MAX_APPEND_BYTES && !out.is_empty() {
                break;
            }
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

    /// Read only when Raft starts. A committed vote comes back uncommitted: openraft 0.9 would
    /// otherwise resume a restarted leader in its old term at once, with whatever its log kept.
    /// The leader sends entries before its own copy is durable (see the module docs), so after a
    /// power loss followers may hold entries the restarted leader lost; resuming in the same term
    /// it could write other entries under the same log ids, which followers take as already
    /// present (divergence), and it would serve reads from a stale read index. Uncommitted, the
    /// vote still forbids voting for anyone else in that term, and leadership needs an election
    /// in a new term, whose first entry overwrites every uncommitted entry it conflicts with.
    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        let vote: Option<Vote<NodeId>> = self.get(K_VOTE).map_err(StorageIOError::read_vote)?;
        Ok(vote.map(|v| Vote {
            committed: false,
            ..v
        }))
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
        self.write_entries(entries).await?;
        // Reported before the flush ends: see the module docs.
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let _w = self.inner.write.lock().await;
        // The watermark goes below the cut first (synced), or the next open would take the
        // shorter log for a damaged one.
        self.inner
            .watermark
            .lower(log_id.index.saturating_sub(1))
            .map_err(|e| StorageIOError::write_logs(io_err(e)))?;
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
            .flusher
            .flush()
            .await
            .map_err(|e| StorageIOError::write_logs(io_err(e)))?;
        // Everything written so far is durable now, the appends before the cut included.
        self.inner.unflushed.lock().clear();
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn blank(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn open() -> (tempfile::TempDir, LogStore) {
        let (dir, _, log) = open_with_db();
        (dir, log)
    }

    /// A log store on a new db in a temporary dir, as a data dir sets it up.
    pub(crate) fn open_with_db() -> (tempfile::TempDir, sled::Db, LogStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new()
            .path(dir.path().join("db"))
            .flush_every_ms(None)
            .open()
            .unwrap();
        let sync = crate::sync::DiskSync::open(&dir.path().join("db")).unwrap();
        let flusher = Flusher::start(&db, Arc::new(parking_lot::Mutex::new(sync)), None).unwrap();
        let wm = Watermark::open(dir.path()).unwrap();
        let log = LogStore::open(&db, flusher, wm, None).unwrap();
        (dir, db, log)
    }

    #[tokio::test]
    async fn wait_durable_waits_for_the_flush_of_the_append_holding_the_index() {
        let (_dir, log) = open();
        let first = log.write_entries((1..=3).map(blank)).await.unwrap();
        let second = log.write_entries((4..=5).map(blank)).await.unwrap();
        assert!(second > first);

        log.wait_durable(2).await.unwrap();
        assert!(
            log.flusher().is_durable(first),
            "entry 2's append is flushed"
        );

        log.wait_durable(5).await.unwrap();
        assert!(
            log.flusher().is_durable(second),
            "entry 5's append is flushed"
        );

        // Past the end, or already durable: no wait, nothing left to track after the next write.
        log.wait_durable(99).await.unwrap();
        let third = log.write_entries([blank(6)]).await.unwrap();
        let tracked: Vec<u64> = log.inner.unflushed.lock().keys().copied().collect();
        assert_eq!(
            tracked,
            vec![6],
            "durable appends are dropped from the table"
        );
        log.wait_durable(6).await.unwrap();
        assert!(log.flusher().is_durable(third));
    }

    #[tokio::test]
    async fn request_durable_starts_the_flush_without_waiting() {
        let (_dir, log) = open();
        let seq = log.write_entries((1..=3).map(blank)).await.unwrap();
        // Asks and returns; nobody waits, yet the flush happens.
        log.request_durable(2);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !log.flusher().is_durable(seq) {
            assert!(
                std::time::Instant::now() < deadline,
                "the requested flush never ran"
            );
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        // A flush covers every write numbered before it started, asked for or not.
        let a = log.write_entries((4..=5).map(blank)).await.unwrap();
        let b = log.write_entries([blank(6)]).await.unwrap();
        log.wait_durable(6).await.unwrap();
        assert!(log.flusher().is_durable(a) && log.flusher().is_durable(b));
    }

    #[tokio::test]
    async fn an_append_with_an_entry_too_big_to_store_writes_nothing() {
        let (_dir, mut log) = open();
        let huge = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 2),
            payload: EntryPayload::Normal(ekka_types::Request {
                now_ms: 0,
                cmd: ekka_types::Command::Kv(ekka_types::KvOp::Put {
                    key: "k".into(),
                    value: vec![0; MAX_ENTRY_BYTES],
                }),
            }),
        };
        let err = log.write_entries([blank(1), huge]).await.unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
        assert!(log.try_get_log_entries(0..10).await.unwrap().is_empty());
        assert!(log.inner.unflushed.lock().is_empty());
    }

    #[tokio::test]
    async fn replication_reads_stop_at_the_byte_budget_but_never_return_nothing() {
        let (_dir, mut log) = open();
        let big = |index| Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(ekka_types::Request {
                now_ms: 0,
                cmd: ekka_types::Command::Kv(ekka_types::KvOp::Put {
                    key: "k".into(),
                    value: vec![0; MAX_APPEND_BYTES / 3],
                }),
            }),
        };
        log.write_entries((1..=10).map(big)).await.unwrap();
        let got = log.limited_get_log_entries(1, 11).await.unwrap();
        assert_eq!(
            got.len(),
            2,
            "two entries fit the budget, a third would not"
        );
        assert_eq!(got[0].log_id.index, 1);
        // One entry over the whole budget still travels, alone.
        let huge = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 11),
            payload: EntryPayload::Normal(ekka_types::Request {
                now_ms: 0,
                cmd: ekka_types::Command::Kv(ekka_types::KvOp::Put {
                    key: "k".into(),
                    value: vec![0; MAX_APPEND_BYTES + 1],
                }),
            }),
        };
        log.write_entries([huge]).await.unwrap();
        assert_eq!(log.limited_get_log_entries(11, 12).await.unwrap().len(), 1);
        assert!(log
            .limited_get_log_entries(12, 12)
            .await
            .unwrap()
            .is_empty());
        assert!(log.appended_bytes() > 4 * MAX_APPEND_BYTES as u64);
    }

    #[tokio::test]
    async fn entries_written_as_json_by_older_versions_still_read() {
        let (_dir, mut log) = open();
        let old = serde_json::to_vec(&blank(1)).unwrap();
        log.inner.log.insert(idx_key(1), old).unwrap();
        log.write_entries([blank(2)]).await.unwrap();
        let got = log.try_get_log_entries(1..=2).await.unwrap();
        assert_eq!(got, vec![blank(1), blank(2)]);
    }

    #[tokio::test]
    async fn a_truncate_flushes_and_forgets_the_appends_it_covers() {
        let (_dir, mut log) = open();
        log.write_entries((1..=4).map(blank)).await.unwrap();
        log.truncate(LogId::new(CommittedLeaderId::new(1, 1), 3))
            .await
            .unwrap();
        assert!(log.inner.unflushed.lock().is_empty());
        let left = log.try_get_log_entries(1..10).await.unwrap();
        assert_eq!(left.len(), 2);
    }
}
