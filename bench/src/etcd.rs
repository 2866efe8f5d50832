//! A local etcd cluster (Debian `etcd-server`) on loopback ports, driven through its JSON gateway.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A running etcd cluster; killed on drop.
pub struct Etcd {
    _dir: tempfile::TempDir,
    members: Vec<Member>,
}

struct Member {
    client: String,
    url: String,
    child: Option<Child>,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn etcd_bin() -> PathBuf {
    std::env::var_os("ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("etcd"))
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

impl Etcd {
    pub async fn start_cluster(n: usize) -> Result<Etcd> {
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
                .stderr(Stdio::null())
                .spawn()
                .context("etcd is not installed (apt-get install etcd-server)")?;
            members.push(Member {
                client: format!("127.0.0.1:{c}"),
                url: format!("http://127.0.0.1:{c}"),
                child: Some(child),
            });
        }
        let e = Etcd { _dir: dir, members };
        let t0 = Instant::now();
        while !(0..n).all(|i| e.put(i, "ready", "1").is_ok()) {
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("etcd cluster did not become healthy");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(e)
    }

    pub fn version(&self) -> String {
        Command::new(etcd_bin())
            .arg("--version")
            .output()
            .ok()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .unwrap_or_default()
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

    /// Kill the leader of a fresh cluster, time until a put on a survivor succeeds; per trial.
    pub async fn failover_trials(&self, trials: usize) -> Result<Vec<f64>> {
        tokio::task::spawn_blocking(move || {
            let mut v = Vec::new();
            for _ in 0..trials {
                let mut e = Self::start_blocking(3)?;
                let l = e.leader()?;
                if let Some(mut c) = e.members[l].child.take() {
                    c.kill()?;
                    let _ = c.wait();
                }
                let t0 = Instant::now();
                let s = (l + 1) % 3;
                while e.put(s, "k", "v").is_err() {
                    if t0.elapsed() > Duration::from_secs(30) {
                        bail!("etcd did not recover");
                    }
                }
                v.push(t0.elapsed().as_secs_f64() * 1000.0);
            }
            Ok(v)
        })
        .await?
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
