//! Locks and keys through the embedding API: a `LockGuard` renews its lease in the background and
//! releases on drop; ekka's process-local `local` scope; key-value reads, cas and watch on `Node`.

use std::time::{Duration, Instant};

use ekka_node::{Node, NodeConfig, Read};
use ekka_types::ErrorCode;

async fn node(dir: &tempfile::TempDir, name: &str) -> Node {
    let mut c = NodeConfig::new(name, dir.path().join(name));
    c.listen = "127.0.0.1:0".into();
    c.cookie = "data-test".into();
    Node::start(c).await.expect("start")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_keeps_its_lock_until_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(&dir, "a").await;
    let ttl = Duration::from_millis(300);
    let guard = n.lock("job", ttl, Duration::ZERO).await.expect("lock");
    // Renewed in the background: still held well after three ttls.
    let until = Instant::now() + ttl * 4;
    while Instant::now() < until {
        let other = n
            .lock_acquire("job", "other", ttl, Duration::ZERO)
            .await
            .unwrap_err();
        assert_eq!(other.code, ErrorCode::LockHeld, "{other}");
        assert!(!guard.is_lost());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token = guard.token();
    drop(guard);
    // Released on drop: the next owner gets it well before a lease could have run out.
    let g = n
        .lock_acquire(
            "job",
            "other",
            Duration::from_secs(10),
            Duration::from_secs(5),
        )
        .await
        .expect("released on drop");
    assert!(g.token > token);
    n.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_locks_follow_ekka() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(&dir, "a").await;
    let l = n.local_locks();
    assert!(l.acquire("r", "p1"));
    assert!(l.acquire("r", "p1"), "acquiring twice gives true twice");
    assert!(!l.acquire("r", "p2"));
    assert!(!l.release("r", "p2"), "only the owner releases");
    assert!(l.release("r", "p1"));
    assert!(l.release("r", "p1"), "releasing twice gives true twice");
    assert!(n.local_locks().acquire("r", "p2"), "one scope per node");
    n.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_through_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(&dir, "a").await;
    let mut w = n.kv_watch("app/", None).await.unwrap();
    let r1 = n.kv_put("app/x", b"1".to_vec()).await.unwrap();
    let e = n
        .kv_get("app/x", Read::Linearizable)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((&e.value[..], e.mod_revision), (&b"1"[..], r1));
    let stale = n.kv_cas("app/x", r1 - 1, Some(b"2".to_vec())).await;
    assert_eq!(stale.unwrap_err().code, ErrorCode::CompareFailed);
    let r2 = n.kv_cas("app/x", r1, Some(b"2".to_vec())).await.unwrap();
    n.kv_put("other", b"o".to_vec()).await.unwrap();
    let r3 = n.kv_delete("app/x").await.unwrap().expect("existed");
    assert_eq!(n.kv_delete("app/x").await.unwrap(), None);
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let ev = tokio::time::timeout(Duration::from_secs(10), w.recv())
            .await
            .expect("event in time")
            .expect("stream open")
            .expect("event");
        seen.push((ev.revision, ev.value.map(|v| v.to_vec())));
    }
    assert_eq!(
        seen,
        [
            (r1, Some(b"1".to_vec())),
            (r2, Some(b"2".to_vec())),
            (r3, None)
        ]
    );
    let range = n.kv_range("", 0, Read::Stale).await.unwrap();
    assert_eq!(range.entries.len(), 1);
    assert_eq!(range.entries[0].0, "other");
    n.shutdown().await;
}
