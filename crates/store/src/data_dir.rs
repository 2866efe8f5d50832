//! `DataDir`: an exclusively locked ekka data dir holding the node's identity and its sled db.
//!
//! Layout: `EKKA_DATA` (marker), `LOCK` (flock held while open), `ACKED` (the durable-index
//! watermark, `watermark.rs`), `CLEAN` (present only between a clean close and the next open,
//! `check.rs`), `db/` (sled). sled trees, all integer keys and values big-endian:
//!
//! | tree   | keys                                             |
//! |--------|--------------------------------------------------|
//! | `meta` | `format`, `node_id`, `cluster_id`, `recovered_from`, `resetting` |
//! | `raft` | `vote`, `committed`, `last_purged`               |
//! | `log`  | entry index (u64 BE) → `Entry` (`ekka_codec`) |
//! | `sm`   | `snapshot_meta`, `snapshot_data` (the last one)  |
//!
//! Crash safety: the first open writes the marker as "initializing", creates the db with its
//! format and node id (flushed), and only then turns the marker into its final text (atomic
//! rename), so an interrupted first open is finished by the next one instead of being refused. A
//! reset records its intent (with the new node id) before wiping anything and is finished by the
//! next open if it was interrupted.
//!
//! Durability: every flush here is sled's flush followed by a device sync of its files
//! (`sync.rs`). Damage: a complete dir is checked before sled opens it (`check.rs`) and refused,
//! unchanged, when its bytes changed or its log is shorter than what it had made durable.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use fs2::FileExt;
use rand::Rng;
use tracing::{info, warn};

use crate::check;
use crate::error::StoreError;
use crate::flusher::flush_durably;
use crate::log_store::LogStore;
use crate::state_machine::StateMachineStore;
use crate::sync::DiskSync;
use crate::watermark::Watermark;

pub(crate) const MARKER: &str = "EKKA_DATA";
const MARKER_TMP: &str = "EKKA_DATA.tmp";
const LOCK: &str = "LOCK";
/// The marker of a usable data dir.
const MARKER_READY: &str = "ekka-rs data dir, format 1\n";
/// The marker while the first open creates the db.
const MARKER_INIT: &str = "ekka-rs data dir, initializing\n";
const FORMAT: &[u8] = b"1";
/// sled's page cache budget. The state is small; sled's default (1 GiB) is far too much.
const CACHE_CAPACITY_BYTES: u64 = 16 * 1024 * 1024;

pub(crate) const TREE_META: &str = "meta";
pub(crate) const TREE_RAFT: &str = "raft";
pub(crate) const TREE_LOG: &str = "log";
pub(crate) const TREE_SM: &str = "sm";

/// Where the state machine keeps its snapshot files (see `state_machine.rs`).
const SNAPSHOT_DIR: &str = "snapshots";

/// Keys in the `meta` tree.
pub(crate) const K_FORMAT: &[u8] = b"format";
pub(crate) const K_NODE_ID: &[u8] = b"node_id";
const K_CLUSTER_ID: &[u8] = b"cluster_id";
/// The cluster id this dir's cluster was recovered from (`ekka cluster recover`); absent if none.
const K_RECOVERED_FROM: &[u8] = b"recovered_from";
/// Present (holding the new node id) while a reset is under way.
const K_RESETTING: &[u8] = b"resetting";
/// Present while this node joins another cluster (a [`JoinIntent`]).
const K_JOINING: &[u8] = b"joining";

/// A join under way, recorded before the node wipes its one-node cluster to join another and
/// cleared once the node is a member (or gave up): a node restarted in between knows where it
/// was going and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinIntent {
    /// The address the join was sent to.
    pub target: String,
    /// The cluster the node leaves (its one-node cluster).
    pub from_cluster: u64,
    /// The cluster it joins.
    pub to_cluster: u64,
}

