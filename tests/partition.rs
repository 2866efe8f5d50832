//! Partitions on real sockets: every agent is reached by its peers only through a proxy the test
//! controls. A member cut off from the others is shown down, sees its own view marked stale, and
//! catches up once the links return with nothing lost: every write the cluster acknowledged
//! meanwhile (recorded by the writer as it was acknowledged) is on every member afterwards.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::proxy::Proxy;
use common::*;

const WAIT: Duration = Duration::from_secs(40);

/// Writes `w/<seq>` keys until stopped, through the first of `addrs` and on to the next after an
/// error; records the acknowledged sequence numbers.
fn writer(addrs: Vec<String>, stop: Arc<AtomicBool>, acked: Arc<Mutex<Vec<u64>>>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let cs: Vec<ekka::Client> = addrs
            .iter()
            .map(|a| ekka::Client::new(a, COOKIE).unwrap())
            .collect();
        let (mut seq, mut at) = (0u64, 0usize);
        while !stop.load(Ordering::SeqCst) {
            seq += 1;
            // An error is an unknown outcome: not recorded, never checked either way.
            let key = format!("w/{seq:06}");
            let put = cs[at % cs.len()].kv_put(&key, seq.to_string());
            match tokio::time::timeout(Duration::from_secs(3), put).await {
                Ok(Ok(_)) => acked.lock().unwrap().push(seq),
                _ => at += 1,
            }
        }
    });
}

/// Starts n agents, each reached by its peers only through its own proxy, joined into a cluster.
fn behind_proxies(c: &mut Cluster, n: usize) -> Vec<Proxy> {
    let proxies: Vec<Proxy> = (0..n).map(|_| Proxy::start()).collect();
    for (i, p) in proxies.iter().enumerate() {
        c.start(&format!("n{}", i + 1), &["--advertise", &p.addr]);
        p.set_target(&c.agents[i].addr);
    }
    for i in 1..n {
        let out = c.agents[i].cli(&["cluster", "join", &proxies[0].addr]);
        assert!(out.ok().starts_with("joined "), "{out:?}");
    }
    let n1 = c.get("n1");
    wait_until(WAIT, "every member up", || running(&n1.status()).len() == n);
    proxies
}

/// Every acknowledged write is on every agent (read from each one's own state).
fn no_acknowledged_write_lost(c: &Cluster, acked: &Mutex<Vec<u64>>) {
    let acked: BTreeSet<u64> = acked.lock().unwrap().iter().copied().collect();
    assert!(!acked.is_empty());
    for a in &c.agents {
        let mut have = BTreeSet::new();
        wait_until(
            WAIT,
            &format!("{} holds every acknowledged write", a.name),
            || {
                have = keys_on(a);
                acked.is_subset(&have)
            },
        );
        let missing: Vec<_> = acked.difference(&have).collect();
        assert!(missing.is_empty(), "{} lost {missing:?}", a.name);
    }
}

fn keys_on(a: &Agent) -> BTreeSet<u64> {
    let out = a.cli(&["kv", "list", "w/", "--stale"]);
    out.ok()
        .lines()
        .filter_map(|l| l.split(' ').next()?.strip_prefix("w/")?.parse().ok())
        .collect()
}

#[test]
fn p01_a_cut_off_member_catches_up_and_no_acknowledged_write_is_lost() {
    let mut c = Cluster::new();
    let proxies = behind_proxies(&mut c, 3);
    let n1 = c.get("n1");
    let leader = n1.status()["leader"].as_str().unwrap().to_string();
    let li = c.agents.iter().position(|a| a.name == leader).unwrap();
    let vi = (li + 1) % 3;
    let victim = c.agents[vi].name.clone();

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let w = {
        let (addr, stop, acked) = (c.agents[li].addr.clone(), stop.clone(), acked.clone());
        std::thread::spawn(move || writer(vec![addr], stop, acked))
    };
    let n_acked = || acked.lock().unwrap().len();
    wait_until(WAIT, "writes before the cut", || n_acked() >= 20);

    proxies[vi].cut();
    let l = &c.agents[li];
    wait_until(WAIT, "the cut-off member shown down", || {
        stopped(&l.status()) == [victim.clone()]
    });
    let before = n_acked();
    wait_until(WAIT, "writes go on without it", || n_acked() >= before + 50);
    // On its side: no leader with a quorum answers, and its view says so.
    let v = &c.agents[vi];
    wait_until(WAIT, "the cut-off member sees its view as stale", || {
        v.try_status().is_some_and(|s| s["stale"] == true)
    });
    assert_eq!(
        v.cli(&["kv", "put", "from-the-minority", "x"]).err_code(),
        "unavailable"
    );

    proxies[vi].heal();
    wait_until(WAIT, "all three up again", || {
        c.agents[li]
            .try_status()
            .or_else(|| c.agents[(li + 2) % 3].try_status())
            .is_some_and(|s| running(&s).len() == 3)
    });
    let before = n_acked();
    wait_until(WAIT, "writes after the heal", || n_acked() >= before + 20);
    stop.store(true, Ordering::SeqCst);
    w.join().unwrap();

    no_acknowledged_write_lost(&c, &acked);
    // The minority's refused write never appeared anywhere.
    for a in &c.agents {
        let out = a.cli(&["kv", "get", "from-the-minority", "--stale"]);
        assert_eq!(out.err_code(), "key_not_found", "{}", a.name);
    }
}

#[test]
fn p02_one_way_cuts_around_the_leader_lose_nothing() {
    // Links into both followers are cut: each still reaches the leader, which reaches neither.
    // The leader loses its quorum and says so. Whether a follower can win an election depends on
    // whether the old leader's log got ahead of theirs meanwhile (then no one can, in any Raft);
    // either way, once the links return the cluster converges and no acknowledged write is lost.
    let mut c = Cluster::new();
    let proxies = behind_proxies(&mut c, 3);
    let leader = c.get("n1").status()["leader"].as_str().unwrap().to_string();
    let li = c.agents.iter().position(|a| a.name == leader).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let w = {
        let addrs: Vec<String> = c.agents.iter().map(|a| a.addr.clone()).collect();
        let (stop, acked) = (stop.clone(), acked.clone());
        std::thread::spawn(move || writer(addrs, stop, acked))
    };
    let n_acked = || acked.lock().unwrap().len();
    wait_until(WAIT, "writes before the cut", || n_acked() >= 20);
    for (i, p) in proxies.iter().enumerate() {
        if i != li {
            p.cut();
        }
    }
    let l = &c.agents[li];
    wait_until(WAIT, "the old leader sees it has no quorum", || {
        l.try_status().is_some_and(|s| s["stale"] == true)
    });
    for (i, p) in proxies.iter().enumerate() {
        if i != li {
            p.heal();
        }
    }
    wait_until(WAIT, "all three up again", || {
        c.agents
            .iter()
            .filter_map(|a| a.try_status())
            .any(|s| running(&s).len() == 3 && s["stale"] == false)
    });
    let before = n_acked();
    wait_until(WAIT, "writes after the heal", || n_acked() >= before + 20);
    stop.store(true, Ordering::SeqCst);
    w.join().unwrap();
    no_acknowledged_write_lost(&c, &acked);
}
