//! The damage check of a data dir, run before sled opens it for writing, and the seal a clean
//! close leaves for it.
//!
//! sled treats a bad record as the torn tail of a crash: it cuts its log there and rewrites the
//! rest, so a damaged store would start, serve part of its data, and be changed beyond repair
//! by the attempt. Two checks tell damage apart from a crash, and neither writes to the dir:
//!
//! - **After a clean close** ([`seal`]), a `CLEAN` file lists every file of `db/` with its length
//!   and CRC-32. The next open compares them byte for byte: any difference is damage. The seal is
//!   removed (durably) before sled opens the db, so it never outlives the files it describes.
//! - **After a crash** (no seal), sled's recovery runs on a copy of `db/` in the temporary
//!   directory, every tree is read whole (so every record's CRC is checked), and the log's end is
//!   compared with the durable watermark (`watermark.rs`): a log that ends below it lost entries
//!   that were durable, which a crash cannot do. A panic inside sled's recovery counts as damage.
//!
//! A torn tail beyond the watermark is normal crash recovery and passes.

use std::fs::File;
use std::io::{self, Read};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use openraft::LogId;
use tracing::{info, warn};

use crate::data_dir::{open_config, K_FORMAT, K_NODE_ID, TREE_LOG, TREE_META, TREE_RAFT, TREE_SM};
use crate::error::StoreError;
use crate::log_store::K_PURGED;
use crate::state_machine::K_SNAP_META;
use crate::{watermark, NodeId};

/// The seal of a clean close, in the data dir.
pub(crate) const CLEAN_FILE: &str = "CLEAN";
const CLEAN_HEADER: &str = "ekka-rs clean close, format 1";

/// Checks the data dir at `path` (its marker says it is complete) for damage; see the module
/// docs. Changes nothing in it but the removal of a seal that matched. Returns whether the check
/// was complete: `false` when the crash check could not copy the db, so the open must check what
/// sled recovered itself.
pub(crate) fn check(path: &Path) -> Result<bool, StoreError> {
    let io_err = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let damaged = |what: String| StoreError::Damaged {
        path: path.to_path_buf(),
        what,
    };
    let db_dir = path.join("db");
    if !db_dir.is_dir() {
        return Err(damaged("its db directory is missing".into()));
    }
    match std::fs::read_to_string(path.join(CLEAN_FILE)) {
        Ok(text) => {
            verify_seal(path, &text).map_err(damaged)?;
            std::fs::remove_file(path.join(CLEAN_FILE)).map_err(io_err)?;
            File::open(path)
                .and_then(|d| d.sync_all())
                .map_err(io_err)?;
            return Ok(true);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            return Err(damaged(format!("{CLEAN_FILE} is not text")))
        }
        Err(e) => return Err(io_err(e)),
    }
    let mark = watermark::read(path).map_err(io_err)?.map_err(damaged)?;
    let copy = match tempfile::Builder::new().prefix("ekka-check-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            warn!(error = %e, "no room for the damage check's copy; checking after open only");
            return Ok(false);
        }
    };
    let copy_db = copy.path().join("db");
    if let Err(e) = copy_tree(&db_dir, &copy_db) {
        warn!(error = %e, "cannot copy the db for the damage check; checking after open only");
        return Ok(false);
    }
    let snapshots = path.join(SEALED_DIRS[1]);
    let inspected = std::panic::catch_unwind(AssertUnwindSafe(|| inspect(&copy_db, &snapshots)));
    let last = match inspected {
        Ok(r) => r.map_err(damaged)?,
        Err(p) => {
            let why = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown".into());
            return Err(damaged(format!("sled's recovery failed: {why}")));
        }
    };
    check_end(last, mark).map_err(damaged)?;
    info!(path = %path.display(), last_index = last, "damage check passed");
    Ok(true)
}

/// Whether a log ending at `last` may follow a durable watermark `mark`.
pub(crate) fn check_end(last: u64, mark: Option<u64>) -> Result<(), String> {
    match mark {
        Some(m) if last < m => Err(format!(
            "its log ends at index {last}, below index {m}, which it had made durable"
        )),
        _ => Ok(()),
    }
}

