//! Lease locks through real agents: ekka_locker_SUITE in its Raft form, plus fencing tokens across
//! leader changes, lease expiry after a holder is killed, and mutual exclusion checked from the
//! recorded history of 20 concurrent acquirers.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

const WAIT: Duration = Duration::from_secs(30);

fn token(out: &Out) -> u64 {
    out.ok()
        .parse()
        .unwrap_or_else(|e| panic!("not a token ({e}): {out:?}"))
}

fn leader_name(a: &Agent) -> String {
    let mut name = String::new();
    wait_until(WAIT, "a leader", || match a.try_status() {
        Some(s) if s["leader"].is_string() => {
            name = s["leader"].as_str().unwrap_or_default().to_string();
            true
        }
        _ => false,
    });
    name
}

#[test]
fn l01_acquire_release_is_reentrant_and_needs_the_token() {
    let mut c = Cluster::new();
    c.form(3);
    let n2 = c.get("n2");
    let n3 = c.get("n3");
    // Through a follower; the same owner twice gets the same token (ekka: true twice).
    let t = token(&n2.cli(&["lock", "acquire", "r1", "--ttl", "10s", "--owner", "a"]));
    let again = token(&n3.cli(&["lock", "acquire", "r1", "--ttl", "10s", "--owner", "a"]));
    assert_eq!(t, again);
    let other = n3.cli(&["lock", "acquire", "r1", "--ttl", "10s", "--owner", "b"]);
    assert_eq!(other.err_code(), "lock_held");
    // A local read: the follower may be a moment behind.
    let mut st = serde_json::Value::Null;
    wait_until(WAIT, "n2 shows the holder", || {
        st = serde_json::from_str(n2.cli(&["lock", "status", "r1"]).ok()).unwrap();
        st["owner"] == "a"
    });
    assert_eq!(st["token"], t);
    assert_eq!(st["waiters"], serde_json::json!([]));
    let wrong = (t + 1).to_string();
    assert_eq!(
        n2.cli(&["lock", "release", "r1", "--token", &wrong])
            .err_code(),
        "lock_not_held"
    );
    assert_eq!(
        n2.cli(&["lock", "renew", "r1", "--token", &t.to_string()])
            .ok(),
        "renewed"
    );
    assert_eq!(
        n3.cli(&["lock", "release", "r1", "--token", &t.to_string()])
            .ok(),
        "released"
    );
    // Released: a second release with the same token holds nothing.
    assert_eq!(
        n3.cli(&["lock", "release", "r1", "--token", &t.to_string()])
            .err_code(),
        "lock_not_held"
    );
    let t2 = token(&n3.cli(&["lock", "acquire", "r1", "--ttl", "10s", "--owner", "b"]));
    assert!(t2 > t, "{t2} after {t}");

    // Bad input: clear errors, nothing taken.
    let bad_name = n2.cli(&["lock", "acquire", "a b", "--ttl", "1s"]);
    assert_eq!(bad_name.err_code(), "invalid_argument");
    let long = "x".repeat(ekka::types::limits::MAX_LOCK_RESOURCE_BYTES + 1);
    assert_eq!(
        n2.cli(&["lock", "acquire", &long, "--ttl", "1s"])
            .err_code(),
        "invalid_argument"
    );
    assert_eq!(
        n2.cli(&["lock", "acquire", "r2", "--ttl", "1ms"])
            .err_code(),
        "invalid_argument"
    );
    let usage = n2.cli(&["lock", "acquire", "r2", "--ttl", "soon"]);
    assert_eq!(usage.code, 2, "{usage:?}");
    // r2 was never taken by the refused calls.
    token(&n2.cli(&["lock", "acquire", "r2", "--ttl", "1s", "--owner", "z"]));
}

