//! Test harness: spawns real `ekka` agents on 127.0.0.1:0, runs the CLI, waits on conditions with
//! deadlines. Agents are killed when dropped; their logs are printed when a test fails.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod stream;

use serde_json::Value;

pub const COOKIE: &str = "test-cookie";
pub const BIN: &str = env!("CARGO_BIN_EXE_ekka");

/// A running `ekka agent` child process.
pub struct Agent {
    pub name: String,
    pub addr: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// Extra environment of the agent process, kept across restarts.
    pub env: Vec<(String, std::ffi::OsString)>,
    child: Option<Child>,
    lines: Option<std::sync::Mutex<std::sync::mpsc::Receiver<String>>>,
}

/// Output of one CLI run.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "expected success, got {self:?}");
        self.stdout.trim()
    }

    /// The error code of a failed command (`error: <code>: ...` on stderr), checking exit 1.
    pub fn err_code(&self) -> String {
        assert_eq!(self.code, 1, "expected exit 1, got {self:?}");
        let line = self.stderr.lines().last().unwrap_or_default();
        let rest = line
            .strip_prefix("error: ")
            .unwrap_or_else(|| panic!("no error line in {self:?}"));
        rest.split(':').next().unwrap_or_default().to_string()
    }
}

/// A temporary directory for one test's agents; keeps logs when the test panics.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub agents: Vec<Agent>,
}

