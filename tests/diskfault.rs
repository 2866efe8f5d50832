//! Disk faults under a running agent: the failing write gets a clear error (`storage`, or
//! `outcome_unknown` with exit 3 when it may have been applied), `/health` and `/ready` stop
//! answering 200, the agent exits 1 with one `error: storage: …` line (SIGTERM stops it in every
//! state), and once the disk works again a restart has every acknowledged key.
//!
//! The faults need root (mount, losetup). Without it the tests say so and pass, unless
//! `EKKA_REQUIRE_NETNS=1` (CI), which makes a missing privilege a failure.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{wait_until, Agent, Out};

/// How long an agent may take to stop after a fault or SIGTERM (the agent's own limit is 5 s).
const EXIT_LIMIT: Duration = Duration::from_secs(15);
/// One value: under the 64 KiB limit, large enough to fill 2 MiB in a few dozen puts.
const VALUE_BYTES: usize = 60_000;

fn required() -> bool {
    std::env::var("EKKA_REQUIRE_NETNS").as_deref() == Ok("1")
}

/// Runs a privileged setup command; `Err` with its output when it fails.
fn sh(cmd: &str, args: &[&str]) -> Result<(), String> {
    match Command::new(cmd).args(args).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("{cmd}: {e}")),
    }
}

/// Skips (or fails under `EKKA_REQUIRE_NETNS=1`) when a fault cannot be set up here.
fn setup<T>(what: &str, r: Result<T, String>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            assert!(!required(), "EKKA_REQUIRE_NETNS=1 but {what} failed: {e}");
            eprintln!("{what} not possible here ({e}): skipping");
            None
        }
    }
}

/// A file system mounted for one test; unmounted (and its loop device freed) on drop.
struct Mount {
    dir: PathBuf,
    loop_dev: Option<String>,
}

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Result<Mount, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let opts = format!("size={size}");
        sh("mount", &["-t", "tmpfs", "-o", &opts, "tmpfs", &s(dir)])?;
        Ok(Mount {
            dir: dir.to_path_buf(),
            loop_dev: None,
        })
    }

    /// A fresh ext4 on a loop device over `image`, mounted at `dir`.
    fn ext4(image: &Path, dir: &Path) -> Result<Mount, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let f = std::fs::File::create(image).map_err(|e| e.to_string())?;
        f.set_len(64 << 20).map_err(|e| e.to_string())?;
        sh("mkfs.ext4", &["-q", "-F", &s(image)])?;
        let out = Command::new("losetup")
            .args(["-f", "--show", &s(image)])
            .output()
            .map_err(|e| format!("losetup: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "losetup: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let mut m = Mount {
            dir: dir.to_path_buf(),
            loop_dev: Some(dev.clone()),
        };
        if let Err(e) = sh("mount", &[&dev, &s(dir)]) {
            m.dir = PathBuf::new();
            return Err(e);
        }
        // An empty root, so the mount point itself can be the data dir.
        std::fs::remove_dir(dir.join("lost+found")).map_err(|e| e.to_string())?;
        Ok(m)
    }

    fn remount(&self, opts: &str) {
        sh("mount", &["-o", &format!("remount,{opts}"), &s(&self.dir)]).expect("remount");
    }

    /// Unmounts and mounts the loop device again (journal replay after a shutdown).
    fn cycle(&self) {
        let dev = self.loop_dev.as_deref().expect("a loop device");
        sh("umount", &[&s(&self.dir)]).expect("umount");
        sh("mount", &[dev, &s(&self.dir)]).expect("mount again");
    }

    /// Shuts the ext4 file system down (EXT4_IOC_SHUTDOWN, log flushed): from now on every
    /// read and write on it fails with EIO, as on a disk that died.
    fn shut_down(&self) {
        const EXT4_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587d;
        const EXT4_GOING_FLAGS_LOGFLUSH: u32 = 1;
        let f = std::fs::File::open(&self.dir).expect("open mount point");
        let flags = EXT4_GOING_FLAGS_LOGFLUSH;
        // SAFETY: the ioctl reads one u32 from a valid pointer.
        let r = unsafe {
            use std::os::fd::AsRawFd;
            libc::ioctl(f.as_raw_fd(), EXT4_IOC_SHUTDOWN, &flags)
        };
        assert_eq!(
            r,
            0,
            "EXT4_IOC_SHUTDOWN: {}",
            std::io::Error::last_os_error()
        );
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if !self.dir.as_os_str().is_empty() && sh("umount", &[&s(&self.dir)]).is_err() {
            let _ = sh("umount", &["-l", &s(&self.dir)]);
        }
        if let Some(d) = &self.loop_dev {
            let _ = sh("losetup", &["-d", d]);
        }
    }
}

/// Prints the agent's log when the test fails.
struct LogOnPanic(PathBuf);

impl Drop for LogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- agent log -----");
            eprintln!("{}", std::fs::read_to_string(&self.0).unwrap_or_default());
        }
    }
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The HTTP status of `GET path`, or None when nothing answers.
fn http_status(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut c = std::net::TcpStream::connect(addr).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    c.read_to_string(&mut resp).ok()?;
    let code = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    Some((code, body))
}

/// The code of a failed write: exit 1 with a clear code, or exit 3 with `outcome_unknown`.
fn write_failure(out: &Out) -> String {
    let line = out.stderr.lines().last().unwrap_or_default();
    let code = line
        .strip_prefix("error: ")
        .and_then(|r| r.split(':').next())
        .unwrap_or_else(|| panic!("no error line: {out:?}"));
    match out.code {
        3 => assert_eq!(code, "outcome_unknown", "{out:?}"),
        1 => assert!(
            ["storage", "resource_exhausted"].contains(&code),
            "a write failed on a disk fault must say so, not {code}: {out:?}"
        ),
        _ => panic!("a failed write exits 1 or 3: {out:?}"),
    }
    code.to_string()
}

