//! The `mcast` strategy on real sockets, inside a network namespace this test creates
//! (`unshare --net`, root only): multicast never touches the host network. Three nodes of one
//! cluster find each other; another cluster, a wrong cookie and forged packets are ignored.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Command;
use std::time::Duration;

use ekka_discovery::{Mcast, McastConfig, Strategy};

const IN_NETNS: &str = "EKKA_MCAST_IN_NETNS";

fn cfg(cluster: &str, cookie: &str) -> McastConfig {
    McastConfig {
        group: Ipv4Addr::new(239, 192, 0, 1),
        port: 4369,
        iface: Ipv4Addr::UNSPECIFIED,
        ttl: 1,
        cluster: cluster.into(),
        cookie: cookie.into(),
        wait: Duration::from_millis(300),
    }
}

fn node(cluster: &str, cookie: &str, addr: &str) -> Mcast {
    let m = Mcast::new(cfg(cluster, cookie)).unwrap();
    m.bind(addr);
    m
}

#[test]
fn mcast_discovery_inside_a_network_namespace() {
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        "ip link set lo up && ip route add 224.0.0.0/4 dev lo && exec {} --exact netns_body --nocapture --test-threads=1",
        exe.display()
    );
    let out = Command::new("unshare")
        .args(["--net", "sh", "-c", &script])
        .env(IN_NETNS, "1")
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            assert!(
                std::env::var("EKKA_REQUIRE_NETNS").as_deref() != Ok("1"),
                "cannot run unshare: {e}"
            );
            eprintln!("unshare unavailable ({e}): skipping");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("Operation not permitted") {
        assert!(
            std::env::var("EKKA_REQUIRE_NETNS").as_deref() != Ok("1"),
            "unshare --net not permitted (needs root)"
        );
        eprintln!("unshare --net not permitted: skipping");
        return;
    }
    assert!(
        out.status.success(),
        "netns run failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("MCAST-OK"), "{stdout}\n{stderr}");
}

/// Runs only inside the namespace made by the test above.
#[tokio::test]
async fn netns_body() {
    if std::env::var(IN_NETNS).is_err() {
        return;
    }
    let a = node("c1", "cookie", "127.0.0.1:5001");
    let b = node("c1", "cookie", "127.0.0.1:5002");
    let c = node("c1", "cookie", "127.0.0.1:5003");
    let other_cluster = node("c2", "cookie", "127.0.0.1:6001");
    let wrong_cookie = node("c1", "not-the-cookie", "127.0.0.1:6002");
    // Everyone listens (a first discover opens each socket).
    for s in [&b, &c, &other_cluster, &wrong_cookie] {
        s.discover().await.unwrap();
    }
    // Forged and garbled packets to the group are ignored, without harm.
    let raw = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let group = SocketAddrV4::new(Ipv4Addr::new(239, 192, 0, 1), 4369);
    for p in [
        &b"garbage"[..],
        b"EKKA-MCAST1\x01\x02c1\x0e127.0.0.1:6666",
        &[0u8; 1500],
    ] {
        raw.send_to(p, group).unwrap();
    }
    let found = a.discover().await.unwrap();
    assert_eq!(
        found,
        ["127.0.0.1:5001", "127.0.0.1:5002", "127.0.0.1:5003"],
        "only c1 nodes with the right cookie"
    );
    // b heard a's ping too.
    let from_b = b.discover().await.unwrap();
    assert!(from_b.contains(&"127.0.0.1:5001".to_string()), "{from_b:?}");
    println!("MCAST-OK");
}
