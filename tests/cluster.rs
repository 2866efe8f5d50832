//! ekka_SUITE and ekka_cluster_SUITE, ported: join, leave, force-leave and status of real
//! `ekka` agent processes, driven through the CLI exactly as CONTRACT.md writes it.

mod common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn t01_join_self_is_ignored() {
    let mut c = Cluster::new();
    c.start("n1", &[]);
    let a = c.get("n1");
    let out = a.cli(&["cluster", "join", &a.addr]);
    assert!(out.ok().starts_with("ignored: "), "{out:?}");
    assert_eq!(running(&a.status()), ["n1"]);
}

#[test]
fn t02_join_where_nothing_answers_is_node_down() {
    let mut c = Cluster::new();
    c.start("n1", &[]);
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap().to_string();
    drop(free);
    let out = c.get("n1").cli(&["cluster", "join", &addr]);
    assert_eq!(out.err_code(), "node_down");
    assert_eq!(running(&c.get("n1").status()), ["n1"]);
}

#[test]
fn t03_cluster_manually_join_then_leave() {
    let mut c = Cluster::new();
    c.form(2);
    let (n1, n2) = (c.get("n1"), c.get("n2"));
    assert_eq!(running(&n1.status()), ["n1", "n2"]);
    let cluster_id = n1.status()["cluster_id"].clone();
    assert_eq!(n2.status()["cluster_id"], cluster_id);
    assert_eq!(n2.cli(&["cluster", "leave"]).ok(), "left");
    wait_until(WAIT, "n1 alone", || running(&n1.status()) == ["n1"]);
    let s2 = n2.status();
    assert_eq!(running(&s2), ["n2"]);
    assert_ne!(
        s2["cluster_id"], cluster_id,
        "n2 starts a cluster of its own"
    );
}

#[test]
fn t04_join_leave_cluster_with_stop_and_automatic_rejoin() {
    let mut c = Cluster::new();
    c.form(3);
    c.get_mut("n2").stop();
    let n1 = c.get("n1");
    wait_until(WAIT, "n2 stopped", || stopped(&n1.status()) == ["n2"]);
    assert_eq!(running(&n1.status()), ["n1", "n3"]);
    c.get_mut("n2").restart(&[]);
    let n1 = c.get("n1");
    wait_until(WAIT, "n2 running again", || {
        running(&n1.status()) == ["n1", "n2", "n3"]
    });
    assert_eq!(n1.cli(&["cluster", "force-leave", "n2"]).ok(), "removed n2");
    assert_eq!(n1.cli(&["cluster", "force-leave", "n3"]).ok(), "removed n3");
    wait_until(WAIT, "n1 alone", || {
        let s = n1.status();
        running(&s) == ["n1"] && stopped(&s).is_empty()
    });
}

#[test]
fn t05_force_leave_self_is_ignored_and_other_is_removed() {
    let mut c = Cluster::new();
    c.form(2);
    let n1 = c.get("n1");
    let out = n1.cli(&["cluster", "force-leave", "n1"]);
    assert!(out.ok().starts_with("ignored: "), "{out:?}");
    assert_eq!(n1.cli(&["cluster", "force-leave", "n2"]).ok(), "removed n2");
    assert_eq!(running(&n1.status()), ["n1"]);
    // The removed node, still running, learns it and resets to a one-node cluster.
    let n2 = c.get("n2");
    wait_until(WAIT, "n2 reset", || {
        let s = n2.status();
        running(&s) == ["n2"] && s["cluster_id"] != n1.status()["cluster_id"]
    });
}

#[test]
fn t06_force_left_node_stopping_does_not_affect_the_cluster() {
    let mut c = Cluster::new();
    c.form(3);
    assert_eq!(
        c.get("n1").cli(&["cluster", "force-leave", "n3"]).ok(),
        "removed n3"
    );
    c.get_mut("n3").kill();
    let n1 = c.get("n1");
    let s = n1.status();
    assert_eq!(running(&s), ["n1", "n2"]);
    assert!(stopped(&s).is_empty());
    assert!(s["leader"].is_string());
}

#[test]
fn t07_status_running_after_join_absent_after_force_leave() {
    let mut c = Cluster::new();
    c.form(2);
    let n1 = c.get("n1");
    assert_eq!(member(&n1.status(), "n2").unwrap()["status"], "up");
    n1.cli(&["cluster", "force-leave", "n2"]).ok();
    assert!(member(&n1.status(), "n2").is_none());
}

#[test]
fn t08_two_nodes_join_then_both_leave() {
    let mut c = Cluster::new();
    c.form(3);
    assert_eq!(c.get("n2").cli(&["cluster", "leave"]).ok(), "left");
    assert_eq!(c.get("n3").cli(&["cluster", "leave"]).ok(), "left");
    let n1 = c.get("n1");
    wait_until(WAIT, "n1 alone", || running(&n1.status()) == ["n1"]);
}

