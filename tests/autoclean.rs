//! Autoclean (ekka_autoclean_SUITE in its Raft form): the leader removes members down longer than
//! the cluster's delay, learners first, one at a time, and keeps doing so after a leader change.

mod common;

use std::time::Duration;

use common::stream::JsonLines;
use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(40);

/// Every `member_removed` event so far, as (revision, name).
fn removals(a: &Agent) -> Vec<(u64, String)> {
    let rev_now = a.status()["revision"].as_u64().unwrap();
    let w = JsonLines::start(a, &["members", "watch", "--from", "1", "--json"]);
    let mut got = Vec::new();
    while let Some(v) = w.next(WAIT) {
        let rev = v["revision"].as_u64().unwrap();
        if v["event"] == "member_removed" {
            got.push((rev, v["name"].as_str().unwrap().to_string()));
        }
        if rev >= rev_now {
            break;
        }
    }
    got
}

fn names_with(s: &Value, f: impl Fn(&Value) -> bool) -> Vec<String> {
    s["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| f(m))
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a01_down_members_are_removed_learners_first() {
    let mut c = Cluster::new();
    c.form(4);
    let s = c.get("n1").status();
    let leader = s["leader"].as_str().unwrap().to_string();
    let learner = names_with(&s, |m| m["role"] == "learner");
    assert_eq!(learner.len(), 1, "{s}");
    let learner = learner[0].clone();
    let voter = names_with(&s, |m| m["role"] == "voter" && m["name"] != leader.as_str())[0].clone();
    let l = c.get(&leader);
    assert_eq!(l.cli(&["cluster", "autoclean", "0s"]).ok(), "autoclean off");
    // A bad delay is a usage error and changes nothing.
    assert_eq!(l.cli(&["cluster", "autoclean", "soon"]).code, 2);

    c.get_mut(&voter).kill();
    c.get_mut(&learner).kill();
    let l = c.get(&leader);
    wait_until(WAIT, "both shown down", || stopped(&l.status()).len() == 2);
    // Off: nothing is removed however long they stay down. Both stay down well past the delay
    // set next, so both are due at once when it is: the learner must go first.
    let down_since = std::time::Instant::now();
    wait_until(WAIT, "both down past the delay, autoclean off", || {
        assert_eq!(l.status()["members"].as_array().unwrap().len(), 4);
        down_since.elapsed() > Duration::from_millis(1500)
    });
    assert_eq!(l.cli(&["cluster", "autoclean", "1s"]).ok(), "autoclean 1s");
    wait_until(WAIT, "both removed", || {
        l.status()["members"].as_array().unwrap().len() == 2
    });
    let r = removals(l);
    let order: Vec<&str> = r.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(
        order,
        [learner.as_str(), voter.as_str()],
        "learner first: {r:?}"
    );
    // The two that are left are the up voters: quorum kept all along.
    let s = l.status();
    assert_eq!(running(&s).len(), 2);
    assert_eq!(role_count(&s, "voter"), 2);
}

#[test]
fn a02_autoclean_goes_on_after_a_leader_change() {
    let mut c = Cluster::new();
    c.form(5);
    let s = c.get("n1").status();
    let leader = s["leader"].as_str().unwrap().to_string();
    let others: Vec<String> = (1..=5)
        .map(|i| format!("n{i}"))
        .filter(|n| *n != leader)
        .collect();
    let l = c.get(&leader);
    assert_eq!(l.cli(&["cluster", "autoclean", "2s"]).ok(), "autoclean 2s");
    c.get_mut(&others[0]).kill();
    let l = c.get(&leader);
    wait_until(WAIT, "the first one down", || {
        stopped(&l.status()).len() == 1
    });
    // The leader goes too; the setting is committed, so the next leader applies it.
    c.get_mut(&leader).kill();
    let a = c.get(&others[1]);
    wait_until(WAIT, "both removed by the new leader", || {
        a.try_status()
            .is_some_and(|s| s["members"].as_array().unwrap().len() == 3)
    });
    let s = a.status();
    assert_ne!(s["leader"], leader.as_str());
    assert!(member(&s, &others[0]).is_none());
    assert!(member(&s, &leader).is_none());
    assert_eq!(running(&s).len(), 3);
}
