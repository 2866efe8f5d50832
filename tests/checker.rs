//! The history checker's runner: real agents behind loopback proxies, concurrent clients running
//! the `ekka` CLI (kv put/get/cas/delete on a few keys, lock acquire/release), and a nemesis on a
//! seeded schedule (kill -9 of one node, of the leader, of every node; SIGSTOP/SIGCONT; a
//! partition cutting off the leader or another node; leave + rejoin; force-leave + rejoin). Every
//! call is recorded with its invocation and completion time and its outcome (exit 0, 1, 3, or a
//! client timeout), and the history is checked by `ekka-checker`.
//!
//! The default is a short profile for `cargo test`. A long one from the command line:
//! `EKKA_CHECK_SECS=600 EKKA_CHECK_SEED=42 EKKA_CHECK_NODES=5 EKKA_CHECK_HISTORY=/tmp/h.json
//! cargo test --release --test checker`. The history is saved to `EKKA_CHECK_HISTORY` when set,
//! and under /tmp when a check fails; `ekka-check replay FILE` checks it again.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ekka_checker::members::{MemberEvent, MemberStream, Membership};
use ekka_checker::{Call, Change, Fault, History, Op, Outcome, Ret};
use ekka_testkit::proxy::Net;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// The short profile's workload and schedule seed (the timing is real, so runs still differ).
const DEFAULT_SECS: u64 = 50;
const DEFAULT_SEED: u64 = 20261202;
/// A client gives up on a call after this long and records its outcome as unknown.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the cluster may take to be whole again after a fault is healed.
const RECOVER: Duration = Duration::from_secs(60);
/// How long a member taken out of the cluster may take to be accepted back.
const REJOIN: Duration = Duration::from_secs(10);
const KV_CLIENTS: u32 = 4;
const LOCK_CLIENTS: u32 = 2;
const KEYS: usize = 4;
const LOCKS: usize = 2;
const LOCK_TTL_MS: u64 = 2000;

struct Profile {
    secs: u64,
    seed: u64,
    nodes: usize,
    history: Option<PathBuf>,
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

fn profile() -> Profile {
    Profile {
        secs: env_u64("EKKA_CHECK_SECS").unwrap_or(DEFAULT_SECS),
        seed: env_u64("EKKA_CHECK_SEED").unwrap_or(DEFAULT_SEED),
        nodes: env_u64("EKKA_CHECK_NODES").unwrap_or(3) as usize,
        history: std::env::var_os("EKKA_CHECK_HISTORY").map(PathBuf::from),
    }
}

/// One agent as the clients see it.
struct Slot {
    name: String,
    addr: String,
    /// Clients may address it (false while it is out of the cluster for churn).
    serving: bool,
    inflight: usize,
}

/// State shared by the clients and the nemesis.
struct Shared {
    start: Instant,
    slots: Mutex<Vec<Slot>>,
    ops: Mutex<Vec<Op>>,
    stop: AtomicBool,
    /// Calls whose exit or output broke the CLI contract (exit 2, unparsable output).
    anomalies: Mutex<Vec<String>>,
    seq: AtomicU64,
    watch: Mutex<Watch>,
}

/// The change-log follower's state.
#[derive(Default)]
struct Watch {
    changes: Vec<Change>,
    /// The running `kv watch` and the agent it follows.
    child: Option<(usize, std::process::Child)>,
    /// The watch fell behind the retained window: the log is not whole.
    gap: bool,
    stop: bool,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// A serving agent at random, counted in flight until [`Shared::done`].
    fn pick(&self, rng: &mut StdRng) -> Option<(usize, String, String)> {
        let mut slots = self.slots.lock().unwrap();
        let serving: Vec<usize> = (0..slots.len()).filter(|i| slots[*i].serving).collect();
        let i = *serving.choose(rng)?;
        slots[i].inflight += 1;
        Some((i, slots[i].name.clone(), slots[i].addr.clone()))
    }

    fn done(&self, i: usize) {
        self.slots.lock().unwrap()[i].inflight -= 1;
    }

