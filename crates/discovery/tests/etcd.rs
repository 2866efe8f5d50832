//! The `etcd` strategy against the real etcd server (Debian `etcd-server`), started by the test
//! on free loopback ports. Without etcd the tests say so and pass, unless `EKKA_REQUIRE_ETCD=1`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ekka_discovery::{DiscoveryError, Done, Etcd, EtcdConfig, Strategy};

struct EtcdServer {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts etcd, or returns None (test skipped) when it is not installed and not required.
async fn etcd() -> Option<EtcdServer> {
    let installed = Command::new("etcd").arg("--version").output().is_ok();
    if !installed {
        assert!(
            std::env::var("EKKA_REQUIRE_ETCD").as_deref() != Ok("1"),
            "EKKA_REQUIRE_ETCD=1 but no etcd binary (apt-get install etcd-server)"
        );
        eprintln!("etcd not installed: skipping");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let (c, p) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{c}");
    let child = Command::new("etcd")
        .args([
            "--name",
            "t",
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{p}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{p}"),
        ])
        .args(["--initial-cluster", &format!("t=http://127.0.0.1:{p}")])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcd");
    let s = EtcdServer {
        child,
        url,
        _dir: dir,
    };
    let probe = strategy(&s.url, "127.0.0.1:1");
    let deadline = Instant::now() + Duration::from_secs(30);
    while probe.discover().await.is_err() {
        assert!(Instant::now() < deadline, "etcd did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Some(s)
}

fn config(url: &str, addr: &str) -> EtcdConfig {
    EtcdConfig {
        endpoints: vec![url.to_string()],
        prefix: "ekka".into(),
        cluster: "test".into(),
        addr: addr.into(),
        ttl: Duration::from_secs(2),
        lock_timeout: Duration::from_millis(800),
        timeout: Duration::from_secs(2),
    }
}

fn strategy(url: &str, addr: &str) -> Etcd {
    Etcd::new(config(url, addr)).unwrap()
}

#[tokio::test]
async fn register_discover_unregister() {
    let Some(e) = etcd().await else { return };
    let a = strategy(&e.url, "127.0.0.1:4371");
    let b = strategy(&e.url, "127.0.0.1:4372");
    assert_eq!(a.discover().await.unwrap(), Vec::<String>::new());
    assert_eq!(a.register().await, Ok(Done::Ok));
    assert_eq!(b.register().await, Ok(Done::Ok));
    assert_eq!(
        a.discover().await.unwrap(),
        ["127.0.0.1:4371", "127.0.0.1:4372"]
    );
    assert_eq!(a.unregister().await, Ok(Done::Ok));
    assert_eq!(b.discover().await.unwrap(), ["127.0.0.1:4372"]);
}

#[tokio::test]
async fn the_lock_excludes_others_and_unlock_releases_it() {
    let Some(e) = etcd().await else { return };
    let a = strategy(&e.url, "127.0.0.1:4371");
    let b = strategy(&e.url, "127.0.0.1:4372");
    assert_eq!(a.lock().await, Ok(Done::Ok));
    let blocked = b.lock().await;
    assert!(
        matches!(blocked, Err(DiscoveryError::Timeout { .. })),
        "{blocked:?}"
    );
    // A failed lock still unlocks cleanly (its lease is revoked).
    assert!(b.unlock().await.is_ok());
    assert_eq!(a.unlock().await, Ok(Done::Ok));
    assert_eq!(b.lock().await, Ok(Done::Ok));
    assert_eq!(b.unlock().await, Ok(Done::Ok));
}

#[tokio::test]
async fn a_registration_expires_when_its_owner_goes() {
    let Some(e) = etcd().await else { return };
    let watcher = strategy(&e.url, "127.0.0.1:4370");
    {
        let a = strategy(&e.url, "127.0.0.1:4371");
        a.register().await.unwrap();
        // Kept alive past its 2 s TTL while the owner lives.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(watcher.discover().await.unwrap(), ["127.0.0.1:4371"]);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while !watcher.discover().await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "registration did not expire");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn etcd_down_is_a_clear_error() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let s = strategy(&url, "127.0.0.1:4371");
    let e = s.discover().await.unwrap_err();
    assert!(e.to_string().contains("no endpoint answers"), "{e}");
    assert!(s.register().await.is_err());
    assert!(s.lock().await.is_err());
    // The lock never got a lease, so there is nothing to release.
    assert_eq!(s.unlock().await, Ok(Done::Ignore));
}