impl JoinIntent {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16 + self.target.len());
        v.extend_from_slice(&self.from_cluster.to_be_bytes());
        v.extend_from_slice(&self.to_cluster.to_be_bytes());
        v.extend_from_slice(self.target.as_bytes());
        v
    }

    fn decode(b: &[u8]) -> Option<JoinIntent> {
        let from_cluster = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
        let to_cluster = u64::from_be_bytes(b.get(8..16)?.try_into().ok()?);
        let target = std::str::from_utf8(b.get(16..)?).ok()?.to_string();
        Some(JoinIntent {
            target,
            from_cluster,
            to_cluster,
        })
    }
}

/// What the marker file says.
enum Marker {
    Missing,
    /// A first open was interrupted (the text may be cut short).
    Initializing,
    Ready,
}

/// An open, locked data dir. Dropping it releases the lock.
pub struct DataDir {
    path: PathBuf,
    db: sled::Db,
    meta: sled::Tree,
    /// The device sync of sled's files, shared with the flusher thread.
    sync: Arc<Mutex<DiskSync>>,
    watermark: Watermark,
    /// Copies of the persisted ids, validated at open and updated after each flushed write.
    node_id: AtomicU64,
    cluster_id: AtomicU64,
    /// Counts resets. Stores opened before a reset must not write into the wiped trees (an old
    /// Raft instance's snapshot build can outlive its shutdown): they check it under its read
    /// lock, which [`DataDir::reset`] holds for writing while it wipes.
    epoch: Arc<parking_lot::RwLock<u64>>,
    recovered_from: AtomicU64,
    /// Holds the dir's lock and seals the dir once the last handle on its db is gone. Shared
    /// with the stores; the last field, so it drops after the db handles beside it.
    closer: Arc<Closer>,
}

impl std::fmt::Debug for DataDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataDir")
            .field("path", &self.path)
            .field("node_id", &self.node_id())
            .field("cluster_id", &self.cluster_id())
            .finish()
    }
}

impl DataDir {
    /// Opens (creating if missing) and locks the data dir at `path`.
    ///
    /// A non-empty directory without the marker is refused as foreign, a directory whose database
    /// cannot be read is refused as corrupt, and one locked by another agent is refused as locked;
    /// none of them is modified.
    pub fn open(path: &Path) -> Result<DataDir, StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let corrupt = |message: String| StoreError::Corrupt {
            path: path.to_path_buf(),
            message,
        };
        std::fs::create_dir_all(path).map_err(io)?;
        // Checked before LOCK is created, so a foreign dir gets no file of ours.
        if !path.join(MARKER).exists() && !only_our_lock_file(path).map_err(io)? {
            return Err(StoreError::Foreign {
                path: path.to_path_buf(),
                marker: MARKER,
            });
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join(LOCK))
            .map_err(io)?;
        let key = std::fs::canonicalize(path).map_err(io)?;
        if let Err(e) = lock.try_lock_exclusive() {
            if e.raw_os_error() != fs2::lock_contended_error().raw_os_error() {
                return Err(io(e));
            }
            if !wait_for_own_close(&lock, &key) {
                return Err(StoreError::Locked {
                    path: path.to_path_buf(),
                });
            }
        }