    /// Ends the change-log follower's watch if it follows agent `i` (any agent: `None`).
    fn drop_watch(&self, i: Option<usize>) {
        let mut w = self.watch.lock().unwrap();
        if let Some((at, c)) = &mut w.child {
            if i.is_none_or(|i| i == *at) {
                let _ = c.kill();
            }
        }
    }
}

/// Follows the change log (`kv watch "" --from N --json`) through any serving agent, from where
/// it stopped after each break, until told to stop.
fn follow_changes(sh: Arc<Shared>) {
    let mut rng = StdRng::seed_from_u64(0);
    let mut next = 1u64;
    loop {
        if sh.watch.lock().unwrap().stop {
            return;
        }
        let Some((i, _, addr)) = sh.pick(&mut rng) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        sh.done(i);
        let from = next.to_string();
        let mut child = Command::new(BIN)
            .args(["kv", "watch", "", "--from", &from, "--json"])
            .args(["--node", &addr, "--cookie", COOKIE])
            .env("EKKA_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ekka kv watch");
        let stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        {
            let mut w = sh.watch.lock().unwrap();
            if w.stop {
                let _ = child.kill();
            }
            w.child = Some((i, child));
        }
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let (Some(rev), Some(key)) = (v["revision"].as_u64(), v["key"].as_str()) else {
                continue;
            };
            if rev >= next {
                next = rev + 1;
                sh.watch.lock().unwrap().changes.push(Change {
                    rev,
                    key: key.to_string(),
                    value: (v["event"] == "put")
                        .then(|| v["value"].as_str().unwrap_or_default().to_string()),
                });
            }
        }
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        let mut w = sh.watch.lock().unwrap();
        if let Some((_, mut c)) = w.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if err.contains("compacted") {
            w.gap = true;
            return;
        }
        drop(w);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What one CLI run ended with.
enum Exit {
    Code(Out),
    TimedOut,
}

/// Runs `ekka args --node addr --cookie …`, killed after [`CALL_TIMEOUT`].
fn cli_timed(addr: &str, args: &[&str]) -> Exit {
    let mut child = Command::new(BIN)
        .args(args)
        .args(["--node", addr, "--cookie", COOKIE])
        .env("EKKA_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ekka");
    let deadline = Instant::now() + CALL_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Exit::TimedOut;
            }
        }
    }
    let o = child.wait_with_output().expect("ekka output");
    Exit::Code(Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    })
}

/// The error code of `error: <code>: …` on stderr.
fn error_code(out: &Out) -> String {
    let line = out.stderr.lines().last().unwrap_or_default();
    line.strip_prefix("error: ")
        .and_then(|r| r.split(':').next())
        .unwrap_or("?")
        .to_string()
}

/// Turns a CLI run into an outcome: exit 0 parsed by `ok`, exit 1 failed (a few exits 1 are
/// results: `key_not_found` for a get), exit 3 or a timeout unknown.
fn outcome(sh: &Shared, call: &Call, exit: Exit, ok: impl Fn(&str) -> Option<Ret>) -> Outcome {
    let out = match exit {
        Exit::TimedOut => {
            return Outcome::Unknown {
                reason: format!("no answer within {CALL_TIMEOUT:?}"),
            }
        }
        Exit::Code(out) => out,
    };
    let anomaly = |what: String| {
        sh.anomalies.lock().unwrap().push(what.clone());
        Outcome::Unknown { reason: what }
    };
    match out.code {
        0 => match ok(out.stdout.trim()) {
            Some(ret) => Outcome::Ok { ret },
            None => anomaly(format!("{} printed {:?}", call.kind(), out.stdout)),
        },
        1 => {
            let code = error_code(&out);
            if matches!(call, Call::Get { .. }) && code == "key_not_found" {
                return Outcome::Ok {
                    ret: Ret::Read {
                        value: None,
                        rev: None,
                    },
                };
            }
            let message = out.stderr.trim().to_string();
            if code == "internal" {
                // CONTRACT.md: a transport failure is never `internal`.
                sh.anomalies.lock().unwrap().push(format!(
                    "{} ending at {:.3}s answered {message}",
                    call.kind(),
                    sh.now_us() as f64 / 1e6
                ));
            }
            Outcome::Failed { code, message }
        }
        3 => Outcome::Unknown {
            reason: error_code(&out),
        },
        c => anomaly(format!("{} exited {c}: {}", call.kind(), out.stderr.trim())),
    }
}