#[test]
fn l02_acquire_without_quorum_fails_cleanly_and_leaves_nothing_behind() {
    let mut c = Cluster::new();
    c.form(3);
    let leader = leader_name(c.get("n1"));
    let others: Vec<String> = ["n1", "n2", "n3"]
        .iter()
        .filter(|n| **n != leader)
        .map(|n| n.to_string())
        .collect();
    for n in &others {
        c.get_mut(n).kill();
    }
    // Right after the kill the leader may still append the entry (then it times out); later it
    // refuses at once. Either way: unavailable, and nothing held afterwards.
    let l = c.get(&leader);
    let out = l.cli(&["lock", "acquire", "r", "--ttl", "10m", "--owner", "lost"]);
    assert_eq!(out.err_code(), "unavailable");
    for n in &others {
        let a = c.get_mut(n);
        let listen = a.addr.clone();
        a.restart(&["--listen", &listen]);
    }
    // Another owner gets it long before the failed acquire's 10-minute lease could end: an
    // entry appended before the quorum was found missing is undone once it commits.
    let n = c.get(&others[0]);
    let mut got = None;
    wait_until(WAIT, "the lock free for another owner", || {
        let out = n.cli(&["lock", "acquire", "r", "--ttl", "30s", "--owner", "next"]);
        if out.code == 0 {
            got = Some(token(&out));
        }
        got.is_some()
    });
    assert!(got.is_some());
}

#[test]
fn l03_tokens_increase_and_a_hold_survives_a_leader_failover() {
    let mut c = Cluster::new();
    c.form(3);
    let leader = leader_name(c.get("n1"));
    let follower = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| *n != leader)
        .unwrap()
        .to_string();
    let f = c.get(&follower);
    let held = token(&f.cli(&["lock", "acquire", "held", "--ttl", "20s", "--owner", "h"]));
    let before = token(&f.cli(&["lock", "acquire", "t1", "--ttl", "20s", "--owner", "x"]));
    assert!(before > held);
    c.get_mut(&leader).kill();
    let f = c.get(&follower);
    wait_until(WAIT, "a new leader", || {
        f.try_status()
            .is_some_and(|s| s["leader"].is_string() && s["leader"] != leader.as_str())
    });
    // The hold is still there with the same token: another owner is refused, the holder renews
    // and re-acquires with the same token.
    let mut refused = false;
    wait_until(WAIT, "the lock service back", || {
        let out = f.cli(&["lock", "acquire", "held", "--ttl", "20s", "--owner", "o"]);
        if out.code == 0 {
            panic!("another owner got a held lock: {out:?}");
        }
        refused = out.err_code() == "lock_held";
        refused
    });
    assert!(refused);
    let ht = held.to_string();
    assert_eq!(
        f.cli(&["lock", "renew", "held", "--token", &ht]).ok(),
        "renewed"
    );
    let again = token(&f.cli(&["lock", "acquire", "held", "--ttl", "20s", "--owner", "h"]));
    assert_eq!(again, held);
    // New grants after the failover carry larger tokens than any before it.
    let after = token(&f.cli(&["lock", "acquire", "t2", "--ttl", "20s", "--owner", "x"]));
    assert!(after > before, "{after} after {before}");
}

/// A running `ekka lock hold` process.
struct Holder {
    child: std::process::Child,
    token: u64,
}

