//! Partitions on real sockets: every agent is reached by its peers only through a proxy the test
//! controls, which can cut one direction of one pair of agents. These are ekka_autoheal_SUITE's
//! cases in their Raft form (a member cut off from both others, an asymmetric 4-node cut, a full
//! split, a majority reachable with one dead node) plus a three-way split. Where ekka rebooted
//! the minority, here nothing is done by hand: the side with a quorum goes on, every other side
//! marks its view stale and refuses writes, and once the links return everyone converges with
//! nothing lost. Each client operation's outcome is recorded as it is acknowledged and checked
//! afterwards: every acknowledged write is on every member, every acknowledged membership change
//! holds in every member's view, and a refused one left no trace.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use ekka_testkit::proxy::Net;

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

/// Starts agent `i` (named n{i+1}) behind proxy `i` of `net`.
fn start_behind(c: &mut Cluster, net: &Net, i: usize) {
    let p = &net.proxies[i];
    c.start(&format!("n{}", i + 1), &["--advertise", &p.addr]);
    p.set_target(&c.agents[i].addr);
    net.set_pid(i, c.agents[i].pid());
}

/// Starts n agents, each reached by its peers only through its own proxy, joined into a cluster;
/// the net has proxies for `room` agents, so that more can start later.
fn behind_proxies(n: usize, room: usize) -> (Cluster, Net) {
    let mut c = Cluster::new();
    let net = Net::new(room);
    for i in 0..n {
        start_behind(&mut c, &net, i);
    }
    for i in 1..n {
        let out = c.agents[i].cli(&["cluster", "join", &net.proxies[0].addr]);
        assert!(out.ok().starts_with("joined "), "{out:?}");
    }
    let n1 = c.get("n1");
    wait_until(WAIT, "every member up", || running(&n1.status()).len() == n);
    (c, net)
}

/// Starts the writer on a thread, through `agents` in turn.
fn start_writer(agents: &[Agent]) -> Writer {
    let addrs: Vec<String> = agents.iter().map(|a| a.addr.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let thread = {
        let (stop, acked) = (stop.clone(), acked.clone());
        std::thread::spawn(move || writer(addrs, stop, acked))
    };
    Writer {
        stop,
        acked,
        thread,
    }
}

struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<u64>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Writer {
    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until `n` more writes are acknowledged.
    fn wait_more(&self, n: usize, what: &str) {
        let before = self.acked();
        wait_until(WAIT, what, || self.acked() >= before + n);
    }

    /// Stops the writer; every write it had acknowledged must be on every running agent.
    fn finish(self, c: &Cluster) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap();
        no_acknowledged_write_lost(c, &self.acked);
    }
}

/// Brings every link back, then checks the outcome: every member in `names` converges, writes go
/// on, every acknowledged write is on every member, and the write refused at `refused` (if any)
/// is nowhere.
fn heal_and_check(c: &Cluster, net: &Net, w: Writer, names: &[&str], refused: Option<&str>) {
    net.heal();
    converged(c, names);
    w.wait_more(20, "writes after the heal");
    w.finish(c);
    let Some(key) = refused else { return };
    for a in c.agents.iter().filter(|a| a.pid().is_some()) {
        let out = a.cli(&["kv", "get", key, "--stale"]);
        assert_eq!(out.err_code(), "key_not_found", "{} has {key}", a.name);
    }
}

/// Every running agent's own view: a leader with a quorum, and `names` as the running members.
fn converged(c: &Cluster, names: &[&str]) {
    let want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    for a in c.agents.iter().filter(|a| names.contains(&a.name.as_str())) {
        wait_until(WAIT, &format!("{} sees {names:?} running", a.name), || {
            a.try_status()
                .is_some_and(|s| s["stale"] == false && running(&s) == want)
        });
    }
}

/// Waits until the agents at `idx` all mark their views stale (no leader with a quorum).
fn all_stale(c: &Cluster, idx: &[usize]) {
    for &i in idx {
        let a = &c.agents[i];
        wait_until(WAIT, &format!("{} marks its view stale", a.name), || {
            a.try_status().is_some_and(|s| s["stale"] == true)
        });
    }
}

/// The index of the agent the cluster currently names as leader, asked of `a`.
fn leader_index(c: &Cluster, a: &Agent) -> usize {
    let mut li = None;
    wait_until(WAIT, "a leader", || {
        li = a.try_status().and_then(|s| {
            let l = s["leader"].as_str()?.to_string();
            c.agents.iter().position(|x| x.name == l)
        });
        li.is_some()
    });
    li.unwrap()
}

