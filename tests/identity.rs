//! One node id, one process: a copy of a member's data dir started beside the member is refused
//! (at start, or by the leader when it announces itself) and the cluster keeps its leader and its
//! member's address. And a joiner killed in the middle of `cluster join`: restarted, it comes up
//! and ends as a member or as its own one-node cluster again; never restarted, it is marked
//! down, not counted as running, and autocleaned.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use ekka_testkit::proxy::Net;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(40);

/// Starts `ekka agent` on `data_dir` (name `name`, a fresh port) without waiting for anything.
fn spawn_agent(name: &str, data_dir: &Path, log: &Path) -> std::process::Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(BIN)
        .args(["agent", "--name", name, "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--cookie", COOKIE])
        .env("EKKA_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn ekka agent")
}

/// Waits up to `limit` for `child` to exit; its exit code, or None (still running).
fn wait_exit(child: &mut std::process::Child, limit: Duration) -> Option<i32> {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st.code().unwrap_or(-1));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// The last line of a log file.
fn last_line(log: &Path) -> String {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

/// Every member of `a`'s cluster up, with a leader; the term.
fn healthy(a: &Agent, names: &[&str]) -> Option<u64> {
    let s = a.try_status()?;
    let all_up = s["members"].as_array()?.iter().all(|m| m["status"] == "up");
    (running(&s) == names && s["leader"].is_string() && s["stale"] != true && all_up)
        .then(|| s["term"].as_u64())
        .flatten()
}

/// The cluster has a leader, serves a write and a linearizable read through `a`, and records
/// `name` at `addr`, up (waited for: a loaded machine may miss a heartbeat now and then).
fn serves(a: &Agent, key: &str, name: &str, addr: &str) {
    wait_until(WAIT, &format!("{name} up at {addr}"), || {
        a.try_status().is_some_and(|s| {
            s["leader"].is_string()
                && member(&s, name).is_some_and(|m| m["addr"] == addr && m["status"] == "up")
        })
    });
    put_get(a, a, key);
    let s = a.status();
    let m = member(&s, name).unwrap_or_else(|| panic!("{name} in {s}"));
    assert_eq!(m["addr"], addr, "{s}");
}

/// Writes `key` through `w` and reads it back through `r` (retried: a restarted member may hold
/// an election, during which requests are refused).
fn put_get(w: &Agent, r: &Agent, key: &str) {
    wait_until(WAIT, &format!("put and get {key}"), || {
        w.cli(&["kv", "put", key, "v"]).code == 0 && r.cli(&["kv", "get", key]).stdout.trim() == "v"
    });
}

/// Waits until `a`'s cluster is healthy again, with no storm of elections since `term` (the
/// copy took no part in any).
fn healthy_since(a: &Agent, names: &[&str], term: u64) {
    let mut now = 0;
    wait_until(WAIT, "the cluster healthy", || {
        healthy(a, names).is_some_and(|t| {
            now = t;
            true
        })
    });
    // A loaded machine may miss a heartbeat and hold an election or two; a copy taking part in
    // elections made dozens.
    assert!(now <= term + 6, "term went from {term} to {now}");
}

/// Stops n3, copies its data dir, restarts it (on its old port with `same_port`, else on a new
/// one). Returns the cluster and the copy's path.
fn cluster_with_copy(same_port: bool) -> (Cluster, std::path::PathBuf) {
    let mut c = Cluster::new();
    c.form(3);
    let old = c.get("n3").addr.clone();
    c.get_mut("n3").stop();
    let copy = c.path("n3-copy");
    copy_dir(&c.get("n3").data_dir, &copy);
    if same_port {
        c.get_mut("n3").restart(&["--listen", &old]);
    } else {
        c.get_mut("n3").restart(&[]);
    }
    let n3 = c.get("n3").addr.clone();
    let n1 = c.get("n1");
    wait_until(WAIT, "n3 back, up at its address", || {
        healthy(n1, &["n1", "n2", "n3"]).is_some()
            && member(&n1.status(), "n3").is_some_and(|m| m["addr"] == n3.as_str())
    });
    serves(n1, "before", "n3", &n3);
    (c, copy)
}

/// Waits until `a` sees n1..n3 healthy; the term then.
fn wait_healthy(a: &Agent) -> u64 {
    let mut term = 0;
    wait_until(WAIT, "healthy", || {
        healthy(a, &["n1", "n2", "n3"]).is_some_and(|t| {
            term = t;
            true
        })
    });
    term
}

#[test]
fn a_copy_of_a_running_members_data_dir_is_refused_at_start() {
    let (c, copy) = cluster_with_copy(true);
    let n1 = c.get("n1");
    let n3 = c.get("n3").addr.clone();
    let term = wait_healthy(n1);

    // The copy records n3 at the address the original answers on: refused before it serves.
    let log = c.path("n3-copy.log");
    let mut copy_proc = spawn_agent("n3", &copy, &log);
    let code = wait_exit(&mut copy_proc, WAIT);
    let _ = copy_proc.kill();
    let mut out = String::new();
    if let Some(mut o) = copy_proc.stdout.take() {
        use std::io::Read;
        let _ = o.read_to_string(&mut out);
    }
    let line = last_line(&log);
    assert_eq!(code, Some(2), "the copy must exit 2; last line {line:?}");
    assert!(
        line.starts_with("error: invalid_config: ") && line.contains("already runs at"),
        "{line:?}"
    );
    assert!(line.contains(&n3), "names the original's address: {line:?}");
    assert!(!out.contains("listening on"), "the copy served: {out:?}");

    // Nothing moved: same leader term, n3 still at its address, writes go on.
    serves(n1, "after", "n3", &n3);
    healthy_since(n1, &["n1", "n2", "n3"], term);
    serves(c.get("n3"), "via-n3", "n3", &n3);
}

#[test]
fn a_copy_that_gets_past_its_start_is_refused_by_the_leader() {
    // The copy still records n3 at its old port (nothing answers there), so it starts and
    // announces its own address; the leader refuses it: its log ends below what n3 acknowledged
    // (an older copy), or the original answers at n3's recorded address.
    let (c, copy) = cluster_with_copy(false);
    let n1 = c.get("n1");
    let n3 = c.get("n3").addr.clone();
    let term = wait_healthy(n1);

    let log = c.path("n3-copy.log");
    let mut copy_proc = spawn_agent("n3", &copy, &log);
    // Writes go on while the copy runs.
    let mut i = 0;
    let code = loop {
        if let Ok(Some(st)) = copy_proc.try_wait() {
            break Some(st.code().unwrap_or(-1));
        }
        assert!(i < 200, "the copy still runs after {i} writes");
        i += 1;
        let put = n1.cli(&["kv", "put", &format!("during/{i}"), "v"]);
        assert_eq!(put.code, 0, "a write while the copy runs: {put:?}");
    };
    // Refused as a second process with n3's id, or as an older copy of n3's data dir.
    refused(code, &log);

    // The copy is gone: the cluster is as it was, n3 at its address, the same term.
    serves(n1, "after", "n3", &n3);
    healthy_since(n1, &["n1", "n2", "n3"], term);
    serves(c.get("n3"), "via-n3", "n3", &n3);
}

/// Spawns the copy of n3 and reads its `listening on` line: its address.
fn spawn_copy(c: &Cluster, copy: &Path) -> (std::process::Child, String) {
    let log = c.path("n3-copy.log");
    let mut p = spawn_agent("n3", copy, &log);
    let mut line = String::new();
    {
        use std::io::BufRead;
        let out = p.stdout.as_mut().unwrap();
        std::io::BufReader::new(out).read_line(&mut line).unwrap();
    }
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("copy: {line:?} {}", last_line(&log)))
        .to_string();
    (p, addr)
}