/// Runs `call` against agent `addr` and returns its outcome.
fn execute(sh: &Shared, addr: &str, call: &Call) -> Outcome {
    match call {
        Call::Put { key, value } => {
            let exit = cli_timed(addr, &["kv", "put", key, value]);
            outcome(sh, call, exit, |s| {
                Some(Ret::Written {
                    rev: s.parse().ok()?,
                })
            })
        }
        Call::Get { key } => {
            let exit = cli_timed(addr, &["kv", "get", key, "--json"]);
            outcome(sh, call, exit, |s| {
                let v: serde_json::Value = serde_json::from_str(s).ok()?;
                Some(Ret::Read {
                    value: Some(v["value"].as_str()?.to_string()),
                    rev: Some(v["mod_revision"].as_u64()?),
                })
            })
        }
        Call::Cas { key, rev, value } => {
            let r = rev.to_string();
            let exit = cli_timed(addr, &["kv", "cas", key, "--rev", &r, value]);
            outcome(sh, call, exit, |s| {
                Some(Ret::Written {
                    rev: s.parse().ok()?,
                })
            })
        }
        Call::Delete { key } => {
            let exit = cli_timed(addr, &["kv", "delete", key]);
            outcome(sh, call, exit, |s| match s {
                "deleted" => Some(Ret::Deleted { existed: true }),
                _ if s.starts_with("ignored: no key") => Some(Ret::Deleted { existed: false }),
                _ => None,
            })
        }
        Call::Acquire {
            lock,
            owner,
            ttl_ms,
        } => {
            let ttl = format!("{ttl_ms}ms");
            let args = [
                "lock", "acquire", lock, "--ttl", &ttl, "--wait", "300ms", "--owner", owner,
            ];
            let exit = cli_timed(addr, &args);
            outcome(sh, call, exit, |s| {
                Some(Ret::Granted {
                    token: s.parse().ok()?,
                })
            })
        }
        Call::Release { lock, token } => {
            let t = token.to_string();
            let exit = cli_timed(addr, &["lock", "release", lock, "--token", &t]);
            outcome(sh, call, exit, |s| {
                (s == "released").then_some(Ret::Released)
            })
        }
    }
}

/// Runs `call` on a serving agent and records it; `None` when no agent serves.
fn invoke(sh: &Shared, client: u32, rng: &mut StdRng, call: Call) -> Option<Outcome> {
    let Some((i, name, addr)) = sh.pick(rng) else {
        std::thread::sleep(Duration::from_millis(20));
        return None;
    };
    Some(invoke_at(sh, client, (i, name, addr), call))
}

/// Runs `call` on agent `at` (index, name, address; counted in flight by the caller) and
/// records it.
fn invoke_at(sh: &Shared, client: u32, at: (usize, String, String), call: Call) -> Outcome {
    let (i, name, addr) = at;
    let invoke_us = sh.now_us();
    let out = execute(sh, &addr, &call);
    let complete_us = sh.now_us();
    sh.done(i);
    sh.ops.lock().unwrap().push(Op {
        client,
        node: name,
        invoke_us,
        complete_us: (!matches!(out, Outcome::Unknown { .. })).then_some(complete_us),
        call,
        outcome: out.clone(),
    });
    out
}

/// Reads keys through every agent at once for `how_long`, as soon as they listen: right after a
/// whole-cluster restart, where a stale read would show.
fn read_burst(sh: &Shared, how_long: Duration) {
    let at: Vec<(usize, String, String)> = {
        let slots = sh.slots.lock().unwrap();
        (0..slots.len())
            .filter(|i| slots[*i].serving)
            .map(|i| (i, slots[i].name.clone(), slots[i].addr.clone()))
            .collect()
    };
    let until = Instant::now() + how_long;
    std::thread::scope(|s| {
        for (n, at) in at.into_iter().enumerate() {
            s.spawn(move || {
                let mut k = n;
                while Instant::now() < until {
                    let key = format!("k{}", k % KEYS);
                    sh.slots.lock().unwrap()[at.0].inflight += 1;
                    invoke_at(sh, 2000 + n as u32, at.clone(), Call::Get { key });
                    k += 1;
                }
            });
        }
    });
}

