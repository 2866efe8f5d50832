//! `Image`: the durable image of one directory tree, updated at each sync, and the restore that
//! rebuilds the tree from it after a simulated power cut.
//!
//! Layout of the image directory: `files/<key>` (a file's content at its last sync), `dirs/<key>`
//! (a directory's entries at its last sync: one `f|d <key> <hex name>` line each), `events` (one
//! `<pid> <op> <path>` line per sync call seen under the root) and `errors` (anything the shim
//! failed to record; a restore refuses to run while it is there). A key names one file for its
//! whole life: its inode number and its birth time (an inode number alone may be reused).

use std::ffi::{CStr, CString};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Event, Names, Restored, SyncOp, ENV_IMAGE, ENV_ROOT};

/// Makes temporary names unique within a process.
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// The durable image of the tree under `root`, kept in `dir`.
#[derive(Debug, Clone)]
pub struct Image {
    root: PathBuf,
    dir: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
}

impl Image {
    /// The image of `root` (which must exist) kept in `dir` (created if missing, outside root).
    pub fn new(root: &Path, dir: &Path) -> io::Result<Image> {
        let root = fs::canonicalize(root)?;
        fs::create_dir_all(dir.join("files"))?;
        fs::create_dir_all(dir.join("dirs"))?;
        let dir = fs::canonicalize(dir)?;
        if dir.starts_with(&root) {
            return Err(io::Error::other("the image must be outside the root"));
        }
        Ok(Image { root, dir })
    }

