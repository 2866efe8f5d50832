//! `Flusher`: makes sled writes durable (on the device) on one dedicated thread, with group commit.
//!
//! sled's `flush_async` runs every flush as a job on sled's thread pool, whose queue wakes all
//! of its idle threads for each job. Under load that cost more than the flushes: a 3-node cluster
//! at 10,000 writes/s made about 40,000 futex calls per second in the pool's threads for about
//! 3,200 flushes (perf trace, 2026-11-30). Here one thread per data dir takes flush requests from
//! a channel, and one flush answers every request waiting when it starts.
//!
//! Every write that may need to become durable takes a number with [`Flusher::note`] after it
//! is made. [`Flusher::request`] asks for a flush that covers a number, and [`Flusher::wait`]
//! asks and returns once such a flush has finished. A flush covers every write numbered before
//! it starts: numbers are handed out after the write, and the thread reads the last number handed
//! out just before it flushes. Taking a number costs nothing; asking for a flush of a number that
//! an earlier request already covers costs nothing either, so callers ask only once they need
//! durability (the leader when it sends entries, a follower before it answers), and one flush
//! serves every write made before it (group commit). Each flush costs a job on sled's thread
//! pool, a wake-up of its idle threads and a `sync_file_range` (about a third of the agents' CPU
//! under a 64-client put load when the leader flushed after every append, perf 2026-12-01), and
//! then the device sync of sled's files (`sync.rs`): only after that is a write durable.
//!
//! The thread holds the db only while it flushes (each request carries a handle), so once the
//! stores are dropped nothing keeps the db, and its file lock, alive.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use parking_lot::Mutex;

use tokio::sync::watch;

use crate::sync::DiskSync;

/// A flush request: the db to flush.
struct Request {
    db: sled::Db,
}

/// What the flusher thread has made durable.
#[derive(Clone, Debug, Default)]
struct Durable {
    /// Every write numbered up to this is durable.
    seq: u64,
    /// A flush failed: nothing after it is known durable, ever.
    failed: Option<String>,
}

/// A handle on the flusher thread of one db. Cheap to clone; the thread ends when the last
/// handle is dropped.
#[derive(Clone)]
pub(crate) struct Flusher {
    db: sled::Db,
    tx: mpsc::Sender<Request>,
    /// The last number handed out.
    next: Arc<AtomicU64>,
    /// The highest number a request has been sent for.
    requested: Arc<AtomicU64>,
    durable: watch::Receiver<Durable>,
}

impl Flusher {
    /// Starts the flusher thread of `db`. Each flush is followed by `sync` (the device sync of
    /// sled's files); the durable write number is then sent to `on_durable`, if given.
    pub(crate) fn start(
        db: &sled::Db,
        sync: Arc<Mutex<DiskSync>>,
        on_durable: Option<mpsc::Sender<u64>>,
    ) -> Result<Flusher, String> {
        let (tx, rx) = mpsc::channel::<Request>();
        let (durable_tx, durable) = watch::channel(Durable::default());
        let next = Arc::new(AtomicU64::new(0));
        let last = next.clone();
        std::thread::Builder::new()
            .name("ekka-flush".into())
            .spawn(move || run(rx, &last, &sync, durable_tx, on_durable))
            .map_err(|e| format!("cannot start the flusher thread: {e}"))?;
        Ok(Flusher {
            db: db.clone(),
            tx,
            next,
            requested: Arc::new(AtomicU64::new(0)),
            durable,
        })
    }