#[test]
fn t09_chain_join_via_a_follower_then_force_remove_both() {
    let mut c = Cluster::new();
    c.start("n1", &[]);
    c.start("n2", &[]);
    c.start("n3", &[]);
    let n1 = c.get("n1").addr.clone();
    c.get("n2").cli(&["cluster", "join", &n1]).ok();
    // n3 joins through n2, a follower: the request reaches the leader.
    let n2 = c.get("n2").addr.clone();
    let out = c.get("n3").cli(&["cluster", "join", &n2]);
    assert!(out.ok().starts_with("joined "), "{out:?}");
    let a = c.get("n1");
    wait_until(WAIT, "three up", || {
        running(&a.status()) == ["n1", "n2", "n3"]
    });
    assert_eq!(role_count(&a.status(), "voter"), 3);
    a.cli(&["cluster", "force-leave", "n2"]).ok();
    a.cli(&["cluster", "force-leave", "n3"]).ok();
    assert_eq!(running(&a.status()), ["n1"]);
}

#[test]
fn t10_join_errors_already_in_other_cluster_and_leave_when_alone() {
    let mut c = Cluster::new();
    c.form(2);
    c.start("n3", &[]);
    c.start("n4", &[]);
    let (n1, n2) = (c.get("n1").addr.clone(), c.get("n2").addr.clone());
    let (n3, n4) = (c.get("n3").addr.clone(), c.get("n4").addr.clone());
    assert_eq!(
        c.get("n2").cli(&["cluster", "join", &n1]).err_code(),
        "already_in_cluster"
    );
    c.get("n4").cli(&["cluster", "join", &n3]).ok();
    // n2 is in a two-node cluster: it must leave before joining another.
    assert_eq!(
        c.get("n2").cli(&["cluster", "join", &n3]).err_code(),
        "in_other_cluster"
    );
    let _ = (n2, n4);
    assert_eq!(c.get("n1").status()["members"].as_array().unwrap().len(), 2);
    let mut solo = Cluster::new();
    solo.start("s1", &[]);
    assert_eq!(
        solo.get("s1").cli(&["cluster", "leave"]).err_code(),
        "node_not_in_cluster"
    );
    assert_eq!(
        c.get("n1")
            .cli(&["cluster", "force-leave", "nobody"])
            .err_code(),
        "node_not_in_cluster"
    );
}

#[test]
fn t11_name_in_use_while_the_member_is_up() {
    let mut c = Cluster::new();
    c.form(2);
    let dup = c.path("dup");
    let twin = Agent::start("n2", &dup, &[]);
    let out = twin.cli(&["cluster", "join", &c.get("n1").addr]);
    assert_eq!(out.err_code(), "name_in_use");
    assert_eq!(
        running(&twin.status()),
        ["n2"],
        "the refused node is unchanged"
    );
}

#[test]
fn t12_down_member_is_replaced_by_a_new_node_of_the_same_name() {
    let mut c = Cluster::new();
    c.form(3);
    let old_id = member(&c.get("n1").status(), "n3").unwrap()["id"].clone();
    c.get_mut("n3").kill();
    let n1 = c.get("n1");
    wait_until(WAIT, "n3 down", || stopped(&n1.status()) == ["n3"]);
    // A wiped n3 (new data dir) joins under the same name and replaces the down entry.
    let fresh = Agent::start("n3", &c.path("n3-new"), &[]);
    let out = fresh.cli(&["cluster", "join", &c.get("n1").addr]);
    assert!(out.ok().starts_with("joined "), "{out:?}");
    let s = c.get("n1").status();
    assert_eq!(running(&s), ["n1", "n2", "n3"]);
    assert_ne!(member(&s, "n3").unwrap()["id"], old_id);
}

#[test]
fn t13_status_json_has_the_contract_shape() {
    let mut c = Cluster::new();
    c.form(2);
    let s = c.get("n2").status();
    for key in [
        "cluster_id",
        "node",
        "leader",
        "term",
        "revision",
        "members",
        "running_nodes",
        "stopped_nodes",
    ] {
        assert!(s.get(key).is_some(), "missing {key} in {s}");
    }
    let hex16 = |v: &serde_json::Value| {
        v.as_str().is_some_and(|s| {
            s.len() == 16
                && s.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        })
    };
    assert!(hex16(&s["cluster_id"]), "{s}");
    assert!(hex16(&s["node"]["id"]), "{s}");
    assert_eq!(s["node"]["name"], "n2");
    assert_eq!(s["leader"], "n1");
    let names: Vec<&str> = s["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["n1", "n2"], "members sorted by name");
    for m in s["members"].as_array().unwrap() {
        assert!(hex16(&m["id"]));
        assert!(["voter", "learner"].contains(&m["role"].as_str().unwrap()));
        assert!(["up", "down", "joining", "leaving"].contains(&m["status"].as_str().unwrap()));
    }
    let table = c.get("n2").cli(&["cluster", "status"]);
    assert!(table.ok().contains("NAME"), "{table:?}");
}
