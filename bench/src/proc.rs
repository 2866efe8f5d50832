//! Child processes of the benchmark: ekka agents, `ekka up`, and their memory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const COOKIE: &str = "bench-cookie";

/// The release binary: `$EKKA_BIN`, else `target/release/ekka` next to this workspace.
pub fn ekka_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("EKKA_BIN") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/ekka")
}

/// One `ekka agent` process.
pub struct Agent {
    pub name: String,
    pub addr: String,
    dir: PathBuf,
    listen: String,
    extra: Vec<String>,
    child: Option<Child>,
    /// When set, the agent logs openraft's snapshot builds and they are noted in `snapshots`.
    watch_snapshots: bool,
    /// Snapshot builds seen in the agent's log: when the line arrived, and whether it is the
    /// start (`true`) or the end of a build.
    pub snapshots: Arc<Mutex<Vec<(Instant, bool)>>>,
}

/// The log filter that makes an agent log the start and end of each snapshot build (openraft's
/// own lines, so an older binary shows them too).
const SNAPSHOT_LOG: &str = "warn,openraft::core::sm::worker=info,openraft::core::raft_core=info";

impl Agent {
    pub async fn start(dir: &Path, name: &str) -> Result<Agent> {
        Self::start_with(dir, name, "127.0.0.1:0", &[]).await
    }

    /// Starts an agent listening on `listen` with extra flags (discovery settings).
    pub async fn start_with(
        dir: &Path,
        name: &str,
        listen: &str,
        extra: &[String],
    ) -> Result<Agent> {
        Self::start_full(dir, name, listen, extra, false).await
    }

    /// Starts an agent whose snapshot builds are noted in [`Agent::snapshots`].
    pub async fn start_watching_snapshots(dir: &Path, name: &str) -> Result<Agent> {
        Self::start_full(dir, name, "127.0.0.1:0", &[], true).await
    }

    async fn start_full(
        dir: &Path,
        name: &str,
        listen: &str,
        extra: &[String],
        watch_snapshots: bool,
    ) -> Result<Agent> {
        let mut a = Agent {
            name: name.to_string(),
            addr: String::new(),
            dir: dir.join(name),
            listen: listen.to_string(),
            extra: extra.to_vec(),
            child: None,
            watch_snapshots,
            snapshots: Arc::default(),
        };
        a.restart().await?;
        Ok(a)
    }

    /// The agent's data dir.
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    pub async fn restart(&mut self) -> Result<()> {
        let mut child = Command::new(ekka_bin())
            .arg("agent")
            .args(["--name", &self.name, "--listen", &self.listen])
            .args(["--cookie", COOKIE])
            .args(&self.extra)
            .arg("--data-dir")
            .arg(&self.dir)
            .env(
                "EKKA_LOG",
                if self.watch_snapshots {
                    SNAPSHOT_LOG
                } else {
                    "warn"
                },
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if self.watch_snapshots {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .kill_on_drop(true)
            .spawn()
            .context("spawn ekka agent")?;
        if let Some(err) = child.stderr.take() {
            let seen = self.snapshots.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(err).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    let start = l.contains("spawned building snapshot task");
                    if start || l.contains("command done: BuildSnapshot") {
                        seen.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((Instant::now(), start));
                    }
                }
            });
        }
        let out = child.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(out).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("agent start timed out")??
            .context("agent exited")?;
        self.addr = first
            .strip_prefix("listening on ")
            .context("no listening line")?
            .to_string();
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().and_then(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
        }
    }

    /// SIGSTOP or SIGCONT: a paused agent answers nothing, as if its links were cut.
    pub fn signal(&self, sig: i32) {
        if let Some(pid) = self.child.as_ref().and_then(|c| c.id()) {
            // SAFETY: kill(2) on our own child.
            unsafe {
                libc::kill(pid as libc::pid_t, sig);
            }
        }
    }
}

/// CPU time `pid` has used so far (user + system), seconds; 0 if it is gone.
pub fn cpu_secs(pid: u32) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime: fields 14 and 15 of the line, so 11 and 12 counted after the name.
            Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
        })
        .map_or(0.0, |ticks| ticks / hz)
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `RssAnon`, `RssFile`); 0 if absent.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Bytes the files under `path` take on the disk (as `du`: allocated blocks), 0 if unreadable.
pub fn du_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(path) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => du_bytes(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// Runs `ekka up --nodes n` and times it from spawn to its "formed" line; then stops it.
pub async fn time_up(dir: &Path, n: usize) -> Result<Duration> {
    let t0 = Instant::now();
    let mut child = Command::new(ekka_bin())
        .args(["up", "--nodes", &n.to_string(), "--cookie", COOKIE])
        .arg("--dir")
        .arg(dir)
        .env("EKKA_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("spawn ekka up")?;
    let out = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(out).lines();
    let took = loop {
        let l = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .context("ekka up timed out")??;
        match l {
            Some(l) if l.starts_with(&format!("cluster of {n} formed")) => break t0.elapsed(),
            Some(_) => {}
            None => bail!("ekka up exited before forming"),
        }
    };
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on our own child; `up` stops its agents on SIGINT.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGINT);
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    Ok(took)
}
