//! `ekka members watch`: events as they commit, resumable by revision with nothing missed or
//! repeated, across a member restart and a leader change.

mod common;

use std::time::{Duration, Instant};

use common::stream::JsonLines;
use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// A running `ekka members watch --json` and the events it printed.
struct Watch {
    lines: JsonLines,
    seen: Vec<Value>,
}

impl Watch {
    fn start(a: &Agent, from: Option<u64>) -> Watch {
        let from = from.map(|f| f.to_string());
        let mut args = vec!["members", "watch", "--json"];
        if let Some(f) = &from {
            args.extend(["--from", f]);
        }
        Watch {
            lines: JsonLines::start(a, &args),
            seen: Vec::new(),
        }
    }

    /// Waits for an event `event` about `name`; returns it.
    fn expect(&mut self, event: &str, name: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(v) = self
                .seen
                .iter()
                .find(|v| v["event"] == event && v["name"] == name)
            {
                return v.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.next(left) {
                Some(v) => self.seen.push(v),
                None => panic!("no {event} for {name}; saw {:#?}", self.seen),
            }
        }
    }

    fn revisions(&self) -> Vec<u64> {
        self.seen
            .iter()
            .map(|v| v["revision"].as_u64().unwrap())
            .collect()
    }
}

#[test]
fn t50_watch_resumes_without_gaps_or_repeats() {
    let mut c = Cluster::new();
    c.form(2);
    let mut w = Watch::start(c.get("n1"), Some(1));
    w.expect("member_joined", "n1");
    w.expect("leader_changed", "n1");
    w.expect("member_joined", "n2");
    w.expect("member_up", "n2");
    c.get_mut("n2").kill();
    let down = w.expect("member_down", "n2");
    let revs = w.revisions();
    assert!(revs.windows(2).all(|p| p[0] <= p[1]), "ordered: {revs:?}");
    let last = *revs.last().unwrap();
    drop(w);
    // While nobody watches, n2 comes back.
    c.get_mut("n2").restart(&[]);
    let n1 = c.get("n1");
    wait_until(WAIT, "n2 up again", || {
        member(&n1.status(), "n2").is_some_and(|m| m["status"] == "up")
    });
    let mut again = Watch::start(n1, Some(last + 1));
    let up = again.expect("member_up", "n2");
    assert!(up["revision"].as_u64() > down["revision"].as_u64());
    let revs = again.revisions();
    assert!(
        revs.iter().all(|r| *r > last),
        "no event seen twice: {revs:?} after {last}"
    );
}

#[test]
fn t51_a_watcher_on_a_follower_sees_the_leader_change() {
    let mut c = Cluster::new();
    c.form(3);
    let mut w = Watch::start(c.get("n2"), None);
    c.get_mut("n1").kill();
    let changed = w.expect("member_down", "n1");
    assert!(changed["revision"].as_u64().unwrap() > 0);
    let leader = w
        .seen
        .iter()
        .find(|v| v["event"] == "leader_changed")
        .cloned()
        .unwrap_or_else(|| panic!("no leader_changed in {:#?}", w.seen));
    assert_ne!(leader["name"], "n1");
}

#[test]
fn t52_watch_of_a_revision_not_yet_reached_waits_for_it() {
    let mut c = Cluster::new();
    c.form(2);
    let rev = c.get("n1").status()["revision"].as_u64().unwrap();
    let mut w = Watch::start(c.get("n1"), Some(rev + 1));
    c.get("n1").cli(&["cluster", "force-leave", "n2"]).ok();
    let removed = w.expect("member_removed", "n2");
    assert!(removed["revision"].as_u64().unwrap() > rev);
    assert!(w.revisions().iter().all(|r| *r > rev));
}

#[test]
fn t55_a_watcher_reconnects_across_a_leader_change_and_misses_nothing() {
    let mut c = Cluster::new();
    c.form(3);
    // The reference stays connected to a follower throughout; the client under test watches the
    // leader, loses it, and resumes on another member from the revision after its last event.
    let leader = c.get("n1").status()["leader"].as_str().unwrap().to_string();
    let follower = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| *n != leader)
        .unwrap();
    let other = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| *n != leader && *n != follower)
        .unwrap();
    let mut reference = Watch::start(c.get(follower), Some(1));
    let mut w = Watch::start(c.get(&leader), Some(1));
    w.expect("member_up", "n3");
    c.get_mut(&leader).kill();
    // Whatever the old leader's stream still delivered, up to its end.
    while let Some(v) = w.lines.next(Duration::from_secs(5)) {
        w.seen.push(v);
    }
    let last = *w.revisions().last().unwrap();
    let mut again = Watch::start(c.get(other), Some(last + 1));
    let down = again.expect("member_down", &leader);
    let down_rev = down["revision"].as_u64().unwrap();
    let new_leader = again
        .seen
        .iter()
        .find(|v| v["event"] == "leader_changed" && v["name"] != leader.as_str())
        .cloned();
    assert!(new_leader.is_some(), "no new leader in {:#?}", again.seen);
    reference.expect("member_down", &leader);

    // Everything before the member_down, as the reconnecting client saw it in its two streams,
    // is exactly what the reference saw: nothing missed, nothing twice.
    let before = |vs: &[Value]| -> Vec<Value> {
        vs.iter()
            .filter(|v| v["revision"].as_u64().unwrap() < down_rev)
            .cloned()
            .collect()
    };
    let mut resumed = before(&w.seen);
    resumed.extend(before(&again.seen));
    assert_eq!(resumed, before(&reference.seen));
    assert!(again.revisions().iter().all(|r| *r > last));
}