        let marker = read_marker(path).map_err(io)?.map_err(corrupt)?;
        // Before sled opens the db for writing: a damaged store is refused untouched.
        let check_after_open = match marker {
            Marker::Ready => !check::check(path)?,
            Marker::Missing | Marker::Initializing => false,
        };
        if matches!(marker, Marker::Missing) {
            // Flushed (file and dir synced): from here on the dir is recognisably ours.
            write_synced(&path.join(MARKER), MARKER_INIT).map_err(io)?;
            sync_dir(path).map_err(io)?;
        }
        let db = open_sled(path).map_err(|e| match e {
            SledOpenError::Locked => StoreError::Locked {
                path: path.to_path_buf(),
            },
            SledOpenError::Other(e) => corrupt(format!("sled: {e}")),
        })?;
        let meta = db
            .open_tree(TREE_META)
            .map_err(|e| corrupt(format!("sled: {e}")))?;
        let sync = DiskSync::open(&path.join("db")).map_err(io)?;
        if check_after_open {
            // The check could not copy the db: what sled recovered, at least, is checked.
            let mark = crate::watermark::read(path)
                .map_err(io)?
                .map_err(|what| damaged(path, what))?;
            let last = check::consistent(&db).map_err(|what| damaged(path, what))?;
            check::check_end(last, mark).map_err(|what| damaged(path, what))?;
        }
        let watermark = Watermark::open(path).map_err(io)?;
        let sync = Arc::new(Mutex::new(sync));
        held_here().insert(key.clone());
        let closer = Arc::new(Closer {
            path: path.to_path_buf(),
            key,
            sync: sync.clone(),
            watermark: watermark.clone(),
            lock: Some(lock),
        });
        let dir = DataDir {
            path: path.to_path_buf(),
            db,
            meta,
            sync,
            watermark,
            node_id: AtomicU64::new(0),
            cluster_id: AtomicU64::new(0),
            epoch: Arc::new(parking_lot::RwLock::new(0)),
            recovered_from: AtomicU64::new(0),
            closer,
        };
        match marker {
            Marker::Ready => {}
            Marker::Missing | Marker::Initializing => {
                dir.init_db()?;
                // Atomic (rename) and flushed: the dir is complete.
                write_synced(&path.join(MARKER_TMP), MARKER_READY).map_err(io)?;
                std::fs::rename(path.join(MARKER_TMP), path.join(MARKER)).map_err(io)?;
                sync_dir(path).map_err(io)?;
            }
        }
        dir.load_ids()?;
        if let Some(id) = dir.read_u64(K_RESETTING)? {
            if id == 0 {
                return Err(dir.corrupt("the interrupted reset has node id 0"));
            }
            warn!(path = %path.display(), "finishing an interrupted reset");
            dir.finish_reset(id)?;
        }
        info!(
            path = %path.display(),
            node_id = %ekka_types::fmt_id(dir.node_id()),
            "data dir open"
        );
        Ok(dir)
    }

    /// Gives a db created by an interrupted (or this) first open its format and node id. A db
    /// that already has a format is left as it is; one that has data but no format is corrupt.
    fn init_db(&self) -> Result<(), StoreError> {
        if self
            .meta()
            .get(K_FORMAT)
            .map_err(|e| self.db_err(e))?
            .is_some()
        {
            return Ok(());
        }
        for name in self.db().tree_names() {
            let tree = self.db().open_tree(&name).map_err(|e| self.db_err(e))?;
            if !tree.is_empty() {
                return Err(self.corrupt(format!(
                    "the db has data in tree {:?} but no format record",
                    String::from_utf8_lossy(&name)
                )));
            }
        }
        let mut b = sled::Batch::default();
        b.insert(K_FORMAT, FORMAT);
        b.insert(K_NODE_ID, &random_id().to_be_bytes());
        self.meta().apply_batch(b).map_err(|e| self.db_err(e))?;
        // Flushed before returning: the identity exists before the marker says the dir is ready.
        self.flush()
    }

    /// Reads and checks the format and the ids into the in-memory copies.
    fn load_ids(&self) -> Result<(), StoreError> {
        match self.meta().get(K_FORMAT).map_err(|e| self.db_err(e))? {
            Some(f) if f.as_ref() == FORMAT => {}
            Some(f) => {
                return Err(
                    self.corrupt(format!("unknown format {:?}", String::from_utf8_lossy(&f)))
                )
            }
            None => return Err(self.corrupt("no format record")),
        }
        match self.read_u64(K_NODE_ID)? {
            Some(id) if id != 0 => self.node_id.store(id, Ordering::SeqCst),
            Some(_) => return Err(self.corrupt("node id 0")),
            None => return Err(self.corrupt("no node id")),
        }
        let cluster_id = self.read_u64(K_CLUSTER_ID)?.unwrap_or(0);
        self.cluster_id.store(cluster_id, Ordering::SeqCst);
        let from = self.read_u64(K_RECOVERED_FROM)?.unwrap_or(0);
        self.recovered_from.store(from, Ordering::SeqCst);
        Ok(())
    }

    /// The dir's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This node's id: random and non-zero, made at the first open and at every reset.
    pub fn node_id(&self) -> u64 {
        self.node_id.load(Ordering::SeqCst)
    }

    /// Sets the node id. The node uses it to keep its id across a reset when it moves to another
    /// cluster; a wiped node that stays in its cluster must keep the new id `reset` made.
    ///
    /// # Panics
    /// If `id` is 0, which no node uses.
    pub fn set_node_id(&self, id: u64) -> Result<(), StoreError> {
        assert!(id != 0, "node id 0 is reserved");
        self.meta()
            .insert(K_NODE_ID, &id.to_be_bytes())
            .map_err(|e| self.db_err(e))?;
        // Flushed before returning: the identity must survive a crash.
        self.flush()?;
        self.node_id.store(id, Ordering::SeqCst);
        Ok(())
    }

    /// The cluster this node belongs to; 0 for none yet.
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id.load(Ordering::SeqCst)
    }

    /// Records the cluster this node belongs to (0: none). A joining node adopts the cluster id
    /// before its first log entry arrives.
    pub fn set_cluster_id(&self, id: u64) -> Result<(), StoreError> {
        self.meta()
            .insert(K_CLUSTER_ID, &id.to_be_bytes())
            .map_err(|e| self.db_err(e))?;
        // Flushed before returning: the node must not forget which cluster it joined.
        self.flush()?;
        self.cluster_id.store(id, Ordering::SeqCst);
        Ok(())
    }

    /// The cluster this node's cluster was recovered from by `ekka cluster recover` (its previous
    /// generation); 0 if none. A reset forgets it.
    pub fn recovered_from(&self) -> u64 {
        self.recovered_from.load(Ordering::SeqCst)
    }

    /// Records, in one flushed write, that this dir now belongs to `cluster_id`, a new
    /// generation recovered from cluster `from`.
    pub fn set_recovered(&self, cluster_id: u64, from: u64) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        b.insert(K_CLUSTER_ID, &cluster_id.to_be_bytes());
        b.insert(K_RECOVERED_FROM, &from.to_be_bytes());
        self.meta().apply_batch(b).map_err(|e| self.db_err(e))?;
        self.flush()?;
        self.cluster_id.store(cluster_id, Ordering::SeqCst);
        self.recovered_from.store(from, Ordering::SeqCst);
        Ok(())
    }

    /// The join under way, if any (see [`JoinIntent`]).
    pub fn join_intent(&self) -> Result<Option<JoinIntent>, StoreError> {
        match self.meta().get(K_JOINING).map_err(|e| self.db_err(e))? {
            None => Ok(None),
            Some(v) => JoinIntent::decode(&v)
                .map(Some)
                .ok_or_else(|| self.corrupt("the recorded join is not readable")),
        }
    }

    /// Records (or, with `None`, clears) the join under way. Durable when it returns; clearing
    /// when none is recorded writes nothing (every one-node reset clears it).
    pub fn set_join_intent(&self, intent: Option<&JoinIntent>) -> Result<(), StoreError> {
        let changed = match intent {
            Some(j) => self.meta().insert(K_JOINING, j.encode()).map(|_| true),
            None => self.meta().remove(K_JOINING).map(|old| old.is_some()),
        }
        .map_err(|e| self.db_err(e))?;
        if changed {
            self.flush()?;
        }
        Ok(())
    }

    /// New openraft store handles over this dir's db. Call again after a [`DataDir::reset`]; the
    /// state machine starts from the persisted snapshot, if any.
    pub fn open_stores(&self) -> Result<(LogStore, StateMachineStore), StoreError> {
        let raise = self
            .watermark
            .start_thread()
            .map_err(|e| self.db_err(format!("cannot start the watermark thread: {e}")))?;
        let flusher = crate::flusher::Flusher::start(self.db(), self.sync.clone(), Some(raise))
            .map_err(|e| self.db_err(e))?;
        let log = LogStore::open(
            self.db(),
            flusher,
            self.watermark.clone(),
            Some(self.closer.clone()),
        )
        .map_err(|e| self.db_err(e))?;
        let sm = StateMachineStore::open(self.db(), log.clone(), &self.path.join(SNAPSHOT_DIR))
            .map_err(|e| self.corrupt(e))?
            .fenced_by(self.epoch.clone());
        Ok((log, sm))
    }

    fn db(&self) -> &sled::Db {
        &self.db
    }

    fn meta(&self) -> &sled::Tree {
        &self.meta
    }

    /// How many device syncs the data dir has issued (for tests that check durability).
    pub fn n_device_syncs(&self) -> u64 {
        self.sync.lock().n_syncs()
    }

    /// Wipes the vote, the committed pointer, the log, the purge marker, the snapshot and the
    /// cluster id, and gives the node a new id, which it returns (a wiped node never reuses its
    /// old id). Everything is flushed before it returns; if it is interrupted, the next
    /// [`DataDir::open`] finishes it.
    ///
    /// Call it only while no Raft instance runs on this dir's stores.
    pub fn reset(&self) -> Result<u64, StoreError> {
        // The log is about to go: the watermark first, durably, or the next open would take
        // the wiped log for a damaged one.
        self.watermark.lower(0).map_err(|e| self.db_err(e))?;
        // Stores of the old instance can no longer write from here on.
        let mut epoch = self.epoch.write();
        *epoch += 1;
        let id = random_id();
        self.meta()
            .insert(K_RESETTING, &id.to_be_bytes())
            .map_err(|e| self.db_err(e))?;
        // Flushed before wiping: a crash from here on leaves a reset that open() finishes.
        self.flush()?;
        self.finish_reset(id)?;
        info!(path = %self.path.display(), node_id = %ekka_types::fmt_id(id), "data dir reset");
        Ok(id)
    }

    /// The wipe of [`DataDir::reset`], once its intent is recorded. Idempotent.
    fn finish_reset(&self, id: u64) -> Result<(), StoreError> {
        self.watermark.lower(0).map_err(|e| self.db_err(e))?;
        for name in [TREE_RAFT, TREE_LOG, TREE_SM] {
            let tree = self.db().open_tree(name).map_err(|e| self.db_err(e))?;
            // Not flushed on its own: the flush below covers it.
            tree.clear().map_err(|e| self.db_err(e))?;
        }
        let mut b = sled::Batch::default();
        b.remove(K_CLUSTER_ID);
        b.remove(K_RECOVERED_FROM);
        b.insert(K_NODE_ID, &id.to_be_bytes());
        b.remove(K_RESETTING);
        self.meta().apply_batch(b).map_err(|e| self.db_err(e))?;
        // Flushed before returning: the wipe and the new id are durable together.
        self.flush()?;
        self.node_id.store(id, Ordering::SeqCst);
        self.cluster_id.store(0, Ordering::SeqCst);
        self.recovered_from.store(0, Ordering::SeqCst);
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        // Durable before returning: sled's flush, then the device sync of its files.
        flush_durably(self.db(), &self.sync).map_err(|e| self.db_err(e))
    }

    fn read_u64(&self, k: &[u8]) -> Result<Option<u64>, StoreError> {
        match self.meta().get(k).map_err(|e| self.db_err(e))? {
            None => Ok(None),
            Some(v) => {
                let b: [u8; 8] = v.as_ref().try_into().map_err(|_| {
                    self.corrupt(format!("{} is not 8 bytes", String::from_utf8_lossy(k)))
                })?;
                Ok(Some(u64::from_be_bytes(b)))
            }
        }
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

    #[cfg(test)]
    fn record_reset_intent(&self, id: u64) {
        self.meta()
            .insert(K_RESETTING, &id.to_be_bytes())
            .expect("insert");
        self.flush().expect("flush");
    }
}