/// Every acknowledged write is on every agent (read from each one's own state).
fn no_acknowledged_write_lost(c: &Cluster, acked: &Mutex<Vec<u64>>) {
    let acked: BTreeSet<u64> = acked.lock().unwrap().iter().copied().collect();
    assert!(!acked.is_empty());
    for a in c.agents.iter().filter(|a| a.pid().is_some()) {
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

/// Sends a line through `proxy` from this process and reads the echo; `None` when refused.
fn echo_through(proxy: &str) -> Option<String> {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::net::TcpStream::connect(proxy).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"ping\n").ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    (!line.is_empty()).then_some(line)
}

#[test]
fn p00_the_net_cuts_one_direction_of_one_pair() {
    // This test process plays agent 0; an echo server plays agent 1, agent 2 is someone else.
    let echo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let echo_addr = echo.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Write};
        for s in echo.incoming().flatten() {
            let mut line = String::new();
            let mut r = BufReader::new(s.try_clone().unwrap());
            if r.read_line(&mut line).is_ok() {
                let _ = (&s).write_all(line.as_bytes());
            }
        }
    });
    let net = Net::new(3);
    net.set_pid(0, Some(std::process::id()));
    net.proxies[1].set_target(&echo_addr);
    assert_eq!(
        echo_through(&net.proxies[1].addr).as_deref(),
        Some("ping\n")
    );
    net.cut_one_way(2, 1);
    assert!(
        echo_through(&net.proxies[1].addr).is_some(),
        "cut someone else's link"
    );
    net.cut_one_way(0, 1);
    assert_eq!(echo_through(&net.proxies[1].addr), None);
    net.heal();
    assert!(echo_through(&net.proxies[1].addr).is_some());
    net.split(&[&[0], &[1, 2]]);
    assert_eq!(echo_through(&net.proxies[1].addr), None);
}

#[test]
fn p01_a_cut_off_member_catches_up_and_no_acknowledged_write_is_lost() {
    // Only the links *into* the victim are cut (its own calls still go out).
    let (c, net) = behind_proxies(3, 3);
    let li = leader_index(&c, c.get("n1"));
    let vi = (li + 1) % 3;
    let victim = c.agents[vi].name.clone();

    let w = start_writer(&c.agents[li..=li]);
    w.wait_more(20, "writes before the cut");
    net.proxies[vi].cut();
    let l = &c.agents[li];
    wait_until(WAIT, "the cut-off member shown down", || {
        stopped(&l.status()) == [victim.clone()]
    });
    w.wait_more(50, "writes go on without it");
    // On its side: no leader with a quorum answers, and its view says so.
    all_stale(&c, &[vi]);
    let v = &c.agents[vi];
    assert_eq!(
        v.cli(&["kv", "put", "from-the-minority", "x"]).err_code(),
        "unavailable"
    );

    // The minority's refused write never appears anywhere.
    heal_and_check(&c, &net, w, &["n1", "n2", "n3"], Some("from-the-minority"));
}

#[test]
fn p02_one_way_cuts_around_the_leader_lose_nothing() {
    // Links into both followers are cut: each still reaches the leader, which reaches neither.
    // The leader loses its quorum and says so. Whether a follower can win an election depends on
    // whether the old leader's log got ahead of theirs meanwhile (then no one can, in any Raft);
    // either way, once the links return the cluster converges and no acknowledged write is lost.
    let (c, net) = behind_proxies(3, 3);
    let li = leader_index(&c, c.get("n1"));
    let w = start_writer(&c.agents);
    w.wait_more(20, "writes before the cut");
    for i in (0..3).filter(|&i| i != li) {
        net.cut_one_way(li, i);
    }
    all_stale(&c, &[li]);
    heal_and_check(&c, &net, w, &["n1", "n2", "n3"], None);
}

#[test]
fn p03_a_member_cut_off_from_both_others_comes_back_by_itself() {
    // t_autoheal: N3 loses both links, both ways. ekka rebooted N3 to heal; here the two others
    // go on, N3 refuses writes and membership changes, and rejoins once the links return.
    let (c, net) = behind_proxies(3, 3);
    let w = start_writer(&c.agents[..2]);
    w.wait_more(20, "writes before the cut");

    net.split(&[&[0, 1], &[2]]);
    let n1 = c.get("n1");
    wait_until(WAIT, "n3 shown down on the majority side", || {
        n1.try_status()
            .is_some_and(|s| s["stale"] == false && stopped(&s) == ["n3"])
    });
    w.wait_more(50, "writes go on without n3");
    all_stale(&c, &[2]);
    let n3 = c.get("n3");
    assert_eq!(n3.cli(&["kv", "put", "k", "v"]).err_code(), "unavailable");
    let refused = n3.cli(&["cluster", "force-leave", "n1"]);
    assert_eq!(refused.err_code(), "unavailable", "{refused:?}");
    // Its stale view still answers, with every member.
    let s = n3.status();
    assert_eq!(s["members"].as_array().unwrap().len(), 3, "{s}");

    heal_and_check(&c, &net, w, &["n1", "n2", "n3"], None);
}