impl Cluster {
    pub fn new() -> Self {
        Cluster {
            dir: tempfile::tempdir().expect("tempdir"),
            agents: Vec::new(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts agent `name` with its own data dir and extra flags; returns its index.
    pub fn start(&mut self, name: &str, extra: &[&str]) -> usize {
        self.start_with_env(name, extra, Vec::new())
    }

    /// As [`Cluster::start`], with extra environment variables for the agent process.
    pub fn start_with_env(
        &mut self,
        name: &str,
        extra: &[&str],
        env: Vec<(String, std::ffi::OsString)>,
    ) -> usize {
        let a = Agent::start_with_env(name, &self.path(name), extra, env);
        self.agents.push(a);
        self.agents.len() - 1
    }

    pub fn get(&self, name: &str) -> &Agent {
        self.agents
            .iter()
            .find(|a| a.name == name)
            .unwrap_or_else(|| panic!("no agent {name}"))
    }

    pub fn get_mut(&mut self, name: &str) -> &mut Agent {
        self.agents
            .iter_mut()
            .find(|a| a.name == name)
            .unwrap_or_else(|| panic!("no agent {name}"))
    }

    /// Starts n agents named n1..=n{n} and joins n2.. to n1; waits until all are up.
    pub fn form(&mut self, n: usize) {
        for i in 1..=n {
            self.start(&format!("n{i}"), &[]);
        }
        let seed = self.agents[0].addr.clone();
        for i in 1..n {
            let out = self.agents[i].cli(&["cluster", "join", &seed]);
            assert!(out.ok().starts_with("joined "), "{out:?}");
        }
        let names: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
        let a = &self.agents[0];
        wait_until(Duration::from_secs(20), "all members up", || {
            let s = a.status();
            running(&s) == names
        });
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for a in &self.agents {
                eprintln!("----- log of {} ({}) -----", a.name, a.addr);
                eprintln!("{}", std::fs::read_to_string(&a.log).unwrap_or_default());
            }
        }
    }
}

impl Agent {
    /// Starts `ekka agent` and waits for its `listening on` line.
    pub fn start(name: &str, data_dir: &Path, extra: &[&str]) -> Agent {
        Agent::start_with_env(name, data_dir, extra, Vec::new())
    }

    /// As [`Agent::start`], with extra environment variables (kept for restarts).
    pub fn start_with_env(
        name: &str,
        data_dir: &Path,
        extra: &[&str],
        env: Vec<(String, std::ffi::OsString)>,
    ) -> Agent {
        let log = data_dir.with_extension("log");
        let mut a = Agent {
            name: name.to_string(),
            addr: String::new(),
            data_dir: data_dir.to_path_buf(),
            log,
            env,
            child: None,
            lines: None,
        };
        a.restart(extra);
        a
    }

    /// (Re)starts the process on the same data dir, on a fresh port unless `extra` says otherwise.
    pub fn restart(&mut self, extra: &[&str]) {
        assert!(self.child.is_none(), "{} is still running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let has_listen = extra.contains(&"--listen");
        let mut cmd = Command::new(BIN);
        cmd.arg("agent")
            .args(["--name", &self.name])
            .arg("--data-dir")
            .arg(&self.data_dir);
        if !extra.contains(&"--cookie") {
            cmd.args(["--cookie", COOKIE]);
        }
        if !has_listen {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        let mut child = cmd
            .args(extra)
            .env("EKKA_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn ekka agent");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                let _ = tx.send(l);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "{} did not print its listening line; log:\n{}",
                    self.name,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                )
            });
        self.addr = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        self.child = Some(child);
        self.lines = Some(std::sync::Mutex::new(rx));
    }

    /// The next line the agent prints on stdout after `listening on`.
    pub fn next_line(&self) -> Option<String> {
        let rx = self.lines.as_ref()?.lock().ok()?;
        rx.recv_timeout(Duration::from_secs(30)).ok()
    }

    /// SIGKILL, and wait for the process to go.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (a clean stop).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM without waiting (see [`Agent::wait_exit`]).
    pub fn sigterm(&self) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
        }
    }

    /// Waits up to `limit` for the process to end on its own; its exit status, or None if it
    /// still runs (it is left running).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            let c = self.child.as_mut()?;
            if let Ok(Some(st)) = c.try_wait() {
                self.child = None;
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGSTOP: the process stays, but answers nothing (a node cut off).
    pub fn pause(&self) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGSTOP);
            }
        }
    }

    /// SIGCONT after [`Agent::pause`].
    pub fn resume(&self) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGCONT);
            }
        }
    }

    /// The process id while the agent runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Runs `ekka <args> --node <this agent> --cookie <test cookie>`.
    pub fn cli(&self, args: &[&str]) -> Out {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--node", &self.addr, "--cookie", COOKIE]);
        run(&all)
    }

    /// `cluster status --json` from this agent.
    pub fn status(&self) -> Value {
        let out = self.cli(&["cluster", "status", "--json"]);
        serde_json::from_str(out.ok()).unwrap_or_else(|e| panic!("bad json {e}: {out:?}"))
    }

    /// `cluster status --json`, or None when the command fails.
    pub fn try_status(&self) -> Option<Value> {
        let out = self.cli(&["cluster", "status", "--json"]);
        if out.code != 0 {
            return None;
        }
        serde_json::from_str(out.stdout.trim()).ok()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the ekka binary with `args`.
pub fn run(args: &[&str]) -> Out {
    let o = Command::new(BIN)
        .args(args)
        .env("EKKA_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run ekka");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Polls `cond` until it holds, failing the test after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn names(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

pub fn running(status: &Value) -> Vec<String> {
    names(status, "running_nodes")
}

pub fn stopped(status: &Value) -> Vec<String> {
    names(status, "stopped_nodes")
}

/// The member entry named `name`, if present.
pub fn member<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["members"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name)
}

pub fn role_count(status: &Value, role: &str) -> usize {
    status["members"]
        .as_array()
        .map(|a| a.iter().filter(|m| m["role"] == role).count())
        .unwrap_or(0)
}

/// A port free on every one of `ips` right now (the OS picks it; nothing is hard-coded).
pub fn free_port_on(ips: &[&str]) -> u16 {
    for _ in 0..100 {
        let l = std::net::TcpListener::bind(format!("{}:0", ips[0])).expect("bind");
        let port = l.local_addr().unwrap().port();
        let others: Vec<_> = ips[1..]
            .iter()
            .filter_map(|ip| std::net::TcpListener::bind(format!("{ip}:{port}")).ok())
            .collect();
        if others.len() == ips.len() - 1 {
            return port;
        }
    }
    panic!("no port free on all of {ips:?}");
}

/// Whether `status` shows exactly `names` running, a leader, and every member up.
pub fn formed<S: AsRef<str>>(status: &Value, names: &[S]) -> bool {
    let running = running(status);
    running.len() == names.len()
        && running.iter().zip(names).all(|(r, n)| r == n.as_ref())
        && status["leader"].is_string()
        && status["members"]
            .as_array()
            .is_some_and(|m| m.iter().all(|m| m["status"] == "up"))
}

/// Copies a data dir, recursively (the agent must be stopped, as for an operator's `cp -a`).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// Waits until `a` reports exactly `names` running, with one leader.
pub fn wait_formed(a: &Agent, names: &[&str], limit: Duration) {
    wait_until(
        limit,
        &format!("{names:?} formed as seen by {}", a.name),
        || a.try_status().is_some_and(|s| formed(&s, names)),
    );
}

/// A real etcd (Debian `etcd-server`) on free loopback ports; restartable on the same ports and
/// data. `None` when etcd is missing and `EKKA_REQUIRE_ETCD` is not `1`.
pub struct EtcdServer {
    pub url: String,
    peer_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl EtcdServer {
    pub fn start() -> Option<EtcdServer> {
        if Command::new("etcd").arg("--version").output().is_err() {
            assert!(
                std::env::var("EKKA_REQUIRE_ETCD").as_deref() != Ok("1"),
                "EKKA_REQUIRE_ETCD=1 but no etcd binary (apt-get install etcd-server)"
            );
            eprintln!("etcd not installed: skipping");
            return None;
        }
        let client = free_port_on(&["127.0.0.1"]);
        let mut e = EtcdServer {
            url: format!("http://127.0.0.1:{client}"),
            peer_port: free_port_on(&["127.0.0.1"]),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
        };
        e.restart();
        Some(e)
    }

    pub fn restart(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .args(["--name", "t", "--listen-client-urls", &self.url])
            .args(["--advertise-client-urls", &self.url])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("t={peer}")])
            .arg("--data-dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        let addr = self.url.trim_start_matches("http://").to_string();
        wait_until(Duration::from_secs(30), "etcd accepts connections", || {
            std::net::TcpStream::connect(&addr).is_ok()
        });
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}
