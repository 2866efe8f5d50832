//! `StateMachineStore`: openraft's state machine (storage-v2). The `ClusterState` lives in memory;
//! the last snapshot is persisted in sled, and openraft replays committed entries after it on
//! restart (the log store saves `committed`).
//!
//! A snapshot is [`SnapshotBody`] in `ekka_codec`'s format (JSON in data dirs written
//! before it, which still reads): last applied log id, last Raft membership
//! and the whole `ClusterState`. It is persisted (flushed) before a build returns and before an
//! install changes the in-memory state, and a persisted snapshot is never replaced by an older
//! one (a build runs concurrently with an install).
//!
//! The snapshot's bytes live in a file of the data dir's `snapshots/` directory, written and
//! synced under a fresh name before the `sm` tree points at it (meta and file name in one
//! batch, flushed); files the tree does not point at are deleted. sled kept every large value
//! written to it in memory long after it was replaced (30 writes of a 16 MiB value left a
//! process at 500 MiB RSS), so a snapshot in the tree made RSS follow the number of
//! snapshots. Data dirs written before keep their snapshot in the tree (`snapshot_data`), which
//! still reads until the next snapshot replaces it.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use ekka_codec as codec;
use ekka_types::limits::MAX_SNAPSHOT_BYTES;
use ekka_types::{ClusterState, Command, Request, Response};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::data_dir::TREE_SM;
use crate::log_store::LogStore;
use crate::{NodeId, TypeConfig};

/// The cluster state shared with the node (read-only outside this crate by convention).
pub type SharedState = Arc<RwLock<ClusterState>>;

/// Keys in the `sm` tree.
pub(crate) const K_SNAP_META: &[u8] = b"snapshot_meta";
/// The snapshot's bytes, in data dirs written before snapshot files.
const K_SNAP_DATA: &[u8] = b"snapshot_data";
/// The name of the snapshot's file in the snapshot directory.
const K_SNAP_FILE: &[u8] = b"snapshot_file";

/// What a snapshot holds.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    last_applied: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, BasicNode>,
    state: ClusterState,
}

#[derive(Default)]
struct Applied {
    last_applied: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, BasicNode>,
}

/// The state machine. Cheap to clone; clones share everything.
///
/// Lock order: `state`, then `applied`; `snapshot_write` is never held with either.
#[derive(Clone)]
pub struct StateMachineStore {
    state: SharedState,
    /// Changed together with `state`, under its write lock.
    applied: Arc<Mutex<Applied>>,
    revision: Arc<watch::Sender<u64>>,
    /// The log of the same db: its flusher, and what the state machine waits for before applying.
    log: LogStore,
    sm: sled::Tree,
    /// Where snapshot files are written.
    snapshot_dir: Arc<PathBuf>,
    /// Serializes snapshot writes (a build's and an install's).
    snapshot_write: Arc<tokio::sync::Mutex<()>>,
    /// Makes snapshot ids unique; starts at a random value so ids differ across restarts.
    snapshot_seq: Arc<AtomicU64>,
    /// The data dir's reset counter and its value when this store opened: a store from before
    /// a reset persists nothing more (see `DataDir::reset`).
    epoch: Option<(Arc<RwLock<u64>>, u64)>,
    /// Last: dropped after the tree above (see `Closer`).
    _closer: Option<Arc<crate::data_dir::Closer>>,
}

fn err(e: impl std::error::Error + 'static) -> AnyError {
    AnyError::new(&e)
}

/// Decodes a snapshot from the disk or the network, checking its size and the state's invariants.
fn decode_body(data: &[u8]) -> Result<SnapshotBody, String> {
    if data.len() > MAX_SNAPSHOT_BYTES {
        return Err(format!(
            "snapshot of {} bytes is over the {MAX_SNAPSHOT_BYTES} limit",
            data.len()
        ));
    }
    let body: SnapshotBody =
        codec::decode(data).map_err(|e| format!("unreadable snapshot: {e}"))?;
    body.state
        .check_invariants()
        .map_err(|e| format!("snapshot breaks an invariant: {e}"))?;
    Ok(body)
}

fn encode_body(body: &SnapshotBody) -> Result<Vec<u8>, AnyError> {
    let data = codec::encode(body).map_err(err)?;
    if data.len() > MAX_SNAPSHOT_BYTES {
        return Err(AnyError::error(format!(
            "snapshot of {} bytes is over the {MAX_SNAPSHOT_BYTES} limit",
            data.len()
        )));
    }
    Ok(data)
}

