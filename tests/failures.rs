//! Membership under failures: joins while the leader is down, concurrent joins, quorum-losing
//! removals refused, restarts on a new port, forced removal of a down voter.

mod common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn t20_join_while_the_leader_is_down_is_unavailable_and_changes_nothing() {
    let mut c = Cluster::new();
    c.form(2); // n1 voter, n2 learner
    c.start("n3", &[]);
    let before = c.get("n3").status();
    c.get_mut("n1").kill();
    let n2 = c.get("n2").addr.clone();
    let out = c.get("n3").cli(&["cluster", "join", &n2]);
    assert_eq!(out.err_code(), "unavailable", "{out:?}");
    let after = c.get("n3").status();
    assert_eq!(after["cluster_id"], before["cluster_id"]);
    assert_eq!(running(&after), ["n3"]);
}

#[test]
fn t21_five_nodes_join_one_seed_at_once() {
    let mut c = Cluster::new();
    for i in 1..=6 {
        c.start(&format!("n{i}"), &[]);
    }
    let seed = c.get("n1").addr.clone();
    let outs: Vec<Out> = std::thread::scope(|s| {
        let hs: Vec<_> = c.agents[1..]
            .iter()
            .map(|a| {
                let seed = seed.clone();
                s.spawn(move || a.cli(&["cluster", "join", &seed]))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for o in &outs {
        assert!(o.ok().starts_with("joined "), "{o:?}");
    }
    let n1 = c.get("n1");
    let s = n1.status();
    assert_eq!(running(&s), ["n1", "n2", "n3", "n4", "n5", "n6"]);
    wait_until(WAIT, "five voters", || {
        role_count(&n1.status(), "voter") == 5
    });
}

#[test]
fn t22_two_nodes_joining_each_other_at_once_end_in_one_cluster() {
    let mut c = Cluster::new();
    c.start("n1", &[]);
    c.start("n2", &[]);
    let (a, b) = (c.get("n1"), c.get("n2"));
    let (o1, o2) = std::thread::scope(|s| {
        let h1 = s.spawn(|| a.cli(&["cluster", "join", &b.addr]));
        let h2 = s.spawn(|| b.cli(&["cluster", "join", &a.addr]));
        (h1.join().unwrap(), h2.join().unwrap())
    });
    let oks = [&o1, &o2].iter().filter(|o| o.code == 0).count();
    assert_eq!(oks, 1, "exactly one join succeeds: {o1:?} {o2:?}");
    let failed = if o1.code == 0 { &o2 } else { &o1 };
    assert_eq!(failed.err_code(), "already_in_cluster");
    wait_until(WAIT, "one cluster of two", || {
        let (s1, s2) = (a.status(), b.status());
        running(&s1) == ["n1", "n2"] && s1["cluster_id"] == s2["cluster_id"]
    });
}

#[test]
fn t23_force_leave_a_down_voter_in_a_three_node_cluster() {
    let mut c = Cluster::new();
    c.form(3);
    c.get_mut("n3").kill();
    let n1 = c.get("n1");
    wait_until(WAIT, "n3 down", || stopped(&n1.status()) == ["n3"]);
    assert_eq!(n1.cli(&["cluster", "force-leave", "n3"]).ok(), "removed n3");
    let s = n1.status();
    assert_eq!(running(&s), ["n1", "n2"]);
    assert!(member(&s, "n3").is_none());
    assert_eq!(role_count(&s, "voter"), 2);
}

#[test]
fn t24_leave_refused_when_it_would_lose_quorum() {
    let mut c = Cluster::new();
    c.form(3);
    c.get_mut("n3").kill();
    let n1 = c.get("n1");
    wait_until(WAIT, "n3 down", || stopped(&n1.status()) == ["n3"]);
    // Voters {n1, n2, n3} with n3 down: n2 leaving leaves {n1, n3}, one of two up.
    let before = n1.status();
    let out = c.get("n2").cli(&["cluster", "leave"]);
    assert_eq!(out.err_code(), "would_lose_quorum");
    let after = n1.status();
    assert_eq!(running(&after), ["n1", "n2"]);
    assert_eq!(before["members"], after["members"], "nothing changed");
}

#[test]
fn t25_restart_on_a_new_port_is_up_again_with_its_new_address() {
    let mut c = Cluster::new();
    c.form(3);
    let old = c.get("n2").addr.clone();
    c.get_mut("n2").kill();
    let n1 = c.get("n1");
    wait_until(WAIT, "n2 down", || stopped(&n1.status()) == ["n2"]);
    c.get_mut("n2").restart(&[]);
    let new = c.get("n2").addr.clone();
    assert_ne!(old, new, "port 0 gives a new port");
    let n1 = c.get("n1");
    wait_until(WAIT, "n2 up at its new address", || {
        let s = n1.status();
        let m = member(&s, "n2").cloned().unwrap_or_default();
        m["status"] == "up" && m["addr"] == new.as_str()
    });
}

#[test]
fn t26_leader_leaves_and_the_cluster_goes_on() {
    let mut c = Cluster::new();
    c.form(3);
    let leader = c.get("n1").status()["leader"].as_str().unwrap().to_string();
    assert_eq!(c.get(&leader).cli(&["cluster", "leave"]).ok(), "left");
    let rest: Vec<String> = ["n1", "n2", "n3"]
        .iter()
        .filter(|n| **n != leader)
        .map(|n| n.to_string())
        .collect();
    let a = c.get(&rest[0]);
    wait_until(WAIT, "two members with a new leader", || {
        let s = a.status();
        running(&s) == rest && s["leader"].is_string() && s["leader"] != leader.as_str()
    });
}

#[test]
fn t27_recover_after_losing_two_of_three() {
    let mut c = Cluster::new();
    c.form(3);
    // Data written just before the crash: every acknowledged key survives the recovery.
    for i in 0..5 {
        c.get("n2")
            .cli(&["kv", "put", &format!("k{i}"), &format!("v{i}")])
            .ok();
    }
    c.get("n2")
        .cli(&["lock", "acquire", "l", "--ttl", "10m", "--owner", "o"])
        .ok();
    for n in ["n1", "n2", "n3"] {
        c.get_mut(n).kill();
    }
    let dir = c.get("n1").data_dir.clone();
    let out = run(&["cluster", "recover", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(out.ok(), "recovered");
    assert!(
        out.stderr.contains("n2") && out.stderr.contains("n3"),
        "{out:?}"
    );
    assert!(out.stderr.contains("keeping 5 keys"), "{out:?}");
    assert!(out.stderr.contains("dropping 1 held locks"), "{out:?}");
    c.get_mut("n1").restart(&[]);
    let s = c.get("n1").status();
    assert_eq!(running(&s), ["n1"]);
    assert_eq!(s["leader"], "n1");
    let n1 = c.get("n1");
    for i in 0..5 {
        assert_eq!(
            n1.cli(&["kv", "get", &format!("k{i}")]).ok(),
            format!("v{i}")
        );
    }
    // Leases do not survive a recovery: the lock is free.
    n1.cli(&["lock", "acquire", "l", "--ttl", "1s", "--owner", "x"])
        .ok();
}

#[test]
fn t28_recover_refuses_while_the_agent_runs() {
    let mut c = Cluster::new();
    c.start("n1", &[]);
    let dir = c.get("n1").data_dir.clone();
    let out = run(&["cluster", "recover", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.starts_with("error: invalid_config: "), "{out:?}");
    assert_eq!(running(&c.get("n1").status()), ["n1"]);
}

#[test]
fn t29_new_member_catches_up_from_a_streamed_snapshot() {
    let mut c = Cluster::new();
    // Snapshot every 3 entries and keep 3: the log a newcomer needs is long gone.
    c.start("n1", &["--snapshot-every", "3"]);
    c.start("n2", &[]);
    let seed = c.get("n1").addr.clone();
    for _ in 0..4 {
        c.get("n2").cli(&["cluster", "join", &seed]).ok();
        c.get("n2").cli(&["cluster", "leave"]).ok();
    }
    c.get("n2").cli(&["cluster", "join", &seed]).ok();
    c.start("n3", &[]);
    let out = c.get("n3").cli(&["cluster", "join", &seed]);
    assert!(out.ok().starts_with("joined "), "{out:?}");
    let s = c.get("n1").status();
    assert_eq!(running(&s), ["n1", "n2", "n3"]);
    // n3 was brought up to date by a snapshot, not by replaying the log.
    let log = std::fs::read_to_string(&c.get("n3").log).unwrap();
    assert!(log.contains("install_full_snapshot"), "n3 log:\n{log}");
    // n3 holds everything committed before it joined (later entries may have followed).
    let n3 = c.get("n3").status();
    assert!(
        n3["revision"].as_u64() >= s["revision"].as_u64(),
        "{n3} vs {s}"
    );
    assert_eq!(running(&n3), ["n1", "n2", "n3"]);
}

#[test]
fn t53_a_node_removed_while_cut_off_learns_it_and_resets() {
    let mut c = Cluster::new();
    c.form(3);
    let old_cluster = c.get("n1").status()["cluster_id"].clone();
    let old_id = member(&c.get("n1").status(), "n3").unwrap()["id"].clone();
    c.get("n3").pause();
    let n1 = c.get("n1");
    wait_until(WAIT, "n3 down", || stopped(&n1.status()) == ["n3"]);
    assert_eq!(n1.cli(&["cluster", "force-leave", "n3"]).ok(), "removed n3");
    c.get("n3").resume();
    // Its first contact (a vote request) is answered "removed": it resets to a fresh node.
    let n3 = c.get("n3");
    wait_until(WAIT, "n3 reset itself", || {
        n3.try_status().is_some_and(|s| {
            s["cluster_id"] != old_cluster && running(&s) == ["n3"] && s["node"]["id"] != old_id
        })
    });
    // The cluster goes on without it (a configuration change may cost one quick election).
    let n1 = c.get("n1");
    wait_until(WAIT, "n1 and n2 with a leader", || {
        n1.try_status()
            .is_some_and(|s| running(&s) == ["n1", "n2"] && s["leader"].is_string())
    });
}

#[test]
fn t54_a_voter_down_too_long_is_replaced_by_an_up_learner() {
    let mut c = Cluster::new();
    let fast = ["--replace-down-voter-after", "1s"];
    for i in 1..=7 {
        c.start(&format!("n{i}"), &fast);
    }
    let seed = c.get("n1").addr.clone();
    for i in 2..=7 {
        let out = c.get(&format!("n{i}")).cli(&["cluster", "join", &seed]);
        assert!(out.ok().starts_with("joined "), "{out:?}");
    }
    let n1 = c.get("n1");
    wait_until(WAIT, "5 voters and 2 learners", || {
        let s = n1.status();
        role_count(&s, "voter") == 5 && role_count(&s, "learner") == 2
    });
    let s = n1.status();
    let leader = s["leader"].as_str().unwrap().to_string();
    let victim = s["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "voter" && m["name"] != leader.as_str())
        .map(|m| m["name"].as_str().unwrap().to_string())
        .unwrap();
    c.get_mut(&victim).kill();
    let watcher = ["n1", "n2", "n3", "n4", "n5", "n6", "n7"]
        .into_iter()
        .find(|n| *n != victim)
        .unwrap();
    let a = c.get(watcher);
    wait_until(WAIT, "the down voter replaced", || {
        a.try_status().is_some_and(|s| {
            let voters: Vec<_> = s["members"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["role"] == "voter")
                .collect();
            voters.len() == 5
                && voters.iter().all(|m| m["status"] == "up")
                && member(&s, &victim).is_some_and(|m| m["role"] == "learner")
        })
    });
}

#[test]
fn t55_reads_after_a_whole_cluster_crash_restart_see_every_acknowledged_write() {
    // Every agent is SIGKILLed right after a burst of writes is acknowledged, then all restart
    // on their old ports at once. A linearizable read, on any member, must see each of those
    // writes: a restarted member must not serve reads from a leadership it held before the
    // crash, whose commit point on disk may lag what it had acknowledged.
    let mut c = Cluster::new();
    c.form(3);
    let rt = tokio::runtime::Runtime::new().unwrap();
    for round in 0..4u32 {
        let leader = leader_of(&c);
        let at = c.get(&leader).addr.clone();
        let acked: Vec<(String, String)> = rt.block_on(async {
            let client = ekka::Client::new(&at, COOKIE).unwrap();
            let puts: Vec<_> = (0..16)
                .map(|k| {
                    let client = client.clone();
                    tokio::spawn(async move {
                        let (key, value) = (format!("k{k}"), format!("r{round}-{k}"));
                        client
                            .kv_put(&key, value.clone())
                            .await
                            .map(|_| (key, value))
                    })
                })
                .collect();
            let mut acked = Vec::new();
            for p in puts {
                if let Ok(kv) = p.await.unwrap() {
                    acked.push(kv);
                }
            }
            acked
        });
        assert!(
            !acked.is_empty(),
            "round {round}: no write was acknowledged"
        );
        let names = ["n1", "n2", "n3"];
        for n in names {
            c.get_mut(n).kill();
        }
        for n in names {
            let addr = c.get(n).addr.clone();
            c.get_mut(n).restart(&["--listen", &addr]);
        }
        for n in names {
            let addr = c.get(n).addr.clone();
            for (key, value) in &acked {
                let got = rt.block_on(read_when_served(&addr, key));
                assert_eq!(
                    &got, value,
                    "round {round}: a linearizable read of {key} on {n} missed an acknowledged write"
                );
            }
        }
    }
}

/// The name of the leader, as n1..n3 see it, once there is one.
fn leader_of(c: &Cluster) -> String {
    let mut name = String::new();
    wait_until(WAIT, "a leader", || {
        let s = c.get("n1").try_status();
        match s.as_ref().and_then(|s| s["leader"].as_str()) {
            Some(l) => {
                name = l.to_string();
                true
            }
            None => false,
        }
    });
    name
}

/// A linearizable read of `key` at `addr`, retried while there is no leader yet to serve it.
async fn read_when_served(addr: &str, key: &str) -> String {
    let client = ekka::Client::new(addr, COOKIE).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match client.kv_get(key, false).await {
            Ok(e) => return String::from_utf8_lossy(&e.value).into_owned(),
            Err(e) if std::time::Instant::now() < deadline => {
                assert!(
                    matches!(
                        e.code,
                        ekka::ErrorCode::Unavailable | ekka::ErrorCode::NodeDown
                    ),
                    "read of {key} at {addr}: {e}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("read of {key} at {addr} never served: {e}"),
        }
    }
}

#[test]
fn t56_requests_through_a_follower_fail_over_from_a_frozen_leader() {
    // The leader is frozen (SIGSTOP: its sockets accept, nothing answers). Requests sent through
    // a follower must not wait for it until their deadline (15 s): once the others elect a new
    // leader, a read is asked again there, and a write either reaches it or, when it was already
    // in the frozen leader's hands, answers outcome_unknown at once.
    let mut c = Cluster::new();
    c.form(3);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let leader = leader_of(&c);
    let follower = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| *n != leader)
        .unwrap();
    let at = c.get(follower).addr.clone();
    let client = rt.block_on(async { ekka::Client::new(&at, COOKIE).unwrap() });
    rt.block_on(client.kv_put("k", "before")).unwrap();
    // Sent right after the freeze, well inside the time the cluster needs to notice it.
    let limit = Duration::from_secs(10);
    c.get(&leader).pause();
    let (read, write) = rt.block_on(async {
        let (r, w) = tokio::join!(
            tokio::time::timeout(limit, client.kv_get("k", false)),
            tokio::time::timeout(limit, client.kv_put("k", "during")),
        );
        (r, w)
    });
    let read = read.expect("the read waited for the frozen leader");
    let write = write.expect("the write waited for the frozen leader");
    let value = String::from_utf8(read.expect("the read failed over").value.to_vec()).unwrap();
    assert!(value == "before" || value == "during", "{value}");
    if let Err(e) = &write {
        assert_eq!(e.code, ekka::ErrorCode::OutcomeUnknown, "{e}");
    }
    // Writes go on through the follower while the old leader is still frozen.
    let again = rt
        .block_on(async { tokio::time::timeout(limit, client.kv_put("k", "after")).await })
        .expect("a write after the failover waited");
    again.expect("a write after the failover failed");
    let read = rt.block_on(client.kv_get("k", false)).unwrap();
    assert_eq!(&read.value[..], b"after");
    c.get(&leader).resume();
}

#[test]
fn t57_force_leave_of_the_leader_removes_it_and_it_can_join_again() {
    let mut c = Cluster::new();
    c.form(3);
    let leader = leader_of(&c);
    let other = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| *n != leader)
        .unwrap();
    let out = c.get(other).cli(&["cluster", "force-leave", &leader]);
    assert_eq!(out.ok(), format!("removed {leader}"), "{out:?}");
    let rest: Vec<String> = ["n1", "n2", "n3"]
        .into_iter()
        .filter(|n| *n != leader)
        .map(String::from)
        .collect();
    wait_until(WAIT, "the others carry on without it", || {
        c.get(other).try_status().is_some_and(|s| {
            running(&s) == rest && s["leader"].as_str().is_some_and(|l| l != leader)
        })
    });
    // The removed leader learns it and starts over alone, so it can be joined again.
    wait_until(WAIT, "the removed leader alone in a fresh cluster", || {
        c.get(&leader)
            .try_status()
            .is_some_and(|s| running(&s) == [leader.clone()])
    });
    let seed = c.get(other).addr.clone();
    let out = c.get(&leader).cli(&["cluster", "join", &seed]);
    assert!(out.ok().starts_with("joined "), "{out:?}");
    wait_formed(c.get(other), &["n1", "n2", "n3"], WAIT);
}
