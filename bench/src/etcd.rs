//! A local etcd cluster (Debian `etcd-server`) on probed free loopback ports; started with
//! retries, checked and steered through its JSON gateway.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Attempts at starting a cluster before [`Etcd::start_cluster`] gives up; each with new ports
/// and a new data dir.
pub const START_ATTEMPTS: usize = 3;

/// The pause before the next attempt, for whatever held a port or the disk to let go.
pub const START_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// How long one attempt waits for every member to take a put.
pub const START_DEADLINE: Duration = Duration::from_secs(30);

/// A running etcd cluster; killed on drop.
pub struct Etcd {
    /// Data dirs and the members' stderr logs; removed on drop.
    _dir: tempfile::TempDir,
    members: Vec<Member>,
}

struct Member {
    name: String,
    /// Client address, `127.0.0.1:PORT`.
    client: String,
    /// Peer address, `127.0.0.1:PORT`.
    peer: String,
    url: String,
    /// The member's stderr.
    log: PathBuf,
    child: Option<Child>,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `$ETCD_BIN`, else `etcd` on the `PATH`.
pub fn etcd_bin() -> PathBuf {
    std::env::var_os("ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("etcd"))
}

/// The first line of `etcd --version`; an error when etcd cannot be run.
pub fn version() -> Result<String> {
    let bin = etcd_bin();
    let o = Command::new(&bin)
        .arg("--version")
        .output()
        .with_context(|| {
            format!(
                "cannot run {} (apt-get install etcd-server, or set ETCD_BIN)",
                bin.display()
            )
        })?;
    let out = String::from_utf8_lossy(&o.stdout);
    Ok(out
        .lines()
        .next()
        .unwrap_or("etcd, version unknown")
        .to_string())
}

/// The last `n` lines of a member's stderr log.
fn tail(path: &Path, n: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One HTTP/1.1 POST to etcd's gateway; the body of the answer.
fn post(addr: &str, path: &str, body: &str, timeout: Duration) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse()?, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").context("bad http answer")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("etcd answered {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_string())
}

/// A failure to run the etcd binary at all: [`Etcd::start_cluster`] does not retry it.
#[derive(Debug, thiserror::Error)]
#[error("cannot run {bin}: {source}")]
pub struct NotRunnable {
    bin: String,
    source: std::io::Error,
}

impl Etcd {
    /// Starts an n-member cluster, retrying a failed start up to [`START_ATTEMPTS`] times (a
    /// probed port taken meanwhile, a slow machine); `note` hears of each failed attempt. A
    /// missing etcd binary is not retried.
    pub async fn start_cluster(n: usize, mut note: impl FnMut(String)) -> Result<Etcd> {
        let mut errors = Vec::new();
        for attempt in 1..=START_ATTEMPTS {
            match Self::start_once(n).await {
                Ok(e) => return Ok(e),
                Err(err) if err.is::<NotRunnable>() => return Err(err),
                Err(err) => {
                    note(format!(
                        "etcd: start attempt {attempt}/{START_ATTEMPTS} failed: {err:#}"
                    ));
                    errors.push(format!("{err:#}"));
                    tokio::time::sleep(START_RETRY_PAUSE).await;
                }
            }
        }
        bail!(
            "etcd cluster did not start in {START_ATTEMPTS} attempts; last: {}",
            errors.last().map_or("", |e| e.as_str())
        )
    }

    /// One attempt at starting an n-member cluster: ready once every member takes a put.
    pub async fn start_once(n: usize) -> Result<Etcd> {
        tokio::task::spawn_blocking(move || Self::start_blocking(n)).await?
    }

    fn start_blocking(n: usize) -> Result<Etcd> {
        let dir = tempfile::tempdir()?;
        let ports: Vec<(u16, u16)> = (0..n)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<Result<_>>()?;
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("e{i}=http://127.0.0.1:{p}"))
            .collect();
        let mut members = Vec::new();
        for (i, (c, p)) in ports.iter().enumerate() {
            let log = dir.path().join(format!("e{i}.log"));
            let child = Command::new(etcd_bin())
                .args(["--name", &format!("e{i}")])
                .arg("--data-dir")
                .arg(dir.path().join(format!("e{i}")))
                .args(["--listen-client-urls", &format!("http://127.0.0.1:{c}")])
                .args(["--advertise-client-urls", &format!("http://127.0.0.1:{c}")])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{p}")])
                .args([
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{p}"),
                ])
                .args(["--initial-cluster", &initial.join(",")])
                .args([
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    "bench",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?)
                .spawn()
                .map_err(|source| NotRunnable {
                    bin: etcd_bin().display().to_string(),
                    source,
                })?;
            members.push(Member {
                name: format!("e{i}"),
                client: format!("127.0.0.1:{c}"),
                peer: format!("127.0.0.1:{p}"),
                url: format!("http://127.0.0.1:{c}"),
                log,
                child: Some(child),
            });
        }
        let mut e = Etcd { _dir: dir, members };
        let t0 = Instant::now();
        loop {
            let waiting: Vec<(usize, anyhow::Error)> = (0..n)
                .filter_map(|i| e.put(i, "ready", "1").err().map(|err| (i, err)))
                .collect();
            if waiting.is_empty() {
                return Ok(e);
            }
            for m in &mut e.members {
                let exited = m.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                if let Some(status) = exited {
                    bail!(
                        "etcd member {} (client {}, peer {}) exited with {status}; its stderr ends:\n{}",
                        m.name,
                        m.client,
                        m.peer,
                        tail(&m.log, 8)
                    );
                }
            }
            if t0.elapsed() > START_DEADLINE {
                let (i, err) = &waiting[0];
                let m = &e.members[*i];
                bail!(
                    "etcd cluster not healthy within {START_DEADLINE:?}: {} of {n} members take no put; member {} (client {}, peer {}): {err:#}; its stderr ends:\n{}",
                    waiting.len(),
                    m.name,
                    m.client,
                    m.peer,
                    tail(&m.log, 8)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A client URL of the first member.
    pub fn url(&self) -> &str {
        &self.members[0].url
    }

    pub fn pids(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter_map(|m| m.child.as_ref().map(|c| c.id()))
            .collect()
    }

    fn put(&self, i: usize, k: &str, v: &str) -> Result<()> {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let body = format!("{{\"key\":\"{}\",\"value\":\"{}\"}}", b64(k), b64(v));
        post(
            &self.members[i].client,
            "/v3/kv/put",
            &body,
            Duration::from_millis(300),
        )
        .map(|_| ())
    }

    /// The client address (`127.0.0.1:PORT`) of the current leader.
    pub fn leader_endpoint(&self) -> Result<String> {
        Ok(self.members[self.leader()?].client.clone())
    }

    /// Index of the current leader, from each member's status.
    fn leader(&self) -> Result<usize> {
        for m in &self.members {
            let Ok(b) = post(
                &m.client,
                "/v3/maintenance/status",
                "{}",
                Duration::from_secs(1),
            ) else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(&b)?;
            let leader = v["leader"].as_str().unwrap_or_default().to_string();
            for (i, o) in self.members.iter().enumerate() {
                let Ok(b) = post(
                    &o.client,
                    "/v3/maintenance/status",
                    "{}",
                    Duration::from_secs(1),
                ) else {
                    continue;
                };
                let w: serde_json::Value = serde_json::from_str(&b)?;
                if w["header"]["member_id"].as_str() == Some(leader.as_str()) {
                    return Ok(i);
                }
            }
        }
        bail!("no etcd leader found")
    }

    /// The current leader's index and the client address of the member after it, which
    /// survives when the leader is killed.
    pub fn leader_and_survivor(&self) -> Result<(usize, String)> {
        let l = self.leader()?;
        Ok((l, self.members[(l + 1) % self.members.len()].client.clone()))
    }

    /// SIGKILLs member `i`; the instant the signal was sent.
    pub fn kill(&mut self, i: usize) -> Result<Instant> {
        let mut c = self.members[i]
            .child
            .take()
            .context("member already gone")?;
        c.kill()?; // SIGKILL
        let t0 = Instant::now();
        let _ = c.wait();
        Ok(t0)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
