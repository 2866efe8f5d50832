//! The key-value space through real agents: CLI round trips, linearizable and stale reads, limits,
//! snapshots carrying keys to a new member, and a watch that resumes across an agent restart.

mod common;

use std::time::Duration;

use common::stream::JsonLines;
use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

fn rev(out: &Out) -> u64 {
    out.ok()
        .parse()
        .unwrap_or_else(|e| panic!("not a revision ({e}): {out:?}"))
}

#[test]
fn k01_put_get_delete_cas_from_any_member() {
    let mut c = Cluster::new();
    c.form(3);
    let (n1, n2, n3) = (c.get("n1"), c.get("n2"), c.get("n3"));
    assert_eq!(n2.status()["stale"], false);
    let r1 = rev(&n2.cli(&["kv", "put", "cfg/a", "one"]));
    // A linearizable read on another member sees the acknowledged write at once.
    assert_eq!(n3.cli(&["kv", "get", "cfg/a"]).ok(), "one");
    let j: Value = serde_json::from_str(n1.cli(&["kv", "get", "cfg/a", "--json"]).ok()).unwrap();
    assert_eq!(j["mod_revision"], r1);
    assert_eq!(j["create_revision"], r1);
    assert_eq!(j["version"], 1);

    let r2 = rev(&n3.cli(&["kv", "put", "cfg/a", "two"]));
    assert!(r2 > r1);
    // cas against a stale revision fails and changes nothing.
    let stale = n1.cli(&["kv", "cas", "cfg/a", "--rev", &r1.to_string(), "three"]);
    assert_eq!(stale.err_code(), "compare_failed");
    assert_eq!(n1.cli(&["kv", "get", "cfg/a"]).ok(), "two");
    let r3 = rev(&n1.cli(&["kv", "cas", "cfg/a", "--rev", &r2.to_string(), "three"]));
    assert!(r3 > r2);
    // --rev 0: create only.
    assert_eq!(
        n1.cli(&["kv", "cas", "cfg/a", "--rev", "0", "x"])
            .err_code(),
        "compare_failed"
    );
    rev(&n1.cli(&["kv", "cas", "cfg/b", "--rev", "0", "bee"]));
    rev(&n1.cli(&["kv", "put", "other", "o"]));
    let listed = n2.cli(&["kv", "list", "cfg/"]);
    assert_eq!(listed.ok(), "cfg/a three\ncfg/b bee");

    assert_eq!(n2.cli(&["kv", "delete", "cfg/a"]).ok(), "deleted");
    assert!(n2
        .cli(&["kv", "delete", "cfg/a"])
        .ok()
        .starts_with("ignored: "));
    assert_eq!(n3.cli(&["kv", "get", "cfg/a"]).err_code(), "key_not_found");

    // Bad input: clear errors, nothing written.
    assert_eq!(
        n1.cli(&["kv", "put", "a key", "v"]).err_code(),
        "invalid_argument"
    );
    let long_key = "k".repeat(ekka::types::limits::MAX_KEY_BYTES + 1);
    assert_eq!(
        n1.cli(&["kv", "put", &long_key, "v"]).err_code(),
        "invalid_argument"
    );
    let big = "v".repeat(ekka::types::limits::MAX_VALUE_BYTES + 1);
    assert_eq!(
        n1.cli(&["kv", "put", "big", &big]).err_code(),
        "invalid_argument"
    );
    assert_eq!(n1.cli(&["kv", "get", "big"]).err_code(), "key_not_found");
}

#[test]
fn k02_minority_refuses_linearizable_reads_and_writes_but_serves_stale_reads() {
    let mut c = Cluster::new();
    c.form(3);
    rev(&c.get("n1").cli(&["kv", "put", "k", "v1"]));
    wait_until(WAIT, "n3 applied the write", || {
        c.get("n3")
            .cli(&["kv", "get", "k", "--stale"])
            .stdout
            .trim()
            == "v1"
    });
    c.get_mut("n1").kill();
    c.get_mut("n2").kill();
    let n3 = c.get("n3");
    assert_eq!(n3.cli(&["kv", "get", "k", "--stale"]).ok(), "v1");
    // Its status is its own view, and says so.
    let s = n3.status();
    assert_eq!(s["stale"], true, "{s}");
    assert!(n3
        .cli(&["cluster", "status"])
        .ok()
        .lines()
        .next()
        .unwrap()
        .contains("stale"));
    assert_eq!(n3.cli(&["kv", "put", "k", "v2"]).err_code(), "unavailable");
    assert_eq!(n3.cli(&["kv", "get", "k"]).err_code(), "unavailable");
}

/// Starts `ekka kv watch PREFIX --json [--from REV]` on `a`.
fn kv_watch(a: &Agent, prefix: &str, from: Option<u64>) -> JsonLines {
    let from = from.map(|f| f.to_string());
    let mut args = vec!["kv", "watch", prefix, "--json"];
    if let Some(f) = &from {
        args.extend(["--from", f]);
    }
    JsonLines::start(a, &args)
}

/// Collects events until `n` have arrived.
fn take(w: &JsonLines, n: usize) -> Vec<Value> {
    let mut got = Vec::new();
    while got.len() < n {
        match w.next(WAIT) {
            Some(v) => got.push(v),
            None => panic!("only {} of {n} events: {got:?}", got.len()),
        }
    }
    got
}