    /// Numbers the writes made so far, without asking for a flush.
    pub(crate) fn note(&self) -> u64 {
        self.next.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Asks for a flush that covers write number `seq`, unless one was already asked for.
    pub(crate) fn request(&self, seq: u64) {
        if self.is_durable(seq) || self.requested.fetch_max(seq, Ordering::SeqCst) >= seq {
            // An earlier request for a number at least as high was sent after this write was
            // made, so the flush that serves it starts after this write too.
            return;
        }
        // A send fails only when the thread has gone; `wait` reports that.
        let _ = self.tx.send(Request {
            db: self.db.clone(),
        });
    }

    /// Whether write number `seq` is known to be durable now.
    pub(crate) fn is_durable(&self, seq: u64) -> bool {
        self.durable.borrow().seq >= seq
    }

    /// Asks for a flush that covers write number `seq` and returns once it is durable.
    pub(crate) async fn wait(&self, seq: u64) -> std::io::Result<()> {
        self.request(seq);
        let mut rx = self.durable.clone();
        let d = rx
            .wait_for(|d| d.seq >= seq || d.failed.is_some())
            .await
            .map_err(|_| std::io::Error::other("the flusher thread has stopped"))?;
        match &d.failed {
            Some(e) if d.seq < seq => Err(std::io::Error::other(format!("flush failed: {e}"))),
            _ => Ok(()),
        }
    }

    /// Why a flush failed, once one has: nothing written since is known durable, ever.
    pub(crate) fn failure(&self) -> Option<String> {
        self.durable.borrow().failed.clone()
    }

    /// Returns once every write made before this call is durable.
    pub(crate) async fn flush(&self) -> std::io::Result<()> {
        self.wait(self.note()).await
    }
}

fn run(
    rx: mpsc::Receiver<Request>,
    last: &AtomicU64,
    sync: &Mutex<DiskSync>,
    durable: watch::Sender<Durable>,
    on_durable: Option<mpsc::Sender<u64>>,
) {
    while let Ok(first) = rx.recv() {
        // Every request waiting now is served by this one flush.
        rx.try_iter().for_each(drop);
        // Read before the flush: every write numbered up to here was made before it starts.
        let upto = last.load(Ordering::SeqCst);
        // All requests of one channel are for the same db (the handle holds it).
        let r = flush_durably(&first.db, sync);
        drop(first);
        let mut ok = false;
        durable.send_modify(|d| match &r {
            Ok(()) if d.failed.is_none() => {
                d.seq = d.seq.max(upto);
                ok = true;
            }
            Ok(()) => {}
            Err(e) => {
                // Sticky: after a failed fsync the kernel may drop the dirty pages and report
                // the next fsync clean, so no later flush can vouch for these writes.
                d.failed.get_or_insert_with(|| e.clone());
            }
        });
        if let (true, Some(tx)) = (ok, &on_durable) {
            // The watermark thread may have ended with an error; the flush stays good.
            let _ = tx.send(upto);
        }
    }
}

/// sled's flush (its buffers written, `sync_file_range`), then the device sync of its files.
pub(crate) fn flush_durably(db: &sled::Db, sync: &Mutex<DiskSync>) -> Result<(), String> {
    db.flush().map_err(|e| e.to_string())?;
    sync.lock().sync().map_err(|e| format!("sync: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let dst = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy_dir(&e.path(), &dst);
            } else {
                std::fs::copy(e.path(), dst).unwrap();
            }
        }
    }

    #[tokio::test]
    async fn concurrent_flushes_all_answer_and_make_earlier_writes_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        // No background flushes: only ours can put the write in the files.
        let db = sled::Config::new()
            .path(&path)
            .flush_every_ms(None)
            .open()
            .unwrap();
        let sync = Arc::new(Mutex::new(DiskSync::open(&path).unwrap()));
        let f = Flusher::start(&db, sync.clone(), None).unwrap();
        db.insert(b"k", b"v".to_vec()).unwrap();
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let f = f.clone();
                tokio::spawn(async move { f.flush().await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        // What the files hold now, opened by a second sled instance.
        let copy = dir.path().join("copy");
        copy_dir(&path, &copy);
        let seen = sled::Config::new().path(&copy).open().unwrap();
        assert_eq!(seen.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));

        assert!(
            sync.lock().n_syncs() >= 1,
            "the flush is followed by a device sync"
        );

        // Once the handles and the db are dropped, nothing holds the db's lock.
        drop(f);
        drop(db);
        sled::Config::new().path(&path).open().unwrap();
    }
}