fn hold(a: &Agent, resource: &str, ttl: &str, owner: &str) -> Holder {
    let mut child = Command::new(BIN)
        .args([
            "lock", "hold", resource, "--ttl", ttl, "--owner", owner, "--node", &a.addr,
            "--cookie", COOKIE,
        ])
        .env("EKKA_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    let token = line
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("bad token line {line:?}: {e}"));
    Holder { child, token }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn l04_a_killed_holder_loses_the_lock_when_its_lease_ends() {
    let mut c = Cluster::new();
    c.form(3);
    let n2 = c.get("n2");
    let mut h = hold(n2, "job", "1s", "worker-1");
    // While the holder runs, it renews: the lock stays held well past its first ttl.
    let first_ttl_end = now_ms() + 1000;
    wait_until(WAIT, "two ttls of renewed hold", || {
        let out = n2.cli(&["lock", "acquire", "job", "--ttl", "1s", "--owner", "w2"]);
        assert_eq!(out.err_code(), "lock_held", "the holder lost its lock");
        now_ms() > first_ttl_end + 1000
    });
    // kill -9: no release; the lease runs out and the next in line gets it.
    h.child.kill().unwrap();
    h.child.wait().unwrap();
    let out = n2.cli(&[
        "lock", "acquire", "job", "--ttl", "5s", "--wait", "20s", "--owner", "w2",
    ]);
    let next = token(&out);
    assert!(next > h.token);
}

#[test]
fn l05_twenty_concurrent_acquirers_never_overlap_and_all_get_served() {
    let mut c = Cluster::new();
    c.form(3);
    let addrs: Vec<String> = c.agents.iter().map(|a| a.addr.clone()).collect();
    const ACQUIRERS: usize = 20;
    const ROUNDS: usize = 3;
    let rt = tokio::runtime::Runtime::new().unwrap();
    // (owner, grant token, release revision) for every hold, from each acquirer's own record.
    let history: Vec<(usize, u64, u64)> = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..ACQUIRERS {
            let addr = addrs[i % addrs.len()].clone();
            tasks.spawn(async move {
                let cl = ekka::Client::new(&addr, COOKIE).unwrap();
                let owner = format!("owner-{i}");
                let mut mine = Vec::new();
                for _ in 0..ROUNDS {
                    let g = cl
                        .lock_acquire(
                            "shared",
                            &owner,
                            Duration::from_secs(20),
                            Duration::from_secs(60),
                        )
                        .await
                        .unwrap_or_else(|e| panic!("{owner} not served: {e}"));
                    let released = cl.lock_release("shared", g.token).await.unwrap();
                    mine.push((i, g.token, released));
                }
                mine
            });
        }
        let mut all = Vec::new();
        while let Some(r) = tasks.join_next().await {
            all.extend(r.unwrap());
        }
        all
    });
    assert_eq!(history.len(), ACQUIRERS * ROUNDS, "everyone served");
    let mut by_grant = history.clone();
    by_grant.sort_by_key(|h| h.1);
    for w in by_grant.windows(2) {
        let (a, b) = (w[0], w[1]);
        assert!(a.1 < a.2, "a release before its grant: {a:?}");
        // In log order, each hold ends before the next one begins.
        assert!(
            a.2 <= b.1,
            "holds overlap: owner {} held [{}, {}] and owner {} got it at {}",
            a.0,
            a.1,
            a.2,
            b.0,
            b.1
        );
    }
}

#[test]
fn l06_waiters_are_served_in_arrival_order() {
    let mut c = Cluster::new();
    c.form(3);
    let n1 = c.get("n1");
    let t = token(&n1.cli(&["lock", "acquire", "q", "--ttl", "30s", "--owner", "first"]));
    let addr = n1.addr.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let order = rt.block_on(async {
        let cl = ekka::Client::new(&addr, COOKIE).unwrap();
        let mut tasks = Vec::new();
        for i in 0..4 {
            let wcl = cl.clone();
            tasks.push(tokio::spawn(async move {
                let g = wcl
                    .lock_acquire(
                        "q",
                        &format!("w{i}"),
                        Duration::from_secs(30),
                        Duration::from_secs(60),
                    )
                    .await
                    .unwrap();
                wcl.lock_release("q", g.token).await.unwrap();
                (g.token, i)
            }));
            // The next waiter comes only once this one is in line.
            let deadline = Instant::now() + WAIT;
            while cl.lock_status("q").await.unwrap().waiters.len() < i + 1 {
                assert!(Instant::now() < deadline, "waiter {i} never queued");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let line = cl.lock_status("q").await.unwrap().waiters;
        assert_eq!(line, vec!["w0", "w1", "w2", "w3"]);
        cl.lock_release("q", t).await.unwrap();
        let mut got = Vec::new();
        for t in tasks {
            got.push(t.await.unwrap());
        }
        got.sort();
        got.into_iter().map(|(_, i)| i).collect::<Vec<_>>()
    });
    assert_eq!(order, vec![0, 1, 2, 3]);
}