#[test]
fn k03_watch_resumes_after_an_agent_restart_without_gaps_or_repeats() {
    let mut c = Cluster::new();
    c.form(3);
    let mut expected = Vec::new();
    let w = kv_watch(c.get("n2"), "app/", Some(1));
    for i in 0..5 {
        let r = rev(&c
            .get("n1")
            .cli(&["kv", "put", &format!("app/{i}"), &format!("v{i}")]));
        expected.push(r);
        // Noise outside the prefix.
        rev(&c.get("n1").cli(&["kv", "put", &format!("noise/{i}"), "x"]));
    }
    let seen = take(&w, 5);
    drop(w);
    let last = seen.last().unwrap()["revision"].as_u64().unwrap();

    // The watched agent restarts; writes and a delete go on meanwhile.
    c.get_mut("n2").stop();
    for i in 5..8 {
        let r = rev(&c
            .get("n1")
            .cli(&["kv", "put", &format!("app/{i}"), &format!("v{i}")]));
        expected.push(r);
    }
    assert_eq!(c.get("n1").cli(&["kv", "delete", "app/0"]).ok(), "deleted");
    c.get_mut("n2").restart(&[]);
    let n2 = c.get("n2");
    wait_until(WAIT, "n2 up again", || {
        n2.try_status().is_some_and(|s| running(&s).len() == 3)
    });
    let w = kv_watch(n2, "app/", Some(last + 1));
    let rest = take(&w, 4);
    let mut all: Vec<Value> = seen.into_iter().chain(rest).collect();
    let revs: Vec<u64> = all
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    let mut sorted = revs.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, revs, "events out of order or repeated: {all:?}");
    let del = all.pop().unwrap();
    assert_eq!(del["event"], "delete");
    assert_eq!(del["key"], "app/0");
    let puts: Vec<u64> = all
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(puts, expected, "missed or extra puts");
    assert!(all.iter().all(|e| e["event"] == "put"));
    assert_eq!(all[7]["value"], "v7");
}

#[test]
fn k04_keys_travel_in_snapshots_and_survive_restarts() {
    let mut c = Cluster::new();
    c.start("n1", &["--snapshot-every", "20"]);
    c.start("n2", &["--snapshot-every", "20"]);
    let seed = c.get("n1").addr.clone();
    c.get("n2").cli(&["cluster", "join", &seed]).ok();
    for i in 0..60 {
        rev(&c
            .get("n1")
            .cli(&["kv", "put", &format!("k{i:02}"), &format!("{i}")]));
    }
    let t = c
        .get("n1")
        .cli(&[
            "lock",
            "acquire",
            "snap-lock",
            "--ttl",
            "10m",
            "--owner",
            "o",
        ])
        .ok()
        .to_string();
    // A new member catches up from a snapshot taken after the keys were written.
    c.start("n3", &["--snapshot-every", "20"]);
    c.get("n3").cli(&["cluster", "join", &seed]).ok();
    let n3 = c.get("n3");
    wait_until(WAIT, "n3 has every key", || {
        let out = n3.cli(&["kv", "list", "k", "--stale"]);
        out.code == 0 && out.stdout.lines().count() == 60
    });
    assert_eq!(n3.cli(&["kv", "get", "k07", "--stale"]).ok(), "7");
    // The lock came along too: still held, by the same token.
    let other = n3.cli(&[
        "lock",
        "acquire",
        "snap-lock",
        "--ttl",
        "1s",
        "--owner",
        "x",
    ]);
    assert_eq!(other.err_code(), "lock_held");
    let again = n3.cli(&[
        "lock",
        "acquire",
        "snap-lock",
        "--ttl",
        "10m",
        "--owner",
        "o",
    ]);
    assert_eq!(again.ok(), t);

    // And a restart rebuilds the same space from the snapshot and the log.
    c.get_mut("n3").stop();
    c.get_mut("n3").restart(&[]);
    let n3 = c.get("n3");
    wait_until(WAIT, "n3 back with every key", || {
        let out = n3.cli(&["kv", "list", "k", "--stale"]);
        out.code == 0 && out.stdout.lines().count() == 60
    });
}

/// A put the leader appended but could not commit (both followers paused) is never reported as
/// failed (exit 1, "nothing changed"): it is `outcome_unknown` (exit 3), and here it does commit
/// once the followers are back. A put refused with exit 1 must never show up.
#[test]
fn k20_a_put_that_may_commit_later_is_outcome_unknown_never_failed() {
    let mut c = Cluster::new();
    c.form(3);
    let st = c.get("n1").status();
    let leader = st["leader"].as_str().expect("a leader").to_string();
    let others: Vec<String> = ["n1", "n2", "n3"]
        .iter()
        .filter(|n| **n != leader)
        .map(|n| n.to_string())
        .collect();
    for n in &others {
        c.get(n).pause();
    }
    let out = c.get(&leader).cli(&["kv", "put", "k20", "maybe"]);
    for n in &others {
        c.get(n).resume();
    }
    assert!(
        out.code == 1 || out.code == 3,
        "a put without a quorum must fail or be unknown: {out:?}"
    );
    if out.code == 3 {
        assert!(
            out.stderr.starts_with("error: outcome_unknown: "),
            "{out:?}"
        );
    }
    // A later write commits after k20's entry, if that was appended: then k20 is decided.
    wait_until(Duration::from_secs(20), "a write after the pause", || {
        c.get(&leader).cli(&["kv", "put", "k20-after", "x"]).code == 0
    });
    let got = c.get(&leader).cli(&["kv", "get", "k20"]);
    if out.code == 1 {
        assert_ne!(
            got.stdout.trim(),
            "maybe",
            "exit 1 said nothing changed, but the put was applied: {out:?}"
        );
    }
    println!("put without quorum: exit {}, then get: {got:?}", out.code);
}
