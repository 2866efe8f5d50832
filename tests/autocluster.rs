//! ekka_autocluster_SUITE in Raft form: agents started with the same discovery settings form
//! exactly one cluster with no command typed, whatever order they start in.

mod common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(40);
const FAST: [&str; 2] = ["--retry-interval", "200ms"];

/// Starts agents `names` with exec discovery reading `list` (missing until the test writes it).
fn start_exec_group(c: &mut Cluster, names: &[&str], list: &std::path::Path) {
    let cmd = format!("cat {}", list.display());
    for n in names {
        let mut args = vec!["--discovery", "exec", "--exec-command", &cmd];
        args.extend(FAST);
        c.start(n, &args);
    }
}

/// Writes the addresses of `names` into `list`, one per line.
fn write_peers(c: &Cluster, names: &[&str], list: &std::path::Path) {
    let addrs: Vec<String> = names.iter().map(|n| c.get(n).addr.clone()).collect();
    std::fs::write(list, addrs.join("\n")).unwrap();
}

#[test]
fn t40_five_agents_started_at_once_with_static_seeds_form_one_cluster() {
    let mut c = Cluster::new();
    let ports: Vec<u16> = (0..5).map(|_| free_port_on(&["127.0.0.1"])).collect();
    let seeds: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let seeds = seeds.join(",");
    for (i, p) in ports.iter().enumerate() {
        let listen = format!("127.0.0.1:{p}");
        let mut args = vec![
            "--listen",
            &listen,
            "--discovery",
            "static",
            "--seeds",
            &seeds,
        ];
        args.extend(FAST);
        c.start(&format!("n{}", i + 1), &args);
    }
    let names = ["n1", "n2", "n3", "n4", "n5"];
    wait_formed(c.get("n3"), &names, WAIT);
    let ids: std::collections::BTreeSet<String> = c
        .agents
        .iter()
        .map(|a| a.status()["cluster_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 1, "exactly one cluster: {ids:?}");
}

#[test]
fn t41_exec_strategy_retries_until_peers_appear() {
    let mut c = Cluster::new();
    let list = c.path("peers.txt");
    // The command fails while the file is missing: the loop keeps retrying.
    start_exec_group(&mut c, &["n1", "n2", "n3"], &list);
    assert_eq!(running(&c.get("n1").status()), ["n1"], "nothing formed yet");
    write_peers(&c, &["n1", "n2", "n3"], &list);
    wait_formed(c.get("n2"), &["n1", "n2", "n3"], WAIT);
}

#[test]
fn t42_two_clusters_formed_apart_merge_once_they_see_each_other() {
    let mut c = Cluster::new();
    let (fa, fb) = (c.path("a.txt"), c.path("b.txt"));
    start_exec_group(&mut c, &["a1", "a2"], &fa);
    start_exec_group(&mut c, &["b1", "b2", "b3"], &fb);
    write_peers(&c, &["a1", "a2"], &fa);
    write_peers(&c, &["b1", "b2", "b3"], &fb);
    wait_formed(c.get("a1"), &["a1", "a2"], WAIT);
    wait_formed(c.get("b1"), &["b1", "b2", "b3"], WAIT);
    // Now both groups see everyone: the two-node cluster dissolves into the three-node one.
    let all = ["a1", "a2", "b1", "b2", "b3"];
    write_peers(&c, &all, &fa);
    write_peers(&c, &all, &fb);
    wait_formed(c.get("b2"), &all, WAIT);
    let a1 = c.get("a1").status();
    assert_eq!(a1["cluster_id"], c.get("b1").status()["cluster_id"]);
}

#[test]
fn t47_two_static_seed_groups_merge_once_they_see_each_other() {
    let mut c = Cluster::new();
    let port = |_| free_port_on(&["127.0.0.1"]);
    let a: Vec<String> = (0..2).map(port).map(|p| format!("127.0.0.1:{p}")).collect();
    let b: Vec<String> = (0..3).map(port).map(|p| format!("127.0.0.1:{p}")).collect();
    // Group a lists everyone; group b only itself. a forms first, alone.
    let all = [a.clone(), b.clone()].concat().join(",");
    let only_b = b.join(",");
    for (i, addr) in a.iter().enumerate() {
        let mut args = vec!["--listen", addr, "--discovery", "static", "--seeds", &all];
        args.extend(FAST);
        c.start(&format!("a{}", i + 1), &args);
    }
    wait_formed(c.get("a1"), &["a1", "a2"], WAIT);
    for (i, addr) in b.iter().enumerate() {
        let mut args = vec![
            "--listen",
            addr,
            "--discovery",
            "static",
            "--seeds",
            &only_b,
        ];
        args.extend(FAST);
        c.start(&format!("b{}", i + 1), &args);
    }
    // b forms apart (it cannot see a); a sees b's larger cluster and merges into it.
    wait_formed(c.get("b1"), &["a1", "a2", "b1", "b2", "b3"], WAIT);
}

#[test]
fn t43_leave_on_an_autoclustered_node_stays_out() {
    let mut c = Cluster::new();
    let list = c.path("peers.txt");
    start_exec_group(&mut c, &["n1", "n2", "n3"], &list);
    write_peers(&c, &["n1", "n2", "n3"], &list);
    wait_formed(c.get("n1"), &["n1", "n2", "n3"], WAIT);
    assert_eq!(c.get("n3").cli(&["cluster", "leave"]).ok(), "left");
    wait_formed(c.get("n1"), &["n1", "n2"], WAIT);
    // Over ten retry intervals n3 stays on its own: leave disabled its loop. (This watches for
    // something that must not happen, so it looks for a bounded window.)
    let n3 = c.get("n3");
    for _ in 0..10 {
        assert_eq!(running(&n3.status()), ["n3"], "n3 rejoined after leaving");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(running(&c.get("n1").status()), ["n1", "n2"]);
}

#[test]
fn t44_five_agents_at_once_with_dns_a_records_on_five_loopback_addresses() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ips = [
        "127.0.0.1",
        "127.0.0.2",
        "127.0.0.3",
        "127.0.0.4",
        "127.0.0.5",
    ];
    let port = free_port_on(&ips);
    let (dns, server) = rt.block_on(dns_server::start(&ips));
    let ns = dns.to_string();
    let mut c = Cluster::new();
    for (i, ip) in ips.iter().enumerate() {
        let listen = format!("{ip}:{port}");
        let mut args = vec![
            "--listen",
            &listen,
            "--discovery",
            "dns",
            "--dns-name",
            "nodes.ekka.test.",
            "--dns-nameserver",
            &ns,
        ];
        args.extend(FAST);
        c.start(&format!("n{}", i + 1), &args);
    }
    wait_formed(c.get("n1"), &["n1", "n2", "n3", "n4", "n5"], WAIT);
    drop(server);
    drop(rt);
}

/// A real DNS server (hickory-server) on 127.0.0.1:0 serving `nodes.ekka.test.` A records.
mod dns_server {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::str::FromStr;
    use std::sync::Arc;

    use hickory_server::proto::rr::rdata::{A, SOA};
    use hickory_server::proto::rr::{LowerName, Name, RData, Record};
    use hickory_server::store::in_memory::InMemoryZoneHandler;
    use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
    use hickory_server::Server;

    pub async fn start(ips: &[&str]) -> (SocketAddr, Server<Catalog>) {
        let n = |s: &str| Name::from_str(s).unwrap();
        let origin = n("ekka.test.");
        let mut zone: InMemoryZoneHandler =
            InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
        let soa = SOA::new(n("ns.ekka.test."), n("admin.ekka.test."), 1, 60, 60, 60, 0);
        zone.upsert_mut(Record::from_rdata(origin.clone(), 60, RData::SOA(soa)), 1);
        for ip in ips {
            let a = RData::A(A(Ipv4Addr::from_str(ip).unwrap()));
            zone.upsert_mut(Record::from_rdata(n("nodes.ekka.test."), 60, a), 1);
        }
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&origin), vec![Arc::new(zone)]);
        let mut server = Server::new(catalog);
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        server.register_socket(udp);
        (addr, server)
    }
}

