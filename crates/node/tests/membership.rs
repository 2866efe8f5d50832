//! Membership with ekka's semantics, on nodes in this process (real sockets on 127.0.0.1, no
//! agent processes): join, leave, force-leave, promotion into free voter seats, replacement of a
//! voter that stays down, and the answers to a join of oneself or of one's own cluster. Each test takes about a second; the
//! process-level versions in `tests/` check the same through the binary.

use std::time::{Duration, Instant};

use ekka_node::{ForceLeaveOutcome, JoinOutcome, Node, NodeConfig};
use ekka_types::{ClusterStatus, ErrorCode, Role};

struct Nodes {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

fn config(dir: &tempfile::TempDir, name: &str, max_voters: u32) -> NodeConfig {
    let mut c = NodeConfig::new(name, dir.path().join(name));
    c.listen = "127.0.0.1:0".into();
    c.cookie = "membership-test".into();
    c.max_voters = max_voters;
    c.replace_down_voter_after = Duration::from_millis(500);
    c
}

impl Nodes {
    /// `n` nodes named n1…, each a one-node cluster; `max_voters` seats for voters.
    async fn start(n: usize, max_voters: u32) -> Nodes {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for i in 1..=n {
            let c = config(&dir, &format!("n{i}"), max_voters);
            nodes.push(Node::start(c).await.expect("start"));
        }
        Nodes { dir, nodes }
    }

    fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name() == name).expect("node")
    }

    fn addr(&self, name: &str) -> String {
        self.node(name).local_addr().to_string()
    }

    /// Every node but the first joins the first.
    async fn form(&self) {
        let first = self.addr("n1");
        for n in &self.nodes[1..] {
            let r = n.join(&first).await.expect("join");
            assert!(matches!(r, JoinOutcome::Joined { .. }), "{r:?}");
        }
    }

    async fn shutdown(self) {
        for n in &self.nodes {
            n.shutdown().await;
        }
        drop(self.dir);
    }
}

/// Polls `name`'s status until `ok` holds, up to 10 s; the last status otherwise.
async fn wait_status(node: &Node, ok: impl Fn(&ClusterStatus) -> bool) -> ClusterStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = node.status().await;
        match st {
            Ok(st) if ok(&st) => return st,
            Ok(st) if Instant::now() > deadline => panic!("condition never held: {st:#?}"),
            Err(e) if Instant::now() > deadline => panic!("no status: {e}"),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

fn names(st: &ClusterStatus) -> Vec<String> {
    st.members.iter().map(|m| m.name.clone()).collect()
}

fn voters(st: &ClusterStatus) -> usize {
    st.members.iter().filter(|m| m.role == Role::Voter).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_join_then_one_leaves_and_runs_alone() {
    let c = Nodes::start(3, 5).await;
    c.form().await;
    for n in ["n1", "n2", "n3"] {
        let st = wait_status(c.node(n), |s| s.running_nodes().len() == 3).await;
        assert_eq!(names(&st), ["n1", "n2", "n3"]);
        assert_eq!(voters(&st), 3);
    }
    let before = c.node("n1").status().await.unwrap().cluster_id;
    c.node("n3").leave().await.expect("leave");
    let st = wait_status(c.node("n1"), |s| s.members.len() == 2).await;
    assert_eq!(names(&st), ["n1", "n2"]);
    // The one that left is a one-node cluster of its own, under a new cluster id.
    let alone = wait_status(c.node("n3"), |s| s.members.len() == 1).await;
    assert_eq!(names(&alone), ["n3"]);
    assert_ne!(alone.cluster_id, before);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_leave_removes_a_stopped_member() {
    let c = Nodes::start(3, 5).await;
    c.form().await;
    wait_status(c.node("n1"), |s| s.running_nodes().len() == 3).await;
    c.node("n3").shutdown().await;
    wait_status(c.node("n1"), |s| s.stopped_nodes() == ["n3"]).await;
    let r = c.node("n1").force_leave("n3").await.expect("force_leave");
    assert_eq!(r, ForceLeaveOutcome::Removed);
    let st = wait_status(c.node("n2"), |s| s.members.len() == 2).await;
    assert_eq!(names(&st), ["n1", "n2"]);
    // Once more: nothing left to remove.
    let again = c.node("n1").force_leave("n3").await;
    assert!(
        matches!(again, Ok(ForceLeaveOutcome::Ignored(_)))
            || matches!(&again, Err(e) if e.code == ErrorCode::NodeNotInCluster),
        "{again:?}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_past_the_voter_seats_are_learners_and_a_voter_down_is_replaced() {
    let c = Nodes::start(4, 3).await;
    c.form().await;
    let st = wait_status(c.node("n1"), |s| s.running_nodes().len() == 4).await;
    assert_eq!(voters(&st), 3, "{st:#?}");
    // A voter other than the leader stops; the learner takes its seat.
    let leader = st.leader.clone().expect("a leader");
    let gone = st
        .members
        .iter()
        .find(|m| m.role == Role::Voter && m.name != leader)
        .map(|m| m.name.clone())
        .expect("a follower voter");
    c.node(&gone).shutdown().await;
    let st = wait_status(c.node(&leader), |s| {
        s.members
            .iter()
            .all(|m| (m.name == gone) == (m.role == Role::Learner))
    })
    .await;
    assert_eq!(voters(&st), 3);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_oneself_is_ignored_and_ones_own_cluster_refused() {
    let c = Nodes::start(2, 5).await;
    let own = c.node("n1").join(&c.addr("n1")).await.expect("join self");
    assert!(matches!(own, JoinOutcome::Ignored(_)), "{own:?}");
    c.form().await;
    let again = c.node("n2").join(&c.addr("n1")).await;
    assert!(
        matches!(&again, Err(e) if e.code == ErrorCode::AlreadyInCluster),
        "{again:?}"
    );
    let st = wait_status(c.node("n2"), |s| s.running_nodes().len() == 2).await;
    assert_eq!(names(&st), ["n1", "n2"]);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_left_joins_again_at_once() {
    let c = Nodes::start(3, 5).await;
    c.form().await;
    let st = wait_status(c.node("n2"), |s| s.running_nodes().len() == 3).await;
    let leader = st.leader.clone().expect("a leader");
    let other = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| *n != leader)
        .expect("another member");
    c.node(&leader).leave().await.expect("leave");
    // Its record may still be there (`leaving`) for a monitor round: the join must not find the
    // name in use.
    let back = c.node(&leader).join(&c.addr(other)).await;
    assert!(matches!(back, Ok(JoinOutcome::Joined { .. })), "{back:?}");
    let st = wait_status(c.node(other), |s| s.running_nodes().len() == 3).await;
    assert_eq!(names(&st), ["n1", "n2", "n3"]);
    c.shutdown().await;
}