#[test]
fn p04_an_asymmetric_cut_of_four_members_converges() {
    // t_autoheal_asymm: N2-N1, N3-N1 and N4-N2 cut; N1-N4, N2-N3 and N3-N4 stay. Whichever
    // three are voters, two of them still reach each other: writes go on through the cut.
    let (c, net) = behind_proxies(4, 4);
    let w = start_writer(&c.agents);
    w.wait_more(20, "writes before the cut");

    net.cut(1, 0);
    net.cut(2, 0);
    net.cut(3, 1);
    wait_until(WAIT, "the leader's view shows whom it cannot reach", || {
        c.agents.iter().any(|a| {
            a.try_status()
                .is_some_and(|s| s["stale"] == false && !stopped(&s).is_empty())
        })
    });
    w.wait_more(50, "writes go on through the cut");

    heal_and_check(&c, &net, w, &["n1", "n2", "n3", "n4"], None);
}

#[test]
fn p05_a_full_split_of_four_members_stops_writes_and_heals() {
    // t_autoheal_fullsplit: every link cut. No side has a quorum: every member marks its view
    // stale and refuses writes; ekka rebooted three of them, here the links coming back is enough.
    let (c, net) = behind_proxies(4, 4);
    let w = start_writer(&c.agents);
    w.wait_more(20, "writes before the cut");

    net.split(&[&[0], &[1], &[2], &[3]]);
    all_stale(&c, &[0, 1, 2, 3]);
    for a in &c.agents {
        let out = a.cli(&["kv", "put", "in-the-split", &a.name]);
        assert_eq!(out.err_code(), "unavailable", "{}", a.name);
    }

    let all = ["n1", "n2", "n3", "n4"];
    heal_and_check(&c, &net, w, &all, Some("in-the-split"));
}

#[test]
fn p06_a_three_way_split_of_five_members_heals() {
    // {n1, n2} | {n3, n4} | {n5}: no side holds three of the five voters.
    let (c, net) = behind_proxies(5, 5);
    let w = start_writer(&c.agents);
    w.wait_more(20, "writes before the split");

    net.split(&[&[0, 1], &[2, 3], &[4]]);
    all_stale(&c, &[0, 1, 2, 3, 4]);
    let out = c.agents[2].cli(&["kv", "put", "in-the-split", "x"]);
    assert_eq!(out.err_code(), "unavailable");

    let all = ["n1", "n2", "n3", "n4", "n5"];
    heal_and_check(&c, &net, w, &all, Some("in-the-split"));
}

#[test]
fn p07_a_majority_reachable_with_one_dead_member_keeps_changing_membership() {
    // t_autoheal_majority_reachable: of five, n5 is killed and n1-n2 is cut. n1, n3, n4 (or
    // n2, n3, n4) still make a quorum, so writes and membership changes go on: n5 is removed and
    // a new n6 joins during the cut. Both outcomes are recorded and checked after the heal.
    let (mut c, net) = behind_proxies(5, 6);
    let w = start_writer(&c.agents[..4]);
    w.wait_more(20, "writes before the cut");

    c.agents[4].kill();
    net.set_pid(4, None);
    net.cut(0, 1);
    w.wait_more(50, "writes go on with n5 dead and n1-n2 cut");

    let removed = c.agents[2].cli(&["cluster", "force-leave", "n5"]);
    assert_eq!(removed.ok(), "removed n5");
    start_behind(&mut c, &net, 5);
    let joined = c.agents[5].cli(&["cluster", "join", &net.proxies[3].addr]);
    assert!(joined.ok().starts_with("joined "), "{joined:?}");
    w.wait_more(20, "writes after the membership changes");

    let live = ["n1", "n2", "n3", "n4", "n6"];
    heal_and_check(&c, &net, w, &live, None);
    for a in c.agents.iter().filter(|a| live.contains(&a.name.as_str())) {
        let s = a.status();
        assert!(member(&s, "n5").is_none(), "{} still lists n5: {s}", a.name);
    }
}