/// Runs `f` on tokio's blocking pool: encoding, decoding and copying a snapshot (up to
/// `MAX_SNAPSHOT_BYTES`) would otherwise hold up the agent's one runtime thread, and every write
/// with it.
async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AnyError> + Send + 'static,
) -> Result<T, AnyError> {
    tokio::task::spawn_blocking(f).await.map_err(err)?
}

/// The persisted snapshot's bytes: from its file, or from the tree in older data dirs.
fn snapshot_bytes(sm: &sled::Tree, dir: &Path) -> Result<Option<Vec<u8>>, AnyError> {
    let data = match sm.get(K_SNAP_FILE).map_err(err)? {
        Some(name) => {
            let name = std::str::from_utf8(&name).map_err(err)?;
            let path = dir.join(name);
            let len = std::fs::metadata(&path).map_err(err)?.len();
            if len > MAX_SNAPSHOT_BYTES as u64 {
                return Err(AnyError::error(format!(
                    "persisted snapshot of {len} bytes is over the {MAX_SNAPSHOT_BYTES} limit"
                )));
            }
            std::fs::read(&path).map_err(err)?
        }
        None => match sm.get(K_SNAP_DATA).map_err(err)? {
            Some(d) => d.to_vec(),
            None => return Ok(None),
        },
    };
    if data.len() > MAX_SNAPSHOT_BYTES {
        return Err(AnyError::error(format!(
            "persisted snapshot of {} bytes is over the {MAX_SNAPSHOT_BYTES} limit",
            data.len()
        )));
    }
    Ok(Some(data))
}