/// Holds a data dir's lock while any handle on its db is open, and seals the dir when the last
/// one goes: every holder of a sled handle (the dir, the log store, the state machine) keeps an
/// `Arc<Closer>` as its last field, so its sled handles are dropped before it.
pub(crate) struct Closer {
    path: PathBuf,
    sync: Arc<Mutex<DiskSync>>,
    watermark: Watermark,
    /// The dir's canonical path, its key in [`held_here`].
    key: PathBuf,
    /// The flock on `LOCK`: released only after the seal, so no other process opens the dir
    /// before it is written.
    lock: Option<File>,
}

impl Drop for Closer {
    /// Once sled has let go of its files (its own lock on `db/db` is free), syncs them, brings
    /// the watermark up to date and leaves the seal of a clean close (`check.rs`), so the next
    /// open compares every byte instead of running the crash check. When sled still holds them
    /// (a thread of its own lingering) or the sync fails, the next open runs the crash check.
    fn drop(&mut self) {
        self.seal();
        drop(self.lock.take());
        held_here().remove(&self.key);
    }
}

impl Closer {
    fn seal(&self) {
        let deadline = Instant::now() + SEAL_WAIT;
        let closed = loop {
            match File::open(self.path.join("db").join("db")) {
                Ok(f) if f.try_lock_exclusive().is_ok() => break Some(f),
                Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
                _ => break None,
            }
        };
        let Some(sled_lock) = closed else {
            info!(path = %self.path.display(), "db still in use at close; not sealed");
            return;
        };
        let synced = self.sync.lock().sync();
        match synced {
            Ok(()) => {
                // Everything noted is durable now.
                if let Err(e) = self.watermark.raise(u64::MAX) {
                    warn!(path = %self.path.display(), error = %e, "final watermark write failed");
                }
                check::seal(&self.path)
            }
            Err(e) => {
                warn!(path = %self.path.display(), error = %e, "final sync failed; not sealed")
            }
        }
        drop(sled_lock);
    }
}

