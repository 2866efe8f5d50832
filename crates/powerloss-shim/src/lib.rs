//! The LD_PRELOAD shim of `ekka-powerloss` (Linux): interposes the sync calls of libc and keeps
//! the durable image of the directory named by `EKKA_POWERLOSS_DIR` (see that crate).
//!
//! Only the sync calls are interposed, because only they decide what is durable: `fsync` and
//! `fdatasync` (which Rust's `File::sync_all` and `sync_data` call), `syncfs`, `sync`, and
//! `sync_file_range` (sled 0.34's flush), which passes through and is only logged. Writes,
//! renames and unlinks need no hook: a sync copies what the file or directory holds right then.
//! Each hook makes the real system call first (through `syscall(2)`, so no symbol lookup can
//! come back here) and records the image only once it succeeded: a process killed before
//! that had not been told its data was durable.
//!
//! The shim must never break the process: no panic leaves a hook (`catch_unwind`), a hook
//! entered again from its own work (on the same thread) only makes the system call, and a
//! failure to record the image is written to the image's `errors` file, which makes the test's
//! restore fail instead of losing data silently. Without the two variables it does nothing.

use std::cell::Cell;
use std::os::raw::{c_int, c_uint};
use std::sync::{Mutex, OnceLock};

use ekka_powerloss::{Image, SyncOp};

thread_local! {
    /// Set while this thread is inside a hook's own work.
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

static IMAGE: OnceLock<Option<Image>> = OnceLock::new();
/// One image update at a time (two threads may sync the same file).
static LOCK: Mutex<()> = Mutex::new(());

fn image() -> Option<&'static Image> {
    IMAGE
        .get_or_init(|| match Image::from_env() {
            Some(Ok(img)) => Some(img),
            Some(Err(e)) => {
                eprintln!("ekka-powerloss-shim: disabled: {e}");
                None
            }
            None => None,
        })
        .as_ref()
}

/// Records a successful sync call `op` on `fd` (`None` for `syncfs`/`sync`).
fn after(op: SyncOp, fd: Option<c_int>) {
    if BUSY.with(|b| b.replace(true)) {
        return;
    }
    let _ = std::panic::catch_unwind(|| {
        let Some(img) = image() else { return };
        let rel = match fd {
            Some(fd) => match img.relative(fd) {
                Some(rel) => rel,
                None => return,
            },
            None => Default::default(),
        };
        let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let r = match (op.is_durable(), fd) {
            (false, _) => Ok(()),
            (true, Some(fd)) => img.sync_fd(fd),
            (true, None) => img.sync_tree(),
        };
        let r = r.and_then(|()| img.record(op, &rel));
        if let Err(e) = r {
            img.record_error(&format!("{} {}: {e}", op.name(), rel.display()));
        }
    });
    BUSY.with(|b| b.set(false));
}

fn ret(r: libc::c_long) -> c_int {
    r as c_int
}

/// # Safety
/// As fsync(2).
#[no_mangle]
pub unsafe extern "C" fn fsync(fd: c_int) -> c_int {
    let r = ret(libc::syscall(libc::SYS_fsync, fd));
    if r == 0 {
        after(SyncOp::Fsync, Some(fd));
    }
    r
}

/// # Safety
/// As fdatasync(2).
#[no_mangle]
pub unsafe extern "C" fn fdatasync(fd: c_int) -> c_int {
    let r = ret(libc::syscall(libc::SYS_fdatasync, fd));
    if r == 0 {
        after(SyncOp::Fdatasync, Some(fd));
    }
    r
}

/// # Safety
/// As sync_file_range(2) (64-bit Linux: offsets are one register each).
#[no_mangle]
pub unsafe extern "C" fn sync_file_range(
    fd: c_int,
    offset: libc::off64_t,
    nbytes: libc::off64_t,
    flags: c_uint,
) -> c_int {
    let r = ret(libc::syscall(
        libc::SYS_sync_file_range,
        fd,
        offset,
        nbytes,
        flags,
    ));
    if r == 0 {
        after(SyncOp::SyncFileRange, Some(fd));
    }
    r
}

/// # Safety
/// As syncfs(2).
#[no_mangle]
pub unsafe extern "C" fn syncfs(fd: c_int) -> c_int {
    let r = ret(libc::syscall(libc::SYS_syncfs, fd));
    if r == 0 {
        after(SyncOp::Syncfs, None);
    }
    r
}

/// # Safety
/// As sync(2).
#[no_mangle]
pub unsafe extern "C" fn sync() {
    libc::syscall(libc::SYS_sync);
    after(SyncOp::Sync, None);
}
