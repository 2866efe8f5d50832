//! The autocluster loop driven by user strategies (the `Strategy` trait is public): lock
//! failure still unlocks, the loop reruns until registered, and a pluggable strategy clusters.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ekka_node::discovery::{DiscoveryError, Done, Strategy};
use ekka_node::{Discovery, Node, NodeConfig};

/// A strategy whose answers the test controls, counting every call.
#[derive(Default)]
struct Scripted {
    peers: Mutex<Vec<String>>,
    fail_lock: bool,
    /// register fails this many times before it succeeds.
    register_failures: AtomicUsize,
    locks: AtomicUsize,
    unlocks: AtomicUsize,
    registers: AtomicUsize,
}

fn err(m: &str) -> DiscoveryError {
    DiscoveryError::Failed {
        strategy: "scripted",
        message: m.into(),
    }
}

#[async_trait]
impl Strategy for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }
    async fn discover(&self) -> Result<Vec<String>, DiscoveryError> {
        Ok(self.peers.lock().unwrap().clone())
    }
    async fn lock(&self) -> Result<Done, DiscoveryError> {
        self.locks.fetch_add(1, Ordering::SeqCst);
        if self.fail_lock {
            Err(err("lock refused"))
        } else {
            Ok(Done::Ok)
        }
    }
    async fn unlock(&self) -> Result<Done, DiscoveryError> {
        self.unlocks.fetch_add(1, Ordering::SeqCst);
        Ok(Done::Ok)
    }
    async fn register(&self) -> Result<Done, DiscoveryError> {
        self.registers.fetch_add(1, Ordering::SeqCst);
        let left = self.register_failures.load(Ordering::SeqCst);
        if left > 0 {
            self.register_failures.store(left - 1, Ordering::SeqCst);
            return Err(err("registry down"));
        }
        Ok(Done::Ok)
    }
}

async fn node(dir: &tempfile::TempDir, name: &str, s: Option<Arc<Scripted>>) -> Node {
    let mut c = NodeConfig::new(name, dir.path().join(name));
    c.listen = "127.0.0.1:0".into();
    c.cookie = "strategy-test".into();
    c.retry_interval = Duration::from_millis(50);
    c.discovery = s.map(|s| Discovery(s as Arc<dyn Strategy>));
    Node::start(c).await.expect("start")
}

async fn wait_for(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_failure_still_unlocks_and_joins_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let seed = node(&dir, "a", None).await;
    let s = Arc::new(Scripted {
        fail_lock: true,
        ..Default::default()
    });
    *s.peers.lock().unwrap() = vec![seed.local_addr().to_string()];
    let b = node(&dir, "b", Some(s.clone())).await;
    wait_for("three rounds", || async {
        s.locks.load(Ordering::SeqCst) >= 3
    })
    .await;
    // Every failed lock was followed by an unlock (ekka#148), and nothing was joined.
    let (locks, unlocks) = (
        s.locks.load(Ordering::SeqCst),
        s.unlocks.load(Ordering::SeqCst),
    );
    assert!(
        unlocks + 1 >= locks && unlocks >= 2,
        "locks {locks}, unlocks {unlocks}"
    );
    assert_eq!(b.status().await.unwrap().running_nodes(), ["b"]);
    b.shutdown().await;
    seed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_reruns_until_registered_and_a_user_strategy_clusters() {
    let dir = tempfile::tempdir().unwrap();
    let seed = node(&dir, "a", None).await;
    let s = Arc::new(Scripted {
        register_failures: AtomicUsize::new(3),
        ..Default::default()
    });
    // Discovery first finds nothing, later the seed (ekka's t_run_again_when_not_registered).
    let b = node(&dir, "b", Some(s.clone())).await;
    wait_for("a round with nobody found", || async {
        s.registers.load(Ordering::SeqCst) >= 1
    })
    .await;
    *s.peers.lock().unwrap() = vec![seed.local_addr().to_string()];
    wait_for("b in a's cluster", || async {
        seed.status()
            .await
            .is_ok_and(|st| st.running_nodes() == ["a", "b"])
    })
    .await;
    wait_for("registered after three failures", || async {
        s.registers.load(Ordering::SeqCst) >= 4
    })
    .await;
    assert_eq!(s.register_failures.load(Ordering::SeqCst), 0);
    b.shutdown().await;
    seed.shutdown().await;
}