/// Opens a sled db (a copy), reads every tree whole, reads and decodes the snapshot it points at
/// in `snapshots` (read only), and returns the log's last index (the purge point if the log is
/// empty).
fn inspect(db_dir: &Path, snapshots: &Path) -> Result<u64, String> {
    let db = open_config(db_dir)
        .open()
        .map_err(|e| format!("sled cannot recover it: {e}"))?;
    for name in db.tree_names() {
        let tree = db
            .open_tree(&name)
            .map_err(|e| format!("sled: tree {}: {e}", String::from_utf8_lossy(&name)))?;
        for kv in tree.iter() {
            kv.map_err(|e| format!("sled: tree {}: {e}", String::from_utf8_lossy(&name)))?;
        }
    }
    crate::state_machine::check_persisted(&db, snapshots)?;
    consistent(&db)
}

/// Checks what a db holds against itself, and returns the log's last index (the purge point's
/// when the log is empty): the meta records exist, the log has no hole above its purge point (a
/// lost page makes sled drop records silently), a purged log has a snapshot.
pub(crate) fn consistent(db: &sled::Db) -> Result<u64, String> {
    let err = |e: sled::Error| format!("sled: {e}");
    let meta = db.open_tree(TREE_META).map_err(err)?;
    for k in [K_FORMAT, K_NODE_ID] {
        if meta.get(k).map_err(err)?.is_none() {
            return Err(format!(
                "its db has no {} record",
                String::from_utf8_lossy(k)
            ));
        }
    }
    let raft = db.open_tree(TREE_RAFT).map_err(err)?;
    let purged = match raft.get(K_PURGED).map_err(err)? {
        None => None,
        Some(v) => {
            let id: LogId<NodeId> =
                ekka_codec::decode(&v).map_err(|e| format!("unreadable purge point: {e}"))?;
            Some(id.index)
        }
    };
    if purged.is_some() {
        let sm = db.open_tree(TREE_SM).map_err(err)?;
        if sm.get(K_SNAP_META).map_err(err)?.is_none() {
            return Err("its log was purged but it holds no snapshot".into());
        }
    }
    let log = db.open_tree(TREE_LOG).map_err(err)?;
    // Entries at or below the purge point may remain after a crash; the open deletes them.
    let from = purged.map_or(0, |p| p.saturating_add(1));
    // A log never purged starts at index 0 or 1 (openraft's first); `None` until its first key.
    let mut expected = purged.map(|_| from);
    let mut last = purged.unwrap_or(0);
    for k in log.range(from.to_be_bytes()..).keys() {
        let k = k.map_err(err)?;
        let index = u64::from_be_bytes(
            k.as_ref()
                .try_into()
                .map_err(|_| "a log key is not 8 bytes".to_string())?,
        );
        match expected {
            None if index > 1 => {
                return Err(format!(
                    "its log starts at index {index}, not at its beginning"
                ))
            }
            Some(e) if index != e => {
                return Err(format!(
                    "its log has a hole: index {e} is missing before {index}"
                ))
            }
            _ => {}
        }
        expected = Some(index + 1);
        last = index;
    }
    Ok(last)
}

fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dst = to.join(e.file_name());
        let ty = e.file_type()?;
        if ty.is_dir() {
            copy_tree(&e.path(), &dst)?;
        } else if ty.is_file() {
            std::fs::copy(e.path(), dst)?;
        }
    }
    Ok(())
}

/// The parts of a data dir the seal covers: sled's files and the snapshot files.
const SEALED_DIRS: [&str; 2] = ["db", "snapshots"];

/// Every regular file under `dir`, relative to it, sorted.
fn files_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
        for e in std::fs::read_dir(root.join(rel))? {
            let e = e?;
            let r = rel.join(e.file_name());
            let ty = e.file_type()?;
            if ty.is_dir() {
                walk(root, &r, out)?;
            } else if ty.is_file() {
                out.push(r);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for sub in SEALED_DIRS {
        match walk(dir, Path::new(sub), &mut out) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            r => r?,
        }
    }
    out.sort();
    Ok(out)
}

/// `(length, CRC-32)` of a file.
fn file_sum(path: &Path) -> io::Result<(u64, u32)> {
    let mut f = File::open(path)?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok((len, h.finalize()));
        }
        len += n as u64;
        h.update(&buf[..n]);
    }
}