/// A key-value client: random calls on a few keys; a cas uses the last revision it saw.
fn kv_client(sh: Arc<Shared>, client: u32, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    while !sh.stop.load(Ordering::SeqCst) {
        let key = format!("k{}", rng.gen_range(0..KEYS));
        let value = format!("c{client}-{}", sh.seq.fetch_add(1, Ordering::SeqCst));
        let dice = rng.gen_range(0..100);
        let call = match dice {
            0..=29 => Call::Put { key, value },
            30..=64 => Call::Get { key },
            65..=89 => Call::Cas {
                rev: *seen.get(&key).unwrap_or(&0),
                key,
                value,
            },
            _ => Call::Delete { key },
        };
        let key = call.key().unwrap_or_default().to_string();
        match invoke(&sh, client, &mut rng, call) {
            Some(Outcome::Ok {
                ret: Ret::Written { rev },
            })
            | Some(Outcome::Ok {
                ret: Ret::Read { rev: Some(rev), .. },
            }) => {
                seen.insert(key, rev);
            }
            Some(Outcome::Ok {
                ret: Ret::Read { value: None, .. } | Ret::Deleted { .. },
            }) => {
                seen.insert(key, 0);
            }
            _ => {}
        }
    }
}

/// A lock client: acquire a lock with a fresh owner, hold it briefly, release it.
fn lock_client(sh: Arc<Shared>, client: u32, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut n = 0;
    while !sh.stop.load(Ordering::SeqCst) {
        n += 1;
        let lock = format!("l{}", rng.gen_range(0..LOCKS));
        let call = Call::Acquire {
            lock: lock.clone(),
            owner: format!("c{client}-{n}"),
            ttl_ms: LOCK_TTL_MS,
        };
        if let Some(Outcome::Ok {
            ret: Ret::Granted { token },
        }) = invoke(&sh, client, &mut rng, call)
        {
            std::thread::sleep(Duration::from_millis(rng.gen_range(20..200)));
            invoke(&sh, client, &mut rng, Call::Release { lock, token });
        }
    }
}

/// The kinds of fault, each run once per round of the schedule.
#[derive(Clone, Copy, Debug)]
enum FaultKind {
    KillOne,
    KillLeader,
    KillAll,
    PauseOne,
    PauseLeader,
    PartitionLeader,
    PartitionOne,
    LeaveRejoin,
    ForceLeaveRejoin,
    ForceLeaveLeaderRejoin,
}

const ALL_FAULTS: [FaultKind; 10] = [
    FaultKind::KillOne,
    FaultKind::KillLeader,
    FaultKind::KillAll,
    FaultKind::PauseOne,
    FaultKind::PauseLeader,
    FaultKind::PartitionLeader,
    FaultKind::PartitionOne,
    FaultKind::LeaveRejoin,
    FaultKind::ForceLeaveRejoin,
    FaultKind::ForceLeaveLeaderRejoin,
];

/// The cluster under test and the faults it went through.
struct Nemesis {
    c: Cluster,
    net: Net,
    sh: Arc<Shared>,
    rng: StdRng,
    faults: Vec<Fault>,
    /// Faults after which the cluster did not become whole again in time.
    unrecovered: Vec<String>,
    /// Flags every agent starts with (at 5 nodes and more: 3 voters, so that the others are
    /// learners and a voter killed for over a second is replaced by one of them).
    flags: Vec<String>,
}

impl Nemesis {
    fn n(&self) -> usize {
        self.c.agents.len()
    }

    fn names(&self) -> Vec<String> {
        (1..=self.n()).map(|i| format!("n{i}")).collect()
    }

    /// (Re)starts agent `i` behind its proxy and tells the clients its address.
    fn start(&mut self, i: usize) {
        let proxy = self.net.proxies[i].addr.clone();
        let mut args = vec!["--advertise", proxy.as_str()];
        args.extend(self.flags.iter().map(String::as_str));
        if i < self.c.agents.len() {
            self.c.agents[i].restart(&args);
        } else {
            self.c.start(&format!("n{}", i + 1), &args);
        }
        let a = &self.c.agents[i];
        self.net.proxies[i].set_target(&a.addr);
        self.net.set_pid(i, a.pid());
        let mut slots = self.sh.slots.lock().unwrap();
        if let Some(s) = slots.get_mut(i) {
            s.addr = a.addr.clone();
        } else {
            slots.push(Slot {
                name: a.name.clone(),
                addr: a.addr.clone(),
                serving: true,
                inflight: 0,
            });
        }
    }

    /// The leader's index as some running agent sees it.
    fn leader(&mut self) -> Option<usize> {
        for a in &self.c.agents {
            let Some(s) = a.try_status() else { continue };
            if let Some(l) = s["leader"].as_str() {
                return self.c.agents.iter().position(|a| a.name == l);
            }
        }
        None
    }