/// The last line of `log`, checked to be the refusal of a second process with one node id.
fn refused(code: Option<i32>, log: &Path) {
    let line = last_line(log);
    assert_eq!(code, Some(2), "exit 2 expected; last line {line:?}");
    assert!(line.starts_with("error: invalid_config: node "), "{line:?}");
}

#[test]
fn a_copy_started_while_the_member_is_paused_is_refused_or_refuses_it() {
    // The original answers nothing (SIGSTOP), so neither the copy's start check nor the leader
    // finds it. If the copy's log ends below what n3 acknowledged, it is an older copy and is
    // refused at once; otherwise nobody can tell it from n3 restarted on a new port, it takes
    // n3's place, and the original, resumed, is the second process: refused by the voters when
    // it campaigns. Either way exactly one runs on, the cluster keeps serving.
    let (mut c, copy) = cluster_with_copy(true);
    let n3 = c.get("n3").addr.clone();
    c.get("n3").pause();
    let (mut copy_proc, copy_addr) = spawn_copy(&c, &copy);
    let n1 = c.get("n1");
    let mut copy_exit = None;
    wait_until(WAIT, "the copy refused or in n3's place", || {
        if let Ok(Some(st)) = copy_proc.try_wait() {
            copy_exit = Some(st.code().unwrap_or(-1));
            return true;
        }
        n1.try_status().is_some_and(|s| {
            member(&s, "n3").is_some_and(|m| m["addr"] == copy_addr.as_str() && m["status"] == "up")
        })
    });
    c.get("n3").resume();
    let survivor = if copy_exit.is_some() {
        refused(copy_exit, &c.path("n3-copy.log"));
        n3
    } else {
        let st = c.get_mut("n3").wait_exit(WAIT);
        refused(st.and_then(|s| s.code()), &c.get("n3").log);
        copy_addr.clone()
    };
    eprintln!("the process left running as n3 is at {survivor} (copy {copy_addr})");
    let n1 = c.get("n1");
    wait_until(WAIT, "healthy", || {
        healthy(n1, &["n1", "n2", "n3"]).is_some()
    });
    serves(n1, "after", "n3", &survivor);
    let _ = copy_proc.kill();
    let _ = copy_proc.wait();
}