/// The seal's text for the sealed files of the data dir at `path` as they are now.
fn seal_text(path: &Path) -> io::Result<String> {
    let mut body = String::new();
    for rel in files_under(path)? {
        let Some(name) = rel.to_str() else {
            return Err(io::Error::other(format!("file name {rel:?} is not UTF-8")));
        };
        let (len, crc) = file_sum(&path.join(&rel))?;
        body.push_str(&format!("{crc:08x} {len} {name}\n"));
    }
    let crc = crc32fast::hash(body.as_bytes());
    Ok(format!("{CLEAN_HEADER}\n{body}end {crc:08x}\n"))
}

/// Compares a seal with the sealed files of the data dir at `path`; the error says what differs.
fn verify_seal(path: &Path, text: &str) -> Result<(), String> {
    let Some(rest) = text
        .strip_prefix(CLEAN_HEADER)
        .and_then(|r| r.strip_prefix('\n'))
    else {
        return Err(format!("{CLEAN_FILE} is not a seal this version writes"));
    };
    let Some((body, end)) = rest.rsplit_once("end ") else {
        return Err(format!("{CLEAN_FILE} is cut short"));
    };
    let crc = crc32fast::hash(body.as_bytes());
    if end.trim() != format!("{crc:08x}") {
        return Err(format!("{CLEAN_FILE} does not match its own checksum"));
    }
    let now = seal_text(path).map_err(|e| format!("cannot read the store's files: {e}"))?;
    if now == text {
        return Ok(());
    }
    // Say which file differs.
    let listed: Vec<&str> = body.lines().collect();
    let now_lines: Vec<&str> = now.lines().skip(1).collect();
    for line in &listed {
        if !now_lines.contains(line) {
            let name = line.splitn(3, ' ').nth(2).unwrap_or("?");
            return Err(format!(
                "{name} changed since the agent last stopped (was {line:?})"
            ));
        }
    }
    Err("the store holds a file that was not there when the agent last stopped".into())
}

/// Leaves the seal of a clean close for the data dir at `path`: sled must be closed (its lock on
/// `db/db` free) and everything flushed. Errors are only logged: without a seal the next open
/// runs the crash check instead.
pub(crate) fn seal(path: &Path) {
    let r = (|| -> io::Result<()> {
        let text = seal_text(path)?;
        let tmp = path.join(format!("{CLEAN_FILE}.tmp"));
        std::fs::write(&tmp, text)?;
        File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path.join(CLEAN_FILE))?;
        File::open(path)?.sync_all()
    })();
    match r {
        Ok(()) => info!(path = %path.display(), "data dir sealed"),
        Err(e) => warn!(path = %path.display(), error = %e, "cannot seal the data dir"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seal_matches_its_files_and_names_the_one_that_changed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let db = p.join("db");
        std::fs::create_dir_all(db.join("blobs")).unwrap();
        std::fs::create_dir_all(p.join("snapshots")).unwrap();
        std::fs::write(db.join("db"), vec![1u8; 5000]).unwrap();
        std::fs::write(db.join("blobs/7"), b"blob").unwrap();
        std::fs::write(p.join("snapshots/snapshot-1"), b"state").unwrap();
        let text = seal_text(p).unwrap();
        verify_seal(p, &text).unwrap();
        std::fs::write(db.join("blobs/7"), b"blub").unwrap();
        let e = verify_seal(p, &text).unwrap_err();
        assert!(e.contains("db/blobs/7 changed"), "{e}");
        std::fs::write(db.join("blobs/7"), b"blob").unwrap();
        std::fs::write(p.join("snapshots/snapshot-1"), b"stale").unwrap();
        let e = verify_seal(p, &text).unwrap_err();
        assert!(e.contains("snapshots/snapshot-1 changed"), "{e}");
        std::fs::write(p.join("snapshots/snapshot-1"), b"state").unwrap();
        std::fs::write(db.join("extra"), b"").unwrap();
        assert!(verify_seal(p, &text).is_err());
        std::fs::remove_file(db.join("extra")).unwrap();
        assert!(verify_seal(p, &text[..text.len() - 3]).is_err());
    }

    #[test]
    fn a_log_below_the_watermark_is_damage() {
        assert!(check_end(10, Some(10)).is_ok());
        assert!(check_end(11, Some(10)).is_ok());
        assert!(check_end(0, None).is_ok());
        assert!(check_end(9, Some(10)).is_err());
    }
}
