//! The embedding API in one process: two `Node`s join, callbacks fire around join and leave
//! (ekka_cluster_SUITE's t_prepare / t_reboot), and status is the same from both sides.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ekka_node::{Action, JoinOutcome, Node, NodeConfig};

async fn node(dir: &tempfile::TempDir, name: &str) -> Node {
    let mut c = NodeConfig::new(name, dir.path().join(name));
    c.listen = "127.0.0.1:0".into();
    c.cookie = "embed-test".into();
    Node::start(c).await.expect("start")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_run_around_join_and_leave() {
    let dir = tempfile::tempdir().unwrap();
    let a = node(&dir, "a").await;
    let b = node(&dir, "b").await;
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s1 = seen.clone();
    b.on_prepare(move |act: Action| s1.lock().unwrap().push(format!("prepare {act:?}")));
    let s2 = seen.clone();
    b.on_reboot(move || s2.lock().unwrap().push("reboot".into()));

    let out = b.join(&a.local_addr().to_string()).await.expect("join");
    let cluster_id = match out {
        JoinOutcome::Joined { cluster_id } => cluster_id,
        other => panic!("{other:?}"),
    };
    assert_eq!(a.status().await.unwrap().cluster_id, cluster_id);
    assert_eq!(
        *seen.lock().unwrap(),
        ["prepare Join", "reboot"],
        "prepare before, reboot after"
    );
    let from_b = b.status().await.unwrap();
    assert_eq!(from_b.running_nodes(), ["a", "b"]);
    assert_eq!(from_b.node_name, "b");
    assert_eq!(from_b.leader.as_deref(), Some("a"));

    b.leave().await.expect("leave");
    assert_eq!(
        *seen.lock().unwrap(),
        ["prepare Join", "reboot", "prepare Leave", "reboot"]
    );
    let mut done = false;
    for _ in 0..400 {
        if a.status().await.unwrap().running_nodes() == ["a"] {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(done, "a is alone after b left");
    let alone = b.status().await.unwrap();
    assert_eq!(alone.running_nodes(), ["b"]);
    assert_ne!(alone.cluster_id, cluster_id);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_and_errors_through_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let a = node(&dir, "a").await;
    let me = a.local_addr().to_string();
    assert!(matches!(a.join(&me).await, Ok(JoinOutcome::Ignored(_))));
    assert!(matches!(
        a.force_leave("a").await,
        Ok(ekka_node::ForceLeaveOutcome::Ignored(_))
    ));
    assert_eq!(
        a.leave().await.unwrap_err().code,
        ekka_types::ErrorCode::NodeNotInCluster
    );
    assert_eq!(
        a.force_leave("ghost").await.unwrap_err().code,
        ekka_types::ErrorCode::NodeNotInCluster
    );
    assert_eq!(a.status().await.unwrap().running_nodes(), ["a"]);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_once_every_task_of_the_node_has_ended() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(&dir, "n1").await;
    n.kv_put("k", "v").await.unwrap();
    // Work that keeps tasks alive: a held lock renewed in the background, a watch stream.
    let guard = n
        .lock("res", Duration::from_secs(5), Duration::ZERO)
        .await
        .unwrap();
    let mut events = n.watch(Some(1)).await.unwrap();
    assert!(events.recv().await.is_some());
    assert!(n.running_tasks() > 0);
    n.shutdown().await;
    assert_eq!(n.running_tasks(), 0, "tasks still running after shutdown");
    drop(guard);
    drop(events);
    drop(n);
    // Nothing holds the data dir any more: the same dir starts again in this process.
    let again = node(&dir, "n1").await;
    assert_eq!(
        again
            .kv_get("k", ekka_node::Read::Linearizable)
            .await
            .unwrap()
            .map(|e| e.value.to_vec()),
        Some(b"v".to_vec())
    );
    again.shutdown().await;
}
