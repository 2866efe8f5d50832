//! The shim under a real process: this test binary runs itself as a probe under `LD_PRELOAD`
//! (`--probe OP…`), then restores the probe's directory and checks that exactly what was synced
//! survived. No test harness (harness = false): `main` is either the probe or the checks.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use ekka_powerloss::{build_shim, Image, Names, SyncOp};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--probe") {
        for op in &args[1..] {
            probe_op(op);
        }
        return;
    }
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("powerloss-shim");
    let shim = build_shim(&target).expect("build the shim");
    unsynced_data_and_names_are_lost(&shim);
    eprintln!("ok: unsynced_data_and_names_are_lost");
    restore_resets_the_image(&shim);
    eprintln!("ok: restore_resets_the_image");
    syncfs_makes_everything_durable(&shim);
    eprintln!("ok: syncfs_makes_everything_durable");
}

/// One probe operation, `name:arg[:arg]`, on paths relative to the current dir.
fn probe_op(op: &str) {
    let parts: Vec<&str> = op.splitn(3, ':').collect();
    match parts[..] {
        ["write", path, text] => OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .unwrap(),
        ["fdatasync", path] => File::open(path).unwrap().sync_data().unwrap(),
        ["fsync", path] => File::open(path).unwrap().sync_all().unwrap(),
        ["sync_file_range", path] => {
            let f = File::open(path).unwrap();
            let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER;
            // SAFETY: sync_file_range(2) on an open descriptor.
            let r = unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, flags) };
            assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
        }
        ["syncfs", path] => {
            let f = File::open(path).unwrap();
            // SAFETY: syncfs(2) on an open descriptor.
            assert_eq!(unsafe { libc::syncfs(f.as_raw_fd()) }, 0);
        }
        ["rename", from, to] => fs::rename(from, to).unwrap(),
        ["mkdir", path] => fs::create_dir(path).unwrap(),
        _ => panic!("unknown probe op {op:?}"),
    }
}

/// Runs the probe with the shim on `root`'s image.
fn probe(shim: &Path, img: &Image, ops: &[&str]) {
    let out = Command::new(std::env::current_exe().unwrap())
        .arg("--probe")
        .args(ops)
        .current_dir(img.root())
        .env("LD_PRELOAD", shim)
        .envs(img.env())
        .output()
        .unwrap();
    assert!(out.status.success(), "probe failed: {out:?}");
}

fn setup() -> (tempfile::TempDir, Image) {
    let td = tempfile::tempdir().unwrap();
    fs::create_dir(td.path().join("root")).unwrap();
    let img = Image::new(&td.path().join("root"), &td.path().join("image")).unwrap();
    (td, img)
}

/// The tree under `dir` as sorted `path=content` lines (`path/` for a directory).
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            if p.is_dir() {
                out.push(format!("{rel}/"));
                stack.push(p);
            } else {
                out.push(format!("{rel}={}", fs::read_to_string(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn unsynced_data_and_names_are_lost(shim: &Path) {
    let (_td, img) = setup();
    probe(
        shim,
        &img,
        &[
            // Synced data under a synced name survives...
            "write:a:hello",
            "fdatasync:a",
            "fsync:.",
            // ...but data only passed to sync_file_range does not.
            "write:a: more",
            "sync_file_range:a",
            "write:c.tmp:new",
            "fsync:c.tmp",
            // One followed by it holds, with the content synced under the old name.
            "write:d.tmp:dee",
            "fsync:d.tmp",
            "rename:d.tmp:d",
            "fsync:.",
            // A synced file whose directory's entry was never synced is gone, and with it a
            // synced directory created after the last sync of its parent.
            "write:b:bee",
            "fdatasync:b",
            "mkdir:sub",
            "write:sub/e:e",
            "fsync:sub/e",
            "fsync:sub",
            // A rename not followed by a sync of the directory is undone.
            "rename:c.tmp:c",
        ],
    );
    assert_eq!(
        fs::read_to_string(img.root().join("a")).unwrap(),
        "hello more"
    );
    let restored = img.restore(Names::Synced).unwrap();
    assert_eq!(tree(img.root()), ["a=hello", "c.tmp=new", "d=dee"]);
    assert_eq!(restored.files, 3);

    let events = img.events().unwrap();
    let count = |op: SyncOp, path: &str| {
        events
            .iter()
            .filter(|e| e.op == op && e.path == path)
            .count()
    };
    assert_eq!(count(SyncOp::Fdatasync, "a"), 1);
    assert_eq!(count(SyncOp::SyncFileRange, "a"), 1);
    assert_eq!(count(SyncOp::Fsync, ""), 2, "{events:?}");
    assert_eq!(count(SyncOp::Fsync, "sub"), 1, "{events:?}");
}

fn restore_resets_the_image(shim: &Path) {
    let (_td, img) = setup();
    probe(shim, &img, &["write:a:one", "fsync:a", "fsync:."]);
    img.restore(Names::Synced).unwrap();
    // After a restore the restored tree is the durable one: a later power cut keeps it and drops
    // what came after it.
    probe(shim, &img, &["write:a:two", "write:b:bee"]);
    img.restore(Names::Synced).unwrap();
    assert_eq!(tree(img.root()), ["a=one"]);
    // LazyFS's model keeps the names but still drops the unsynced data.
    probe(shim, &img, &["write:a:three", "write:b:bee"]);
    img.restore(Names::Current).unwrap();
    assert_eq!(tree(img.root()), ["a=one", "b="]);
}

fn syncfs_makes_everything_durable(shim: &Path) {
    let (_td, img) = setup();
    probe(
        shim,
        &img,
        &["mkdir:sub", "write:sub/x:ex", "write:y:why", "syncfs:y"],
    );
    img.restore(Names::Synced).unwrap();
    assert_eq!(tree(img.root()), ["sub/", "sub/x=ex", "y=why"]);
}