/// The data dirs whose `LOCK` this process holds (through a live [`Closer`]).
fn held_here() -> parking_lot::MutexGuard<'static, BTreeSet<PathBuf>> {
    static HELD: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
    HELD.lock()
}

/// How long a second open of a dir this process holds waits for it to close.
const OWN_CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Whether `lock` (on the `LOCK` of the dir `key`, held by this process) could be taken within
/// `OWN_CLOSE_WAIT`: the holder may be a node dropped moments ago whose last store is still
/// closing on another thread (sealing takes a sync). A dir held by another process, or one
/// this process keeps open, is refused as before.
fn wait_for_own_close(lock: &File, key: &Path) -> bool {
    let deadline = Instant::now() + OWN_CLOSE_WAIT;
    while held_here().contains(key) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    lock.try_lock_exclusive().is_ok()
}

/// How long a closing data dir waits for sled's own threads to let go of its files before it
/// gives up the seal.
const SEAL_WAIT: Duration = Duration::from_millis(500);

fn damaged(path: &Path, what: String) -> StoreError {
    StoreError::Damaged {
        path: path.to_path_buf(),
        what,
    }
}

enum SledOpenError {
    /// sled's own lock on `db/db` stayed taken.
    Locked,
    Other(sled::Error),
}

/// How long `open` waits for sled's own file lock. We hold `LOCK`, so its holder is this process:
/// a `sled::Db` dropped moments ago whose background I/O still holds the file.
const SLED_LOCK_WAIT: Duration = Duration::from_secs(5);