#[test]
fn a_member_restarted_after_its_copy_took_its_place_is_refused() {
    // The copy starts while n3 is stopped: to the cluster that is n3 restarted on a new port,
    // and it takes n3's place. The original, started again on its old port, is now the second
    // process with n3's id: refused, it stops itself. Stopping the copy then leaves n3 down and
    // the cluster serving.
    let mut c = Cluster::new();
    c.form(3);
    c.get_mut("n3").stop();
    let copy = c.path("n3-copy");
    copy_dir(&c.get("n3").data_dir, &copy);
    let old = c.get("n3").addr.clone();
    let (mut copy_proc, copy_addr) = spawn_copy(&c, &copy);
    let n1 = c.get("n1");
    wait_until(WAIT, "the copy in n3's place", || {
        healthy(n1, &["n1", "n2", "n3"]).is_some()
            && member(&n1.status(), "n3").is_some_and(|m| m["addr"] == copy_addr.as_str())
    });
    let term = wait_healthy(n1);
    put_get(n1, n1, "before");

    c.get_mut("n3").restart(&["--listen", &old]);
    let st = c.get_mut("n3").wait_exit(WAIT);
    let line = last_line(&c.get("n3").log);
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(2),
        "the original must stop itself with exit 2; last line {line:?}"
    );
    assert!(line.starts_with("error: invalid_config: "), "{line:?}");
    let n1 = c.get("n1");
    healthy_since(n1, &["n1", "n2", "n3"], term);
    serves(n1, "after", "n3", &copy_addr);

    // The copy stops: n3 is down, the other two go on.
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(copy_proc.id() as libc::pid_t, libc::SIGTERM);
    }
    assert_eq!(wait_exit(&mut copy_proc, WAIT), Some(0));
    wait_until(WAIT, "n3 down", || {
        n1.try_status()
            .is_some_and(|s| stopped(&s) == ["n3"] && s["leader"].is_string())
    });
    put_get(n1, c.get("n2"), "after-the-copy");
}

/// `ekka cluster join <to> --node <joiner>`, started and left running.
fn spawn_join(to: &str, joiner: &str) -> std::process::Child {
    Command::new(BIN)
        .args(["cluster", "join", to, "--node", joiner, "--cookie", COOKIE])
        .env("EKKA_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ekka cluster join")
}

fn n_members(s: &Value) -> usize {
    s["members"].as_array().map_or(0, |m| m.len())
}