    fn leader_or_any(&mut self) -> usize {
        let n = self.n();
        self.leader().unwrap_or_else(|| self.rng.gen_range(0..n))
    }

    /// Waits up to [`RECOVER`] until every member is up with a leader, as each agent sees it.
    fn whole(&self) -> bool {
        self.whole_within(RECOVER)
    }

    fn whole_within(&self, limit: Duration) -> bool {
        let names = self.names();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let all = self
                .c
                .agents
                .iter()
                .all(|a| a.try_status().is_some_and(|s| formed(&s, &names)));
            if all {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Takes agent `i` away from the clients and waits for its calls in flight to end.
    fn exclude(&self, i: usize) {
        self.sh.slots.lock().unwrap()[i].serving = false;
        self.sh.drop_watch(Some(i));
        wait_until(CALL_TIMEOUT * 2, "calls in flight to end", || {
            self.sh.slots.lock().unwrap()[i].inflight == 0
        });
    }

    fn include(&self, i: usize) {
        self.sh.slots.lock().unwrap()[i].serving = true;
    }

    fn pause_ms(&mut self) -> Duration {
        Duration::from_millis(self.rng.gen_range(300..2500))
    }

    /// The minority to cut off, starting with `first`.
    fn minority(&mut self, first: usize) -> Vec<usize> {
        let mut others: Vec<usize> = (0..self.n()).filter(|i| *i != first).collect();
        others.shuffle(&mut self.rng);
        let mut m = vec![first];
        m.extend(others.into_iter().take((self.n() - 1) / 2 - 1));
        m
    }

    /// Injects one fault and heals it; what was done, for the record.
    fn inject(&mut self, kind: FaultKind) -> String {
        let n = self.n();
        match kind {
            FaultKind::KillOne | FaultKind::KillLeader => {
                let i = match kind {
                    FaultKind::KillOne => self.rng.gen_range(0..n),
                    _ => self.leader_or_any(),
                };
                self.c.agents[i].kill();
                std::thread::sleep(self.pause_ms());
                self.start(i);
                format!("kill -9 n{} ({kind:?}), restart", i + 1)
            }
            FaultKind::KillAll => {
                let mut order: Vec<usize> = (0..n).collect();
                order.shuffle(&mut self.rng);
                for &i in &order {
                    self.c.agents[i].kill();
                }
                std::thread::sleep(self.pause_ms());
                // Restart them one by one while readers hit whichever agents are back, then read
                // through every agent at once.
                let sh = self.sh.clone();
                let stop = AtomicBool::new(false);
                std::thread::scope(|s| {
                    for r in 0..2u32 {
                        let (sh, stop) = (&sh, &stop);
                        s.spawn(move || {
                            let mut rng = StdRng::seed_from_u64(u64::from(r));
                            let mut k = 0;
                            while !stop.load(Ordering::SeqCst) {
                                let key = format!("k{}", k % KEYS);
                                invoke(sh, 3000 + r, &mut rng, Call::Get { key });
                                k += 1;
                            }
                        });
                    }
                    for &i in &order {
                        self.start(i);
                        let gap = self.rng.gen_range(0..400);
                        std::thread::sleep(Duration::from_millis(gap));
                    }
                    stop.store(true, Ordering::SeqCst);
                });
                read_burst(&self.sh, Duration::from_millis(1500));
                "kill -9 every node, restart one by one under reads, read through each at once"
                    .into()
            }
            FaultKind::PauseOne | FaultKind::PauseLeader => {
                let i = match kind {
                    FaultKind::PauseOne => self.rng.gen_range(0..n),
                    _ => self.leader_or_any(),
                };
                self.c.agents[i].pause();
                std::thread::sleep(self.pause_ms());
                self.c.agents[i].resume();
                format!("SIGSTOP n{} ({kind:?}), SIGCONT", i + 1)
            }
            FaultKind::PartitionLeader | FaultKind::PartitionOne => {
                let first = match kind {
                    FaultKind::PartitionOne => self.rng.gen_range(0..n),
                    _ => self.leader_or_any(),
                };
                let minority = self.minority(first);
                let majority: Vec<usize> = (0..n).filter(|i| !minority.contains(i)).collect();
                self.net.split(&[minority.as_slice(), majority.as_slice()]);
                std::thread::sleep(self.pause_ms() * 2);
                self.net.heal();
                let names: Vec<String> = minority.iter().map(|i| format!("n{}", i + 1)).collect();
                format!("partition {names:?} from the rest ({kind:?}), heal")
            }
            FaultKind::LeaveRejoin
            | FaultKind::ForceLeaveRejoin
            | FaultKind::ForceLeaveLeaderRejoin => self.churn(kind),
        }
    }

    /// Takes a member out of the cluster (leave, or force-leave from another member) and joins
    /// it back; clients do not address it meanwhile, since out of the cluster it is a cluster
    /// of its own.
    fn churn(&mut self, kind: FaultKind) -> String {
        let n = self.n();
        let leader = self.leader();
        let i = match (kind, leader) {
            (FaultKind::ForceLeaveLeaderRejoin, Some(l)) => l,
            // The other force-leave takes a follower, so that each names one case.
            (FaultKind::ForceLeaveRejoin, Some(l)) => (l + 1 + self.rng.gen_range(0..n - 1)) % n,
            _ => self.rng.gen_range(0..n),
        };
        let j = (i + 1 + self.rng.gen_range(0..n - 1)) % n;
        let name = format!("n{}", i + 1);
        self.exclude(i);
        let (verb, out) = match kind {
            FaultKind::LeaveRejoin => ("leave", self.c.agents[i].cli(&["cluster", "leave"])),
            _ => (
                "force-leave",
                self.c.agents[j].cli(&["cluster", "force-leave", &name]),
            ),
        };
        let mut what = format!(
            "{verb} {name} ({kind:?}) via n{}: exit {} {}{}",
            if verb == "leave" { i + 1 } else { j + 1 },
            out.code,
            out.stdout.trim(),
            out.stderr.trim()
        );
        // Join back through another member's proxy; a member that was force-left has to learn
        // it and start a cluster of its own first, so a refused join is retried for a while.
        let target = self.net.proxies[j].addr.clone();
        let deadline = Instant::now() + REJOIN;
        let joined = loop {
            let out = self.c.agents[i].cli(&["cluster", "join", &target]);
            if out.code == 0 || Instant::now() > deadline {
                what.push_str(&format!(
                    "; join: exit {} {}{}",
                    out.code,
                    out.stdout.trim(),
                    out.stderr.trim()
                ));
                break out.code == 0;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        if !joined || !self.whole_within(RECOVER) {
            self.unrecovered.push(format!(
                "{what}: {name} could not rejoin; it was wiped and joined again to go on"
            ));
            self.rebuild(i, j);
        }
        self.include(i);
        what
    }

    /// The operator's way out for a member that cannot rejoin: kill it, empty its data dir,
    /// start it and join it through member `j`.
    fn rebuild(&mut self, i: usize, j: usize) {
        self.c.agents[i].kill();
        std::fs::remove_dir_all(&self.c.agents[i].data_dir).expect("remove the data dir");
        self.start(i);
        let target = self.net.proxies[j].addr.clone();
        let out = self.c.agents[i].cli(&["cluster", "join", &target]);
        assert!(out.ok().starts_with("joined "), "rebuilt member: {out:?}");
        assert!(
            self.whole(),
            "the cluster did not become whole after a rebuild"
        );
    }

    /// Runs the schedule until `until`: rounds of every fault kind in a seeded order, with a
    /// quiet spell and a wait for the cluster to be whole after each.
    fn run(&mut self, until: Instant) {
        while Instant::now() < until {
            let mut round = ALL_FAULTS.to_vec();
            round.shuffle(&mut self.rng);
            for kind in round {
                if Instant::now() >= until {
                    return;
                }
                let start_us = self.sh.now_us();
                let what = self.inject(kind);
                let end_us = self.sh.now_us();
                eprintln!(
                    "nemesis {:.1}s..{:.1}s: {what}",
                    start_us as f64 / 1e6,
                    end_us as f64 / 1e6
                );
                if !self.whole() {
                    self.unrecovered
                        .push(format!("{what}: the cluster did not become whole"));
                }
                self.faults.push(Fault {
                    start_us,
                    end_us,
                    what,
                });
                let quiet = self.rng.gen_range(500..2000);
                std::thread::sleep(Duration::from_millis(quiet));
            }
        }
    }
}

/// Reads every key through every agent once the cluster is whole and quiet: the last word on
/// what was kept.
fn final_reads(sh: &Shared, n: usize) {
    let mut rng = StdRng::seed_from_u64(0);
    for k in 0..KEYS {
        for _ in 0..n {
            invoke(
                sh,
                1000,
                &mut rng,
                Call::Get {
                    key: format!("k{k}"),
                },
            );
        }
    }
}

/// Waits for the change-log follower to reach the last acknowledged write, stops it, and returns
/// the log; empty when it is not whole (the watch fell behind, or the cluster never recovered).
/// Every agent's membership events from revision 1 (`ekka members watch --from 1`, read until
/// the agent has had nothing more to say for a second), and the members the cluster reports.
/// `None` when the cluster is not whole, or an agent no longer holds the events from revision 1.
fn collect_membership(c: &Cluster, whole: bool) -> Option<Membership> {
    if !whole {
        return None;
    }
    let status = c.agents[0].try_status()?;
    let mut final_members: Vec<String> = (status["members"].as_array()?.iter())
        .filter_map(|m| m["name"].as_str().map(String::from))
        .collect();
    final_members.sort();
    let mut streams = Vec::new();
    for a in &c.agents {
        let mut child = Command::new(BIN)
            .args(["members", "watch", "--from", "1", "--json"])
            .args(["--node", &a.addr, "--cookie", COOKIE])
            .env("EKKA_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ekka members watch");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut events = Vec::new();
        let mut unreadable = None;
        while let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            match (v["revision"].as_u64(), v["event"].as_str()) {
                (Some(revision), Some(event)) => events.push(MemberEvent {
                    revision,
                    event: event.to_string(),
                    name: v["name"].as_str().unwrap_or_default().to_string(),
                }),
                _ => unreadable = Some(line),
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        if let Some(line) = unreadable {
            eprintln!(
                "membership events of {} not checked: unreadable line {line:?}",
                a.name
            );
            return None;
        }
        let mut err = String::new();
        let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
        if err.contains("error:") {
            eprintln!(
                "membership events of {} not checked: {}",
                a.name,
                err.trim()
            );
            return None;
        }
        streams.push(MemberStream {
            agent: a.name.clone(),
            events,
        });
    }
    let sizes: Vec<String> = (streams.iter())
        .map(|s| format!("{} {}", s.agent, s.events.len()))
        .collect();
    eprintln!("--- membership events read: {}", sizes.join(", "));
    Some(Membership {
        streams,
        final_members,
    })
}

fn collect_changes(sh: &Shared, ops: &[Op], whole: bool) -> Vec<Change> {
    let top = ops
        .iter()
        .filter_map(|o| match o.ret() {
            Some(Ret::Written { rev }) => Some(*rev),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    if whole {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let w = sh.watch.lock().unwrap();
            if w.gap || w.changes.last().is_some_and(|c| c.rev >= top) {
                break;
            }
            drop(w);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    sh.watch.lock().unwrap().stop = true;
    sh.drop_watch(None);
    let w = sh.watch.lock().unwrap();
    let complete = whole && !w.gap && w.changes.last().is_some_and(|c| c.rev >= top);
    eprintln!(
        "change log: {} changes{}",
        w.changes.len(),
        if complete {
            ""
        } else {
            " (not whole: not checked)"
        }
    );
    if complete {
        w.changes.clone()
    } else {
        Vec::new()
    }
}

#[test]
fn histories_under_faults_are_linearizable() {
    let p = profile();
    eprintln!(
        "checker: seed {} ({} s, {} nodes); rerun with EKKA_CHECK_SEED={} EKKA_CHECK_SECS={} \
         EKKA_CHECK_NODES={} cargo test --test checker",
        p.seed, p.secs, p.nodes, p.seed, p.secs, p.nodes
    );
    assert!(p.nodes >= 3, "EKKA_CHECK_NODES must be at least 3");
    let sh = Arc::new(Shared {
        start: Instant::now(),
        slots: Mutex::new(Vec::new()),
        ops: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
        anomalies: Mutex::new(Vec::new()),
        seq: AtomicU64::new(0),
        watch: Mutex::new(Watch::default()),
    });
    let mut nem = Nemesis {
        c: Cluster::new(),
        net: Net::new(p.nodes),
        sh: sh.clone(),
        rng: StdRng::seed_from_u64(p.seed),
        faults: Vec::new(),
        unrecovered: Vec::new(),
        flags: if p.nodes >= 5 {
            ["--max-voters", "3", "--replace-down-voter-after", "1s"]
                .map(String::from)
                .to_vec()
        } else {
            Vec::new()
        },
    };
    for i in 0..p.nodes {
        nem.start(i);
    }
    for i in 1..p.nodes {
        let out = nem.c.agents[i].cli(&["cluster", "join", &nem.net.proxies[0].addr]);
        assert!(out.ok().starts_with("joined "), "{out:?}");
    }
    assert!(nem.whole(), "the cluster did not form");

    let mut clients = Vec::new();
    for c in 0..KV_CLIENTS + LOCK_CLIENTS {
        let (sh, seed) = (sh.clone(), p.seed.wrapping_add(u64::from(c) + 1));
        clients.push(std::thread::spawn(move || {
            if c < KV_CLIENTS {
                kv_client(sh, c, seed)
            } else {
                lock_client(sh, c, seed)
            }
        }));
    }
    let follower = {
        let sh = sh.clone();
        std::thread::spawn(move || follow_changes(sh))
    };
    nem.run(Instant::now() + Duration::from_secs(p.secs));
    sh.stop.store(true, Ordering::SeqCst);
    for t in clients {
        t.join().unwrap();
    }
    let whole = nem.whole();
    if whole {
        final_reads(&sh, p.nodes);
    }

    let mut ops = std::mem::take(&mut *sh.ops.lock().unwrap());
    ops.sort_by_key(|o| o.invoke_us);
    let changes = collect_changes(&sh, &ops, whole);
    follower.join().unwrap();
    let membership = collect_membership(&nem.c, whole);
    let history = History {
        seed: Some(p.seed),
        nodes: p.nodes,
        faults: nem.faults.clone(),
        ops,
        changes,
        membership,
    };
    let checked = Instant::now();
    let report = ekka_checker::check(&history, ekka_checker::DEFAULT_BUDGET_PER_KEY);
    eprintln!("--- operations\n{}", history.summary());
    let hung: Vec<String> = (history.ops.iter().enumerate())
        .filter(|(_, o)| matches!(&o.outcome, Outcome::Unknown { reason } if reason.starts_with("no answer")))
        .map(|(i, o)| o.describe(i))
        .collect();
    eprintln!(
        "--- calls with no answer within {CALL_TIMEOUT:?}: {}",
        hung.len()
    );
    for h in hung.iter().take(10) {
        eprintln!("  {h}");
    }
    eprintln!("--- faults ({})", history.faults.len());
    for f in &history.faults {
        eprintln!("  {:.1}s {}", f.start_us as f64 / 1e6, f.what);
    }
    // Done by the cluster itself (at 5 nodes and more): a voter down over a second replaced by
    // a learner, as the leaders logged it.
    let replaced: usize = (nem.c.agents.iter())
        .map(|a| {
            std::fs::read_to_string(&a.log)
                .unwrap_or_default()
                .matches("replacing a voter that is down")
                .count()
        })
        .sum();
    eprintln!("--- voter replacements by the cluster: {replaced}");
    eprintln!(
        "--- verdicts (checked in {:?})\n{report}",
        checked.elapsed()
    );
    let anomalies = sh.anomalies.lock().unwrap().clone();
    let failed = !report.passed() || !anomalies.is_empty() || !whole || !nem.unrecovered.is_empty();
    let saved = match (&p.history, failed) {
        (Some(path), _) => Some(path.clone()),
        (None, true) => Some(std::env::temp_dir().join(format!(
            "ekka-check-{}-{}.json",
            p.seed,
            std::process::id()
        ))),
        (None, false) => None,
    };
    if let Some(path) = &saved {
        history.save(path).expect("save the history");
        eprintln!(
            "history saved: {} (check again: cargo run -p ekka-checker --bin ekka-check -- replay {})",
            path.display(),
            path.display()
        );
    }
    let mut problems = Vec::new();
    if !report.passed() {
        problems.push("the history fails its checks (verdicts above)".to_string());
    }
    if !whole {
        problems.push("the cluster was not whole at the end".to_string());
    }
    problems.extend(nem.unrecovered.iter().cloned());
    problems.extend(anomalies.iter().map(|a| format!("CLI contract: {a}")));
    assert!(
        problems.is_empty(),
        "seed {}: {} problem(s):\n{}",
        p.seed,
        problems.len(),
        problems.join("\n")
    );
}