/// sled's configuration for the db at `db_dir` (the damage check opens its copy the same way).
pub(crate) fn open_config(db_dir: &Path) -> sled::Config {
    sled::Config::new()
        .path(db_dir)
        .cache_capacity(CACHE_CAPACITY_BYTES)
}

fn open_sled(path: &Path) -> Result<sled::Db, SledOpenError> {
    let deadline = Instant::now() + SLED_LOCK_WAIT;
    loop {
        let r = open_config(&path.join("db")).open();
        match r {
            Ok(db) => return Ok(db),
            // sled reports lock contention only in the text of an `Other` I/O error.
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if Instant::now() >= deadline {
                    return Err(SledOpenError::Locked);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(SledOpenError::Other(e)),
        }
    }
}

/// Whether the dir is empty but for an empty `LOCK` file (left by a first open that stopped
/// before it wrote the marker).
fn only_our_lock_file(path: &Path) -> std::io::Result<bool> {
    for e in std::fs::read_dir(path)? {
        let e = e?;
        if e.file_name() != LOCK || e.metadata()?.len() != 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Reads the marker; the inner error says why its text is not ours.
fn read_marker(path: &Path) -> std::io::Result<Result<Marker, String>> {
    let text = match std::fs::read(path.join(MARKER)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Ok(Marker::Missing)),
        Err(e) => return Err(e),
    };
    Ok(if text == MARKER_READY.as_bytes() {
        Ok(Marker::Ready)
    } else if MARKER_INIT.as_bytes().starts_with(&text) {
        // Possibly cut short by a crash: the initializing marker is not written atomically.
        Ok(Marker::Initializing)
    } else {
        Err(format!(
            "unknown {MARKER} text {:?}",
            String::from_utf8_lossy(&text).trim()
        ))
    })
}

fn write_synced(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)?;
    File::open(path)?.sync_all()
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()
}

fn random_id() -> u64 {
    rand::thread_rng().gen_range(1..=u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_store_opened_before_a_reset_saves_no_snapshot_after_it() {
        use openraft::storage::RaftSnapshotBuilder;
        let td = tempfile::tempdir().unwrap();
        let dir = DataDir::open(&td.path().join("d")).unwrap();
        let (_log, mut old) = dir.open_stores().unwrap();
        old.build_snapshot()
            .await
            .expect("a snapshot before the reset");
        dir.reset().unwrap();
        // The old instance's build, finishing late: refused, and the wiped tree stays empty.
        let late = old.build_snapshot().await;
        assert!(
            late.is_err(),
            "a store from before the reset saved a snapshot"
        );
        let sm = dir.db().open_tree(TREE_SM).unwrap();
        assert!(
            sm.get(crate::state_machine::K_SNAP_META).unwrap().is_none(),
            "the wiped tree holds a snapshot"
        );
    }

    #[test]
    fn interrupted_reset_is_finished_by_the_next_open() {
        let td = tempfile::tempdir().unwrap();
        let p = td.path().join("d");
        let dir = DataDir::open(&p).unwrap();
        let old = dir.node_id();
        dir.set_cluster_id(5).unwrap();
        let raft = dir.db().open_tree(TREE_RAFT).unwrap();
        raft.insert(b"vote", b"x").unwrap();
        // A reset that recorded its intent and then stopped.
        dir.record_reset_intent(42);
        drop((raft, dir));
        let dir = DataDir::open(&p).unwrap();
        assert_ne!(old, 42);
        assert_eq!(dir.node_id(), 42);
        assert_eq!(dir.cluster_id(), 0);
        assert!(dir.db().open_tree(TREE_RAFT).unwrap().is_empty());
        assert_eq!(dir.read_u64(K_RESETTING).unwrap(), None);
    }

    #[test]
    fn a_recovery_is_remembered_until_a_reset() {
        let td = tempfile::tempdir().unwrap();
        let p = td.path().join("d");
        let dir = DataDir::open(&p).unwrap();
        dir.set_cluster_id(5).unwrap();
        assert_eq!(dir.recovered_from(), 0);
        dir.set_recovered(7, 5).unwrap();
        drop(dir);
        let dir = DataDir::open(&p).unwrap();
        assert_eq!((dir.cluster_id(), dir.recovered_from()), (7, 5));
        dir.reset().unwrap();
        assert_eq!((dir.cluster_id(), dir.recovered_from()), (0, 0));
        drop(dir);
        assert_eq!(DataDir::open(&p).unwrap().recovered_from(), 0);
    }

    #[test]
    fn interrupted_first_open_is_finished_by_the_next_open() {
        let td = tempfile::tempdir().unwrap();
        // Stopped after taking the lock, before the marker.
        let p = td.path().join("a");
        std::fs::create_dir(&p).unwrap();
        File::create(p.join(LOCK)).unwrap();
        assert!(DataDir::open(&p).unwrap().node_id() != 0);
        // Stopped while writing the initializing marker.
        let p = td.path().join("b");
        std::fs::create_dir(&p).unwrap();
        File::create(p.join(LOCK)).unwrap();
        std::fs::write(p.join(MARKER), &MARKER_INIT[..7]).unwrap();
        assert!(DataDir::open(&p).unwrap().node_id() != 0);
        // Stopped after the db got its identity, before the final marker: the identity is kept.
        let p = td.path().join("c");
        let id = DataDir::open(&p).unwrap().node_id();
        std::fs::write(p.join(MARKER), MARKER_INIT).unwrap();
        assert_eq!(DataDir::open(&p).unwrap().node_id(), id);
        assert_eq!(
            std::fs::read_to_string(p.join(MARKER)).unwrap(),
            MARKER_READY
        );
    }

    #[test]
    fn a_join_intent_survives_a_reset_and_a_reopen_until_cleared() {
        let td = tempfile::tempdir().unwrap();
        let p = td.path().join("d");
        let dir = DataDir::open(&p).unwrap();
        assert_eq!(dir.join_intent().unwrap(), None);
        let j = JoinIntent {
            target: "127.0.0.1:4370".into(),
            from_cluster: 7,
            to_cluster: u64::MAX,
        };
        dir.set_join_intent(Some(&j)).unwrap();
        dir.reset().unwrap();
        drop(dir);
        let dir = DataDir::open(&p).unwrap();
        assert_eq!(dir.join_intent().unwrap(), Some(j));
        dir.set_join_intent(None).unwrap();
        drop(dir);
        assert_eq!(DataDir::open(&p).unwrap().join_intent().unwrap(), None);
        // Bytes that are no intent are an error, not a guess.
        assert_eq!(JoinIntent::decode(b"short"), None);
        assert_eq!(
            JoinIntent::decode(&[0; 16]).map(|j| j.target),
            Some(String::new())
        );
        let mut bad = vec![0; 16];
        bad.push(0xff);
        assert_eq!(JoinIntent::decode(&bad), None);
    }

    #[test]
    fn a_lock_file_with_content_is_foreign() {
        let td = tempfile::tempdir().unwrap();
        std::fs::write(td.path().join(LOCK), "someone else's").unwrap();
        let e = DataDir::open(td.path()).unwrap_err();
        assert!(matches!(e, StoreError::Foreign { .. }), "{e}");
    }

    #[test]
    fn an_initializing_marker_over_a_db_with_data_but_no_format_is_corrupt() {
        let td = tempfile::tempdir().unwrap();
        let p = td.path().join("d");
        {
            let dir = DataDir::open(&p).unwrap();
            dir.meta().remove(K_FORMAT).unwrap();
            dir.flush().unwrap();
        }
        std::fs::write(p.join(MARKER), MARKER_INIT).unwrap();
        let e = DataDir::open(&p).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    }
}