fn value(i: usize) -> String {
    let c = char::from(b'a' + (i % 26) as u8);
    std::iter::repeat_n(c, VALUE_BYTES).collect()
}

/// Starts `n1` with an HTTP port on `data`; returns it and its HTTP address.
fn start(data: &Path) -> (Agent, String) {
    let a = Agent::start("n1", data, &["--http", "127.0.0.1:0"]);
    let line = a.next_line().expect("http line");
    let http = line.strip_prefix("http on ").expect("http on").to_string();
    wait_until(Duration::from_secs(20), "n1 ready", || {
        http_status(&http, "/ready").is_some_and(|(c, _)| c == 200)
    });
    (a, http)
}

/// After a write failed on a storage fault: `/health` and `/ready` never answer 200 again, the
/// agent ends (on its own, or on SIGTERM when `term`) within EXIT_LIMIT with status 1, and its
/// last line is `error: storage: <data dir>: …`.
fn check_failed_agent(a: &mut Agent, http: &str, term: bool) {
    let mut seen_503 = false;
    for path in ["/health", "/ready"] {
        match http_status(http, path) {
            Some((200, body)) => panic!("{path} answers 200 after a storage fault: {body}"),
            Some((503, body)) => {
                seen_503 = true;
                if path == "/health" {
                    assert!(body.contains("storage fault"), "{body}");
                }
            }
            other => eprintln!("{path}: {other:?} (the agent is going)"),
        }
    }
    eprintln!("--- 503 seen before the agent went: {seen_503}");
    if term {
        a.sigterm();
    }
    let t0 = Instant::now();
    let st = a
        .wait_exit(EXIT_LIMIT)
        .unwrap_or_else(|| panic!("the agent still runs {EXIT_LIMIT:?} after a storage fault"));
    eprintln!("--- agent exited after {:?}: {st}", t0.elapsed());
    assert_eq!(st.code(), Some(1), "exit status after a storage fault");
    let log = std::fs::read_to_string(&a.log).unwrap_or_default();
    let last = log.lines().rev().find(|l| !l.trim().is_empty());
    let want = format!("error: storage: {}: ", a.data_dir.display());
    assert!(
        last.is_some_and(|l| l.starts_with(&want)),
        "last line {last:?} should start with {want:?}"
    );
}

/// Every acknowledged key reads back whole after the restart.
fn check_acked(a: &Agent, acked: &[usize]) {
    for &i in acked {
        let out = a.cli(&["kv", "get", &format!("k{i}")]);
        assert!(
            out.code == 0 && out.stdout.trim() == value(i),
            "acknowledged k{i} lost: code {} stderr {}",
            out.code,
            out.stderr
        );
    }
}

#[test]
fn d01_a_full_disk_fails_the_write_and_ends_the_agent_without_losing_acked_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The mount point is the data dir: the agent's log (n1.log) stays off the small disk.
    let data = dir.path().join("n1");
    let _log = LogOnPanic(data.with_extension("log"));
    let Some(m) = setup("mounting a 2 MiB tmpfs", Mount::tmpfs(&data, "2m")) else {
        return;
    };
    let (mut a, http) = start(&data);

    // --- fill the disk with puts until one fails
    let mut acked = Vec::new();
    let mut failed = None;
    for i in 0..200 {
        let out = a.cli(&["kv", "put", &format!("k{i}"), &value(i)]);
        if out.code == 0 {
            acked.push(i);
        } else {
            failed = Some(out);
            break;
        }
    }
    let out = failed.expect("2 MiB filled without a failed put");
    let code = write_failure(&out);
    eprintln!(
        "--- put {} failed: {code} ({} acked)",
        acked.len(),
        acked.len()
    );
    assert!(acked.len() >= 3, "the disk filled too early: {out:?}");

    // --- the agent ends, with one line naming the fault (SIGTERM is not needed)
    check_failed_agent(&mut a, &http, false);

    // --- room again: a restart on the same data dir has every acknowledged key
    m.remount("size=64m");
    a.restart(&[]);
    check_acked(&a, &acked);
    a.stop();
}

#[test]
fn d02_an_io_error_under_a_running_agent_fails_the_write_and_sigterm_stops_it() {
    // A tmpfs cannot be made read-only under a running agent (`remount,ro` is refused with
    // EBUSY while the agent holds its files open for writing), so the disk dies instead: ext4
    // on a loop device, shut down under the agent, after which every read and write is EIO.
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("n1");
    let _log = LogOnPanic(data.with_extension("log"));
    let image = dir.path().join("disk.img");
    let Some(m) = setup("an ext4 loop mount", Mount::ext4(&image, &data)) else {
        return;
    };
    let (mut a, http) = start(&data);
    let acked: Vec<usize> = (0..5).collect();
    for &i in &acked {
        a.cli(&["kv", "put", &format!("k{i}"), &value(i)]).ok();
    }

    // --- the disk dies
    m.shut_down();
    let out = a.cli(&["kv", "put", "after", "x"]);
    let code = write_failure(&out);
    eprintln!("--- the put after the fault failed: {code}");

    // --- SIGTERM right away: the agent stops in bounded time, naming the fault
    check_failed_agent(&mut a, &http, true);

    // --- the disk back (journal replayed): every acknowledged key is there
    m.cycle();
    a.restart(&[]);
    check_acked(&a, &acked);
    a.stop();
}
