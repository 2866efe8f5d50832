//! Power-loss simulation for tests (Linux only), in the spirit of Jepsen's LazyFS.
//!
//! A process started with `LD_PRELOAD=<the ekka-powerloss-shim .so>` and the two variables
//! [`ENV_ROOT`] (the directory to watch, e.g. an agent's data dir) and [`ENV_IMAGE`] (a directory
//! outside it) keeps, beside the real files, a *durable image*: what the disk would still hold
//! after a power cut. The shim updates it only when `fsync`/`fdatasync` (or `syncfs`/`sync`)
//! returns; `sync_file_range` passes through and makes nothing durable (it flushes no metadata
//! and no disk cache). A power cut is then: SIGKILL the process, and [`Image::restore`] the
//! directory from the image, so that every byte and every name that was never synced is gone.
//!
//! The model (what `restore` keeps):
//! - a file's content is what it was at its last `fsync`/`fdatasync` (empty if never synced);
//!   content is keyed by the file (inode and birth time), not by its name, so a rename carries it;
//! - a name exists only if it was in its directory when that directory was last synced (a file
//!   or directory created or renamed since, and never followed by a sync of the directory, is
//!   gone or back under its old name); a directory never synced is empty.
//!
//! The shim also appends every sync call it sees under the root (durable or not) to an event
//! log ([`Image::events`]), so a test can check that acknowledged writes were really synced.

mod image;

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

pub use image::Image;

/// The directory whose files the shim watches (absolute, existing).
pub const ENV_ROOT: &str = "EKKA_POWERLOSS_DIR";
/// Where the shim keeps the durable image and the event log (outside the root).
pub const ENV_IMAGE: &str = "EKKA_POWERLOSS_IMAGE";
/// The shim's cargo package; its library is `lib<name with _>.so`.
pub const SHIM_PACKAGE: &str = "ekka-powerloss-shim";

/// A sync call the shim saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncOp {
    Fsync,
    Fdatasync,
    /// Writes the range out but does not make it durable: no metadata, no disk cache flush.
    SyncFileRange,
    Syncfs,
    Sync,
}

impl SyncOp {
    /// Whether the call makes data durable (all but `sync_file_range`).
    pub fn is_durable(self) -> bool {
        !matches!(self, SyncOp::SyncFileRange)
    }

    pub fn name(self) -> &'static str {
        match self {
            SyncOp::Fsync => "fsync",
            SyncOp::Fdatasync => "fdatasync",
            SyncOp::SyncFileRange => "sync_file_range",
            SyncOp::Syncfs => "syncfs",
            SyncOp::Sync => "sync",
        }
    }

    fn parse(s: &str) -> Option<SyncOp> {
        [
            SyncOp::Fsync,
            SyncOp::Fdatasync,
            SyncOp::SyncFileRange,
            SyncOp::Syncfs,
            SyncOp::Sync,
        ]
        .into_iter()
        .find(|op| op.name() == s)
    }
}

/// One line of the event log: process `pid` called `op` on `path` (relative to the root; empty
/// for `syncfs`/`sync`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub pid: u32,
    pub op: SyncOp,
    pub path: String,
}

/// Which names [`Image::restore`] keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Names {
    /// Only names present at the last sync of their directory (what POSIX promises).
    Synced,
    /// Every name present now, each with its durable content (LazyFS's model, which keeps
    /// metadata and drops only unsynced data).
    Current,
}

/// What a restore put back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub files: usize,
    pub dirs: usize,
    pub bytes: u64,
}

/// Builds the shim with cargo into `target_dir` (its own, so that it never waits on the lock of
/// the build that runs the tests) and returns the path of its `.so`. Cheap when up to date.
pub fn build_shim(target_dir: &Path) -> io::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let out = Command::new(cargo)
        .args(["build", "--quiet", "-p", SHIM_PACKAGE, "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "cargo build -p {SHIM_PACKAGE} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let so = target_dir
        .join("debug")
        .join(format!("lib{}.so", SHIM_PACKAGE.replace('-', "_")));
    if !so.is_file() {
        return Err(io::Error::other(format!("{} not built", so.display())));
    }
    Ok(so)
}