#[test]
fn a_joiner_killed_mid_join_comes_back_consistent() {
    let mut c = Cluster::new();
    c.start("n1", &[]);
    c.start("n2", &[]);
    let seed = c.get("n1").addr.clone();
    // How long a whole `cluster join` takes here (a debug build is slower than a release one):
    // kills land at 20-35 ms, then spread over the join and a little past its end.
    let t = std::time::Instant::now();
    let out = c.get("n2").cli(&["cluster", "join", &seed]);
    assert!(out.ok().starts_with("joined "), "{out:?}");
    let took = t.elapsed().as_millis() as u64;
    let mut delays = vec![20u64, 25, 30, 35];
    delays.extend(
        (2..=12)
            .step_by(2)
            .map(|k| took * k / 8)
            .filter(|d| *d > 35),
    );
    let mut outcomes = Vec::new();
    for (i, delay_ms) in delays.into_iter().enumerate() {
        let name = format!("j{i}");
        c.start(&name, &[]);
        let mut join = spawn_join(&seed, &c.get(&name).addr);
        // The deliberate delay: the join request is on its way.
        std::thread::sleep(Duration::from_millis(delay_ms));
        c.get_mut(&name).kill();
        let _ = join.kill();
        let _ = join.wait();

        // It starts and serves (the harness waits for `listening on`).
        c.get_mut(&name).restart(&[]);
        let j = c.get(&name);
        let n1 = c.get("n1");
        let mut member = false;
        wait_until(
            WAIT,
            &format!("{name} a member or a one-node cluster"),
            || {
                let (Some(s1), Some(sj)) = (n1.try_status(), j.try_status()) else {
                    return false;
                };
                member = running(&s1).contains(&name)
                    && sj["cluster_id"] == s1["cluster_id"]
                    && sj["stale"] != true;
                let alone = n_members(&sj) == 1
                    && sj["leader"] == name.as_str()
                    && sj["cluster_id"] != s1["cluster_id"]
                    && !running(&s1).contains(&name);
                member || alone
            },
        );
        outcomes.push((delay_ms, member));
        if !member {
            // A one-node cluster again, which joins as any other.
            let out = j.cli(&["cluster", "join", &seed]);
            assert!(out.ok().starts_with("joined "), "{out:?}");
        }
        let mut names: Vec<String> = vec!["n1".into(), "n2".into()];
        names.extend((0..=i).map(|k| format!("j{k}")));
        names.sort();
        wait_until(WAIT, "every member up", || {
            let s = n1.status();
            running(&s) == names && s["members"].as_array().unwrap().len() == names.len()
        });
        put_get(j, n1, &format!("from/{name}"));
    }
    eprintln!("a join takes {took} ms; (kill delay ms, came back as a member): {outcomes:?}");
    assert!(
        outcomes.iter().any(|(_, member)| *member),
        "no kill landed after the join reached the cluster: {outcomes:?}"
    );
}

#[test]
fn a_joiner_killed_mid_join_that_never_returns_is_marked_down_and_cleaned() {
    let mut c = Cluster::new();
    c.form(2);
    let n1 = c.get("n1");
    assert_eq!(n1.cli(&["cluster", "autoclean", "2s"]).ok(), "autoclean 2s");
    let seed = n1.addr.clone();
    // The joiner is reached only through a proxy that refuses every connection: the cluster adds
    // it, then never hears from it, as from one that died right after asking.
    let net = Net::new(1);
    let p = &net.proxies[0];
    c.start("j", &["--advertise", &p.addr]);
    p.set_target(&c.get("j").addr);
    p.cut();
    let mut join = spawn_join(&seed, &c.get("j").addr);
    let n1 = c.get("n1");
    wait_until(WAIT, "j recorded by the cluster", || {
        member(&n1.status(), "j").is_some()
    });
    c.get_mut("j").kill();
    let _ = join.kill();
    let _ = join.wait();

    let n1 = c.get("n1");
    wait_until(WAIT, "j marked down, not running", || {
        let s = n1.status();
        member(&s, "j").is_none_or(|m| m["status"] == "down") && running(&s) == ["n1", "n2"]
    });
    wait_until(WAIT, "j autocleaned", || {
        let s = n1.status();
        member(&s, "j").is_none() && running(&s) == ["n1", "n2"] && n_members(&s) == 2
    });
    put_get(n1, n1, "k");

    // The same for joiners killed at a few points of the join, with no proxy in the way.
    for (i, delay_ms) in [20u64, 25, 30, 35].into_iter().enumerate() {
        let name = format!("k{i}");
        c.start(&name, &[]);
        let mut join = spawn_join(&seed, &c.get(&name).addr);
        std::thread::sleep(Duration::from_millis(delay_ms));
        c.get_mut(&name).kill();
        let _ = join.kill();
        let _ = join.wait();
        let n1 = c.get("n1");
        wait_until(WAIT, &format!("{name} not running, then gone"), || {
            let s = n1.status();
            member(&s, &name).is_none() && running(&s) == ["n1", "n2"] && n_members(&s) == 2
        });
    }
}