    /// The image named by [`ENV_ROOT`] and [`ENV_IMAGE`]; `None` when they are not set.
    pub fn from_env() -> Option<io::Result<Image>> {
        let root = std::env::var_os(ENV_ROOT)?;
        let dir = std::env::var_os(ENV_IMAGE)?;
        Some(Image::new(Path::new(&root), Path::new(&dir)))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The environment a process needs (beside `LD_PRELOAD`) to keep this image.
    pub fn env(&self) -> [(&'static str, PathBuf); 2] {
        [(ENV_ROOT, self.root.clone()), (ENV_IMAGE, self.dir.clone())]
    }

    /// The path of `fd` relative to the root, or `None` when it is not under it.
    pub fn relative(&self, fd: RawFd) -> Option<PathBuf> {
        let path = fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
        let rel = path.strip_prefix(&self.root).ok()?;
        Some(rel.to_path_buf())
    }

    /// What `fsync(fd)` promises, after it returned: the file's content, or the directory's
    /// entries, are durable. Does nothing for a descriptor outside the root.
    pub fn sync_fd(&self, fd: RawFd) -> io::Result<()> {
        if self.relative(fd).is_none() {
            return Ok(());
        }
        let proc_path = PathBuf::from(format!("/proc/self/fd/{fd}"));
        let (key, kind) = statx_key(fd, c"", libc::AT_EMPTY_PATH)?;
        match kind {
            Some(Kind::File) => self.save_file(&proc_path, &key),
            Some(Kind::Dir) => self.save_dir(&proc_path, &key),
            None => Ok(()),
        }
    }

    /// What `syncfs`/`sync` promise: every file and directory under the root is durable.
    pub fn sync_tree(&self) -> io::Result<()> {
        self.save_tree(&self.root.clone())
    }

    fn save_tree(&self, dir: &Path) -> io::Result<()> {
        let (key, _) = key_of(dir)?;
        self.save_dir(dir, &key)?;
        for e in fs::read_dir(dir)? {
            let path = e?.path();
            match key_of(&path)? {
                (_, Some(Kind::Dir)) => self.save_tree(&path)?,
                (key, Some(Kind::File)) => self.save_file(&path, &key)?,
                (_, None) => {}
            }
        }
        Ok(())
    }

    /// Copies the file's whole content (a real fsync makes all of it durable).
    fn save_file(&self, src: &Path, key: &str) -> io::Result<()> {
        let dst = self.dir.join("files").join(key);
        let tmp = self.tmp_path(&dst);
        fs::copy(src, &tmp)?;
        fs::rename(&tmp, &dst)
    }

    fn save_dir(&self, src: &Path, key: &str) -> io::Result<()> {
        let mut listing = String::new();
        for e in fs::read_dir(src)? {
            let e = e?;
            let (entry_key, kind) = match key_of(&e.path()) {
                Ok(k) => k,
                // Removed since read_dir saw it.
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => return Err(err),
            };
            let tag = match kind {
                Some(Kind::File) => 'f',
                Some(Kind::Dir) => 'd',
                None => continue,
            };
            let name = hex(e.file_name().as_bytes());
            listing.push_str(&format!("{tag} {entry_key} {name}\n"));
        }
        let dst = self.dir.join("dirs").join(key);
        let tmp = self.tmp_path(&dst);
        fs::write(&tmp, listing)?;
        fs::rename(&tmp, &dst)
    }

    fn tmp_path(&self, dst: &Path) -> PathBuf {
        let n = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let mut name = dst.as_os_str().to_owned();
        name.push(format!(".tmp.{}.{n}", std::process::id()));
        PathBuf::from(name)
    }

    /// Appends `op` on `path` (relative to the root) to the event log.
    pub fn record(&self, op: SyncOp, path: &Path) -> io::Result<()> {
        let line = format!("{} {} {}\n", std::process::id(), op.name(), path.display());
        self.append("events", &line)
    }

    /// Notes that the shim could not keep the image up to date; [`Image::restore`] then fails.
    pub fn record_error(&self, what: &str) {
        let line = format!("{}: {what}\n", std::process::id());
        let _ = self.append("errors", &line);
    }

    fn append(&self, file: &str, line: &str) -> io::Result<()> {
        // One write of one short line with O_APPEND: lines of concurrent writers never mix.
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(file))?
            .write_all(line.as_bytes())
    }

    /// Every sync call seen so far, in order.
    pub fn events(&self) -> io::Result<Vec<Event>> {
        let text = match fs::read_to_string(self.dir.join("events")) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        text.lines()
            .map(|l| {
                let mut parts = l.splitn(3, ' ');
                let pid = parts.next().and_then(|p| p.parse().ok());
                let op = parts.next().and_then(SyncOp::parse);
                let path = parts.next().unwrap_or_default().to_string();
                match (pid, op) {
                    (Some(pid), Some(op)) => Ok(Event { pid, op, path }),
                    _ => Err(io::Error::other(format!("bad event line {l:?}"))),
                }
            })
            .collect()
    }

    /// The power cut: rebuilds the root (the directory itself stays) from the image, keeping
    /// only durable content and the names `names` says, and makes the image describe exactly the
    /// restored tree. Call it only once the writing process has been SIGKILLed.
    pub fn restore(&self, names: Names) -> io::Result<Restored> {
        if let Ok(errors) = fs::read_to_string(self.dir.join("errors")) {
            return Err(io::Error::other(format!("the shim failed: {errors}")));
        }
        let stage = self.stage_path()?;
        if stage.exists() {
            fs::remove_dir_all(&stage)?;
        }
        fs::create_dir(&stage)?;
        let mut stats = Restored::default();
        match names {
            Names::Synced => {
                let (root_key, _) = key_of(&self.root)?;
                self.build_from_listing(&root_key, &stage, &mut stats)?;
            }
            Names::Current => self.build_from_tree(&self.root.clone(), &stage, &mut stats)?,
        }
        for e in fs::read_dir(&self.root)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                fs::remove_dir_all(e.path())?;
            } else {
                fs::remove_file(e.path())?;
            }
        }
        for e in fs::read_dir(&stage)? {
            let e = e?;
            fs::rename(e.path(), self.root.join(e.file_name()))?;
        }
        fs::remove_dir(&stage)?;
        for sub in ["files", "dirs"] {
            fs::remove_dir_all(self.dir.join(sub))?;
            fs::create_dir(self.dir.join(sub))?;
        }
        self.sync_tree()?;
        Ok(stats)
    }

    /// A sibling of the root (same file system, so entries move by rename).
    fn stage_path(&self) -> io::Result<PathBuf> {
        let parent = self
            .root
            .parent()
            .ok_or_else(|| io::Error::other("the root has no parent"))?;
        let name = self.root.file_name().unwrap_or_default().to_string_lossy();
        Ok(parent.join(format!(".{name}.powerloss-stage")))
    }

    fn build_from_listing(&self, key: &str, dst: &Path, stats: &mut Restored) -> io::Result<()> {
        stats.dirs += 1;
        let listing = match fs::read_to_string(self.dir.join("dirs").join(key)) {
            Ok(l) => l,
            // Never synced: empty.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for line in listing.lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            let [tag, key, name] = parts[..] else {
                return Err(io::Error::other(format!("bad listing line {line:?}")));
            };
            let name = unhex(name).ok_or_else(|| io::Error::other("bad name in listing"))?;
            let path = dst.join(std::ffi::OsStr::from_bytes(&name));
            if tag == "d" {
                fs::create_dir(&path)?;
                self.build_from_listing(key, &path, stats)?;
            } else {
                self.restore_file(key, &path, stats)?;
            }
        }
        Ok(())
    }

    fn build_from_tree(&self, src: &Path, dst: &Path, stats: &mut Restored) -> io::Result<()> {
        stats.dirs += 1;
        for e in fs::read_dir(src)? {
            let e = e?;
            let path = dst.join(e.file_name());
            match key_of(&e.path())? {
                (_, Some(Kind::Dir)) => {
                    fs::create_dir(&path)?;
                    self.build_from_tree(&e.path(), &path, stats)?;
                }
                (key, Some(Kind::File)) => self.restore_file(&key, &path, stats)?,
                (_, None) => {}
            }
        }
        Ok(())
    }

    /// The file's last synced content, or an empty file when it was never synced.
    fn restore_file(&self, key: &str, dst: &Path, stats: &mut Restored) -> io::Result<()> {
        stats.files += 1;
        match fs::copy(self.dir.join("files").join(key), dst) {
            Ok(n) => stats.bytes += n,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::File::create(dst)?;
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

/// The key of the file at `path` (not following a last symlink) and whether it is a regular
/// file or a directory (`None`: something else, which the image ignores).
fn key_of(path: &Path) -> io::Result<(String, Option<Kind>)> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    statx_key(libc::AT_FDCWD, &c, libc::AT_SYMLINK_NOFOLLOW)
}

fn statx_key(dirfd: RawFd, path: &CStr, flags: libc::c_int) -> io::Result<(String, Option<Kind>)> {
    // SAFETY: a zeroed statx buffer is valid; statx(2) fills it.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: statx(2) with a valid C string and buffer.
    let r = unsafe {
        libc::statx(
            dirfd,
            path.as_ptr(),
            flags,
            libc::STATX_TYPE | libc::STATX_INO | libc::STATX_BTIME,
            &mut st,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let key = if st.stx_mask & libc::STATX_BTIME != 0 {
        format!(
            "{}-{}.{:09}",
            st.stx_ino, st.stx_btime.tv_sec, st.stx_btime.tv_nsec
        )
    } else {
        st.stx_ino.to_string()
    };
    let kind = match u32::from(st.stx_mode) & libc::S_IFMT {
        libc::S_IFREG => Some(Kind::File),
        libc::S_IFDIR => Some(Kind::Dir),
        _ => None,
    };
    Ok((key, kind))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