/// Writes `dir/name` through a temporary file, syncing the file and the directory.
fn write_synced(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Deletes the files of `dir` the tree does not point at (older snapshots, unfinished writes).
fn remove_unreferenced(sm: &sled::Tree, dir: &Path) -> Result<(), AnyError> {
    let keep = sm.get(K_SNAP_FILE).map_err(err)?;
    for e in std::fs::read_dir(dir).map_err(err)? {
        let e = e.map_err(err)?;
        if keep.as_deref() != Some(e.file_name().as_encoded_bytes()) {
            std::fs::remove_file(e.path()).map_err(err)?;
        }
    }
    Ok(())
}

/// Reads and decodes the snapshot a db points at (in `dir`), changing nothing: the damage check
/// of a copy of the db (`check.rs`).
pub(crate) fn check_persisted(db: &sled::Db, dir: &Path) -> Result<(), String> {
    let sm = db.open_tree(TREE_SM).map_err(|e| e.to_string())?;
    let data = snapshot_bytes(&sm, dir).map_err(|e| format!("its snapshot: {e}"))?;
    if let Some(data) = data {
        if sm.get(K_SNAP_META).map_err(|e| e.to_string())?.is_none() {
            return Err("its snapshot has data but no meta".into());
        }
        decode_body(&data).map_err(|e| format!("its snapshot: {e}"))?;
    }
    Ok(())
}

impl StateMachineStore {
    /// Opens the state machine, starting from the persisted snapshot if there is one.
    pub(crate) fn open(
        db: &sled::Db,
        log: LogStore,
        snapshot_dir: &Path,
    ) -> Result<StateMachineStore, String> {
        let sm = db.open_tree(TREE_SM).map_err(|e| e.to_string())?;
        if !snapshot_dir.is_dir() {
            std::fs::create_dir_all(snapshot_dir)
                .and_then(|()| match snapshot_dir.parent() {
                    // The new directory's entry is durable before a snapshot goes in it.
                    Some(parent) => std::fs::File::open(parent)?.sync_all(),
                    None => Ok(()),
                })
                .map_err(|e| format!("{}: {e}", snapshot_dir.display()))?;
        }
        let mut applied = Applied::default();
        let mut state = ClusterState::default();
        let has_meta = sm.get(K_SNAP_META).map_err(|e| e.to_string())?.is_some();
        let data = snapshot_bytes(&sm, snapshot_dir).map_err(|e| e.to_string())?;
        // Files no snapshot points at: left by a crash during a save, or by a reset.
        remove_unreferenced(&sm, snapshot_dir).map_err(|e| e.to_string())?;
        if let Some(data) = data {
            if !has_meta {
                return Err("the snapshot has data but no meta".into());
            }
            let body = decode_body(&data)?;
            applied.last_applied = body.last_applied;
            applied.last_membership = body.last_membership;
            state = body.state;
        }
        let (tx, _) = watch::channel(state.revision);
        let closer = log.closer();
        Ok(StateMachineStore {
            state: Arc::new(RwLock::new(state)),
            applied: Arc::new(Mutex::new(applied)),
            revision: Arc::new(tx),
            log,
            sm,
            snapshot_dir: Arc::new(snapshot_dir.to_path_buf()),
            snapshot_write: Arc::new(tokio::sync::Mutex::new(())),
            snapshot_seq: Arc::new(AtomicU64::new(u64::from(rand::random::<u32>()) << 16)),
            epoch: None,
            _closer: closer,
        })
    }

    /// Ties this store to the data dir's reset counter as it is now.
    pub(crate) fn fenced_by(mut self, epoch: Arc<RwLock<u64>>) -> StateMachineStore {
        let now = *epoch.read();
        self.epoch = Some((epoch, now));
        self
    }

    /// The cluster state, updated as entries apply.
    pub fn state(&self) -> SharedState {
        self.state.clone()
    }

    /// The applied revision, published after every applied batch.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }

    fn read_snapshot(
        sm: &sled::Tree,
        dir: &Path,
    ) -> Result<Option<Snapshot<TypeConfig>>, AnyError> {
        let Some(meta) = sm.get(K_SNAP_META).map_err(err)? else {
            return Ok(None);
        };
        let meta: SnapshotMeta<NodeId, BasicNode> = codec::decode(&meta).map_err(err)?;
        let Some(data) = snapshot_bytes(sm, dir)? else {
            return Err(AnyError::error("the snapshot has meta but no data"));
        };
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }

    /// The persisted snapshot's last log id (`Ok(None)` when there is none).
    fn persisted_last_log_id(&self) -> Result<Option<LogId<NodeId>>, AnyError> {
        let Some(meta) = self.sm.get(K_SNAP_META).map_err(err)? else {
            return Ok(None);
        };
        let meta: SnapshotMeta<NodeId, BasicNode> = codec::decode(&meta).map_err(err)?;
        Ok(meta.last_log_id)
    }

    /// Persists a snapshot (meta and data in one batch), unless the persisted one is newer;
    /// returns whether it wrote.
    async fn save_snapshot(
        &self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        data: Arc<Vec<u8>>,
    ) -> Result<bool, AnyError> {
        let _w = self.snapshot_write.lock().await;
        if self.persisted_last_log_id()? > meta.last_log_id {
            return Ok(false);
        }
        // A fresh name: never the file the tree points at now (the sequence restarts at a
        // random value, so a restart could meet it again).
        let name = loop {
            let n = format!(
                "snapshot-{:016x}",
                self.snapshot_seq.fetch_add(1, Ordering::SeqCst)
            );
            if !self.snapshot_dir.join(&n).exists() {
                break n;
            }
        };
        let dir = self.snapshot_dir.clone();
        let file = name.clone();
        // Written and synced (file and directory) before the tree points at it.
        off_runtime(move || write_synced(&dir, &file, &data).map_err(err)).await?;
        let mut b = sled::Batch::default();
        b.insert(K_SNAP_META, codec::encode(meta).map_err(err)?);
        b.insert(K_SNAP_FILE, name.as_bytes());
        b.remove(K_SNAP_DATA);
        {
            // Checked and written under the reset counter's read lock: a reset either waits
            // for this write (and wipes it) or came first (and this store writes nothing).
            let fence = self.epoch.as_ref().map(|(e, at)| (e.read(), *at));
            if let Some((now, at)) = &fence {
                if **now != *at {
                    return Err(AnyError::error(
                        "the data dir was reset since this store opened; snapshot not saved",
                    ));
                }
            }
            self.sm.apply_batch(b).map_err(err)?;
        }
        // Flushed before returning: a snapshot is persisted before the state machine moves on.
        self.log.flusher().flush().await.map_err(err)?;
        let (sm, dir) = (self.sm.clone(), self.snapshot_dir.clone());
        off_runtime(move || remove_unreferenced(&sm, &dir)).await?;
        Ok(true)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        // A consistent view: the applied pointers and the state are read under the state lock,
        // which apply holds while it changes both.
        let (body, last_applied, last_membership) = {
            let st = self.state.read();
            let a = self.applied.lock();
            let body = SnapshotBody {
                last_applied: a.last_applied,
                last_membership: a.last_membership.clone(),
                state: st.clone(),
            };
            (body, a.last_applied, a.last_membership.clone())
        };
        let started = std::time::Instant::now();
        let data = off_runtime(move || encode_body(&body).map(Arc::new))
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, e))?;
        let seq = self.snapshot_seq.fetch_add(1, Ordering::SeqCst);
        let snapshot_id = match last_applied {
            Some(l) => format!(
                "{}-{}-{}-{seq:x}",
                l.leader_id.term, l.leader_id.node_id, l.index
            ),
            None => format!("none-{seq:x}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership,
            snapshot_id,
        };
        // When an install persisted a newer snapshot meanwhile, this one is not persisted and
        // openraft ignores it (it only takes snapshots newer than its current one).
        self.save_snapshot(&meta, data.clone())
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), e))?;
        tracing::info!(
            index = last_applied.map(|l| l.index),
            bytes = data.len(),
            ms = started.elapsed().as_millis() as u64,
            "snapshot built"
        );
        // The file holds its copy: this one is handed to openraft without copying.
        let data = Arc::try_unwrap(data).unwrap_or_else(|d| d.as_ref().clone());
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        let a = self.applied.lock();
        Ok((a.last_applied, a.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        if let Some(last) = entries.last() {
            // Nothing becomes visible before it is durable here. With more than one voter a
            // committed entry already is (see `LogStore`); a one-voter leader commits alone, so
            // this is where its writes wait for their flush.
            self.log
                .wait_durable(last.log_id.index)
                .await
                .map_err(|e| StorageIOError::apply(last.log_id, err(e)))?;
        }
        let mut out = Vec::new();
        let revision = {
            let mut st = self.state.write();
            let mut a = self.applied.lock();
            for e in entries {
                let idx = e.log_id.index;
                a.last_applied = Some(e.log_id);
                let resp = match e.payload {
                    EntryPayload::Blank => {
                        // A new term's leader commits a blank entry first: leader_changed.
                        st.leader_elected(idx, e.log_id.leader_id.node_id);
                        Response {
                            revision: idx,
                            rejected: None,
                            outcome: Default::default(),
                        }
                    }
                    EntryPayload::Normal(req) => st.apply(idx, &req),
                    EntryPayload::Membership(m) => {
                        a.last_membership = StoredMembership::new(Some(e.log_id), m.clone());
                        if st.cluster_id == 0 {
                            st.advance(idx);
                            Response {
                                revision: idx,
                                rejected: None,
                                outcome: Default::default(),
                            }
                        } else {
                            let cmd = Command::SetRoles {
                                voters: m.voter_ids().collect(),
                                learners: m.learner_ids().collect(),
                            };
                            st.apply(idx, &Request { now_ms: 0, cmd })
                        }
                    }
                };
                out.push(resp);
            }
            st.revision
        };
        self.revision.send_replace(revision);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let raw = snapshot.into_inner();
        let bad =
            |e: String| StorageIOError::read_snapshot(Some(meta.signature()), AnyError::error(e));
        let (body, data) = off_runtime(move || {
            let body = decode_body(&raw).map_err(AnyError::error)?;
            Ok((body, Arc::new(raw)))
        })
        .await
        .map_err(|e| bad(e.to_string()))?;
        // A restart starts from the body's pointers; they must be the ones openraft installs.
        if body.last_applied != meta.last_log_id || body.last_membership != meta.last_membership {
            return Err(bad("the snapshot's data does not match its meta".into()).into());
        }
        // Persist first, then replace (never merge) the in-memory state. openraft installs only
        // snapshots newer than what was applied, so the persisted one is never newer.
        let wrote = self
            .save_snapshot(meta, data)
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), e))?;
        if !wrote {
            return Err(StorageIOError::write_snapshot(
                Some(meta.signature()),
                AnyError::error("a newer snapshot is already persisted"),
            )
            .into());
        }
        let revision = {
            let mut st = self.state.write();
            let mut a = self.applied.lock();
            *st = body.state;
            a.last_applied = meta.last_log_id;
            a.last_membership = meta.last_membership.clone();
            st.revision
        };
        self.revision.send_replace(revision);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        // Under the write lock: a save in between would point the tree at a new file and delete
        // the one being read, or pair one snapshot's meta with another's bytes.
        let _w = self.snapshot_write.lock().await;
        let (sm, dir) = (self.sm.clone(), self.snapshot_dir.clone());
        off_runtime(move || Self::read_snapshot(&sm, &dir))
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, e).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn meta(index: u64) -> SnapshotMeta<NodeId, BasicNode> {
        SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), index)),
            last_membership: StoredMembership::default(),
            snapshot_id: format!("s{index}"),
        }
    }

    #[tokio::test]
    async fn a_persisted_snapshot_is_never_replaced_by_an_older_one() {
        let (_dir, db, log) = crate::log_store::tests::open_with_db();
        let dir = tempfile::tempdir().unwrap();
        let sm = StateMachineStore::open(&db, log, dir.path()).unwrap();
        let bytes = |b: &[u8]| Arc::new(b.to_vec());
        assert!(sm.save_snapshot(&meta(5), bytes(b"five")).await.unwrap());
        // A build that took its view before an install of index 5 finished.
        assert!(!sm.save_snapshot(&meta(3), bytes(b"three")).await.unwrap());
        assert!(sm
            .save_snapshot(&meta(5), bytes(b"five again"))
            .await
            .unwrap());
        assert_eq!(sm.persisted_last_log_id().unwrap(), meta(5).last_log_id);
        assert_eq!(
            snapshot_bytes(&sm.sm, dir.path()).unwrap().unwrap(),
            b"five again"
        );
        // Only the current snapshot's file is left, and the tree holds no snapshot bytes.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(sm.sm.get(K_SNAP_DATA).unwrap().is_none());
    }

    #[tokio::test]
    async fn apply_waits_until_the_entries_are_durable() {
        let (_dir, db, log) = crate::log_store::tests::open_with_db();
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachineStore::open(&db, log.clone(), dir.path()).unwrap();
        for index in 1..=20 {
            let e = Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
                payload: EntryPayload::Blank,
            };
            // Written, not yet known flushed: what an append reports to openraft.
            let seq = log.write_entries([e.clone()]).await.unwrap();
            sm.apply([e]).await.unwrap();
            assert!(
                log.flusher().is_durable(seq),
                "entry {index} applied unflushed"
            );
        }
    }

    #[tokio::test]
    async fn a_snapshot_in_the_tree_still_reads_and_a_reopen_finds_the_file() {
        let (dir, db, log) = crate::log_store::tests::open_with_db();
        let snaps = dir.path().join("snapshots");
        let body = SnapshotBody {
            last_applied: meta(7).last_log_id,
            last_membership: StoredMembership::default(),
            state: ClusterState::default(),
        };
        let data = encode_body(&body).unwrap();
        // As data dirs written before snapshot files hold it.
        let sm_tree = db.open_tree(TREE_SM).unwrap();
        sm_tree
            .insert(K_SNAP_META, codec::encode(&meta(7)).unwrap())
            .unwrap();
        sm_tree.insert(K_SNAP_DATA, data.as_slice()).unwrap();
        std::fs::create_dir_all(&snaps).unwrap();
        std::fs::write(snaps.join("snapshot-stale.tmp"), b"left by a crash").unwrap();
        let mut sm = StateMachineStore::open(&db, log.clone(), &snaps).unwrap();
        assert_eq!(sm.applied_state().await.unwrap().0, meta(7).last_log_id);
        assert_eq!(
            std::fs::read_dir(&snaps).unwrap().count(),
            0,
            "stale file removed"
        );
        let got = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(got.snapshot.into_inner(), data);
        // A new snapshot goes to a file, and a reopen starts from it.
        let built = sm.build_snapshot().await.unwrap();
        let again = StateMachineStore::open(&db, log, &snaps).unwrap();
        assert_eq!(
            again.applied.lock().last_applied,
            built.meta.last_log_id,
            "reopened from the file"
        );
        assert_eq!(std::fs::read_dir(&snaps).unwrap().count(), 1);
        assert!(sm_tree.get(K_SNAP_DATA).unwrap().is_none());
    }

    #[test]
    fn snapshots_over_the_limit_are_refused() {
        let big = vec![b' '; MAX_SNAPSHOT_BYTES + 1];
        let e = decode_body(&big).err().unwrap();
        assert!(e.contains("over the"), "{e}");
    }
}