fn etcd_args(url: &str) -> Vec<String> {
    [
        "--discovery",
        "etcd",
        "--etcd-endpoints",
        url,
        "--etcd-ttl",
        "3s",
        "--retry-interval",
        "200ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn t45_three_agents_form_one_cluster_through_etcd() {
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let mut c = Cluster::new();
    let args = etcd_args(&etcd.url);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for n in ["n1", "n2", "n3"] {
        c.start(n, &args);
    }
    wait_formed(c.get("n1"), &["n1", "n2", "n3"], WAIT);
}

#[test]
fn t46_etcd_stopped_mid_formation_then_restarted() {
    let Some(mut etcd) = EtcdServer::start() else {
        return;
    };
    let mut c = Cluster::new();
    let args = etcd_args(&etcd.url);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    c.start("n1", &args);
    c.start("n2", &args);
    wait_formed(c.get("n1"), &["n1", "n2"], WAIT);
    etcd.kill();
    // n3 boots while etcd is down: it keeps running and retrying.
    c.start("n3", &args);
    assert!(c.get_mut("n3").is_running());
    assert_eq!(running(&c.get("n3").status()), ["n3"]);
    etcd.restart();
    wait_formed(c.get("n1"), &["n1", "n2", "n3"], WAIT);
}

#[test]
fn t48_three_agents_form_one_cluster_through_the_kubernetes_api() {
    let ips = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
    let port = free_port_on(&ips);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = rt.block_on(k8s_api::start(&ips));
    let mut c = Cluster::new();
    let token = c.path("token");
    std::fs::write(&token, "t0ken").unwrap();
    let token = token.to_str().unwrap().to_string();
    let url = format!("http://{api}");
    for (i, ip) in ips.iter().enumerate() {
        let listen = format!("{ip}:{port}");
        let mut args = vec![
            "--listen",
            &listen,
            "--discovery",
            "k8s",
            "--k8s-apiserver",
            &url,
        ];
        args.extend(["--k8s-namespace", "prod", "--k8s-service", "ekka"]);
        args.extend(["--k8s-token-file", &token]);
        args.extend(FAST);
        c.start(&format!("n{}", i + 1), &args);
    }
    wait_formed(c.get("n1"), &["n1", "n2", "n3"], WAIT);
    drop(rt);
}

/// A Kubernetes API stand-in: one EndpointSlice of service `ekka` in `prod` listing the
/// given loopback addresses (plus a not-ready one that must be ignored).
mod k8s_api {
    use axum::http::HeaderMap;
    use axum::routing::get;
    use axum::{Json, Router};
    use serde_json::{json, Value};

    pub async fn start(ips: &[&str]) -> std::net::SocketAddr {
        let endpoints: Vec<Value> = ips
            .iter()
            .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
            .chain([json!({"addresses": ["127.0.0.99"], "conditions": {"ready": false}})])
            .collect();
        let body = json!({
            "kind": "EndpointSliceList",
            "apiVersion": "discovery.k8s.io/v1",
            "metadata": {},
            "items": [{"metadata": {"name": "ekka-x"}, "addressType": "IPv4", "endpoints": endpoints}],
        });
        let app = Router::new().route(
            "/apis/discovery.k8s.io/v1/namespaces/prod/endpointslices",
            get(move |h: HeaderMap| {
                let body = body.clone();
                async move {
                    assert_eq!(h.get("authorization").unwrap(), "Bearer t0ken");
                    Json(body)
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        addr
    }
}

#[test]
fn t49_three_agents_form_one_cluster_by_multicast_inside_a_network_namespace() {
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        "ip link set lo up && ip route add 224.0.0.0/4 dev lo && exec {} --exact t49_body --nocapture --test-threads=1",
        exe.display()
    );
    let out = std::process::Command::new("unshare")
        .args(["--net", "sh", "-c", &script])
        .env("EKKA_T49_IN_NETNS", "1")
        .output();
    let required = std::env::var("EKKA_REQUIRE_NETNS").as_deref() == Ok("1");
    let out = match out {
        Ok(o) if o.status.success() || required => o,
        Ok(o) if String::from_utf8_lossy(&o.stderr).contains("not permitted") => {
            eprintln!("unshare --net not permitted: skipping");
            return;
        }
        Ok(o) => o,
        Err(e) => {
            assert!(!required, "cannot run unshare: {e}");
            eprintln!("unshare unavailable: skipping");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("T49-OK"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs only inside the namespace made by t49: multicast never reaches the host network.
#[test]
fn t49_body() {
    if std::env::var("EKKA_T49_IN_NETNS").is_err() {
        return;
    }
    let mut c = Cluster::new();
    for n in ["n1", "n2", "n3"] {
        let mut args = vec!["--discovery", "mcast", "--mcast-cluster", "t49"];
        args.extend(FAST);
        c.start(n, &args);
    }
    wait_formed(c.get("n1"), &["n1", "n2", "n3"], WAIT);
    println!("T49-OK");
}
