//! `DiskSync`: makes what sled has written durable on the device, not only in the page cache.
//!
//! sled 0.34's `flush` writes its buffers and calls `sync_file_range` on Linux, which neither
//! flushes the device's write cache nor the file's metadata (its size when it grew); its blob
//! files (values too large for a log segment) and its config file are written without any sync,
//! and no directory is synced. A power loss could drop acknowledged writes. So after every sled
//! flush that must be durable, [`DiskSync::sync`] calls `fdatasync` on sled's log file (`db/db`),
//! and `fsync` on every file of `db/` and `db/blobs/` it has not synced yet, and then on the
//! directory that gained it. sled writes blobs before the write that points at them returns, so a
//! sync after the flush covers them.
//!
//! One `DiskSync` serves a data dir; the flusher thread and the data dir's own writes share it
//! behind a mutex, so one sync at a time runs and every caller's flush is followed by one.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// sled's log file and its blob directory, inside the db directory.
const DB_FILE: &str = "db";
const BLOBS: &str = "blobs";

/// See the module docs.
pub(crate) struct DiskSync {
    db_dir: PathBuf,
    /// sled's log file, opened read-only: `fdatasync` works on any descriptor of the file.
    db_file: File,
    /// Files (relative to `db_dir`) already fsynced since open; sled never rewrites them in place.
    synced: HashSet<PathBuf>,
    /// How many device syncs this has issued (the log file's included).
    n_syncs: u64,
}

impl DiskSync {
    /// Opens sled's log file in `db_dir` (sled must have created it).
    pub(crate) fn open(db_dir: &Path) -> io::Result<DiskSync> {
        let db_file = File::open(db_dir.join(DB_FILE))?;
        Ok(DiskSync {
            db_dir: db_dir.to_path_buf(),
            db_file,
            synced: HashSet::new(),
            n_syncs: 0,
        })
    }

    /// Makes everything sled has written so far durable. Call it after `sled::Db::flush`.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        self.db_file.sync_data()?;
        self.n_syncs += 1;
        self.sync_new_files(Path::new(""))?;
        self.sync_new_files(Path::new(BLOBS))
    }

    /// How many device syncs this has issued.
    pub(crate) fn n_syncs(&self) -> u64 {
        self.n_syncs
    }

    /// fsyncs the regular files of `db_dir/rel` not synced yet, then the directory if it gained
    /// any; forgets files that are gone.
    fn sync_new_files(&mut self, rel: &Path) -> io::Result<()> {
        let dir = self.db_dir.join(rel);
        let mut present = Vec::new();
        let mut gained = false;
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            // sled creates `blobs` at open; nothing to sync if it is missing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for e in entries {
            let e = e?;
            if !e.file_type()?.is_file() {
                continue;
            }
            let name = rel.join(e.file_name());
            if rel.as_os_str().is_empty() && name == Path::new(DB_FILE) {
                // Synced above on every call.
                if self.synced.insert(name.clone()) {
                    gained = true;
                }
                present.push(name);
                continue;
            }
            if !self.synced.contains(&name) {
                match File::open(e.path()) {
                    Ok(f) => {
                        f.sync_all()?;
                        self.n_syncs += 1;
                    }
                    // sled removed it meanwhile (an old snapshot, a collected blob).
                    Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                    Err(err) => return Err(err),
                }
                self.synced.insert(name.clone());
                gained = true;
            }
            present.push(name);
        }
        if gained {
            File::open(&dir)?.sync_all()?;
            self.n_syncs += 1;
        }
        let under: Vec<PathBuf> = self
            .synced
            .iter()
            .filter(|p| p.parent() == Some(rel) && !present.contains(p))
            .cloned()
            .collect();
        for p in under {
            self.synced.remove(&p);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_the_log_file_every_time_and_new_files_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        db.insert(b"k", b"v".to_vec()).unwrap();
        db.flush().unwrap();
        let mut s = DiskSync::open(dir.path()).unwrap();
        s.sync().unwrap();
        let first = s.n_syncs();
        assert!(
            first >= 3,
            "the log file, sled's conf file and the dir: {first}"
        );
        s.sync().unwrap();
        assert_eq!(s.n_syncs(), first + 1, "only the log file again");
        // A blob: a value too large for a log segment gets a file of its own.
        db.insert(b"big", vec![7u8; 1 << 20]).unwrap();
        db.flush().unwrap();
        s.sync().unwrap();
        assert_eq!(
            s.n_syncs(),
            first + 4,
            "the log file, the new blob and the blobs dir"
        );
    }
}
