//! The `dns` strategy against a real DNS server (hickory-server on 127.0.0.1:0): A, AAAA, SRV
//! (15 records naming 3 peers), a name that appears only later, and a name that never does.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use ekka_discovery::{Dns, DnsRecord, Strategy};
use hickory_server::proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use hickory_server::Server;

struct TestDns {
    addr: SocketAddr,
    zone: Arc<InMemoryZoneHandler>,
    _server: Server<Catalog>,
}

fn name(s: &str) -> Name {
    Name::from_str(s).unwrap()
}

async fn start() -> TestDns {
    let origin = name("ekka.test.");
    let mut zone = InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
    let soa = SOA::new(
        name("ns.ekka.test."),
        name("admin.ekka.test."),
        1,
        60,
        60,
        60,
        0,
    );
    zone.upsert_mut(Record::from_rdata(origin.clone(), 60, RData::SOA(soa)), 1);
    for ip in [1u8, 2] {
        let a = RData::A(A(Ipv4Addr::new(127, 0, 0, ip)));
        zone.upsert_mut(Record::from_rdata(name("nodes.ekka.test."), 60, a), 1);
    }
    let aaaa = RData::AAAA(AAAA(Ipv6Addr::LOCALHOST));
    zone.upsert_mut(Record::from_rdata(name("nodes6.ekka.test."), 60, aaaa), 1);
    // 3 hosts, each named by 5 SRV records (different priorities and weights, same port).
    for host in 1u8..=3 {
        let target = name(&format!("h{host}.ekka.test."));
        let a = RData::A(A(Ipv4Addr::new(127, 0, 0, host)));
        zone.upsert_mut(Record::from_rdata(target.clone(), 60, a), 1);
        for k in 0u16..5 {
            let srv = SRV::new(k, 10 + k, 4370 + u16::from(host), target.clone());
            zone.upsert_mut(
                Record::from_rdata(name("_ekka._tcp.ekka.test."), 60, RData::SRV(srv)),
                1,
            );
        }
    }
    let zone = Arc::new(zone);
    let mut catalog = Catalog::new();
    catalog.upsert(LowerName::new(&origin), vec![zone.clone()]);
    let mut server = Server::new(catalog);
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    server.register_socket(udp);
    TestDns {
        addr,
        zone,
        _server: server,
    }
}

fn dns(t: &TestDns, n: &str, record: DnsRecord, port: u16) -> Dns {
    Dns::new(n, record, port, Some(t.addr), Duration::from_secs(2)).unwrap()
}

#[tokio::test]
async fn a_records_with_the_configured_port() {
    let t = start().await;
    let d = dns(&t, "nodes.ekka.test.", DnsRecord::A, 4370);
    assert_eq!(
        d.discover().await.unwrap(),
        ["127.0.0.1:4370", "127.0.0.2:4370"]
    );
}

#[tokio::test]
async fn aaaa_records() {
    let t = start().await;
    let d = dns(&t, "nodes6.ekka.test.", DnsRecord::Aaaa, 4370);
    assert_eq!(d.discover().await.unwrap(), ["[::1]:4370"]);
}

#[tokio::test]
async fn fifteen_srv_records_name_three_peers() {
    let t = start().await;
    let d = dns(&t, "_ekka._tcp.ekka.test.", DnsRecord::Srv, 0);
    assert_eq!(
        d.discover().await.unwrap(),
        ["127.0.0.1:4371", "127.0.0.2:4372", "127.0.0.3:4373"]
    );
}

#[tokio::test]
async fn laggy_name_fails_then_resolves() {
    let t = start().await;
    let d = dns(&t, "late.ekka.test.", DnsRecord::A, 4370);
    let e = d.discover().await.unwrap_err();
    assert!(e.to_string().contains("late.ekka.test"), "{e}");
    let a = RData::A(A(Ipv4Addr::new(127, 0, 0, 9)));
    t.zone
        .upsert(Record::from_rdata(name("late.ekka.test."), 60, a), 2)
        .await;
    assert_eq!(d.discover().await.unwrap(), ["127.0.0.9:4370"]);
}

#[tokio::test]
async fn unanswered_queries_time_out_cleanly() {
    // A UDP socket that never answers.
    let mute = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let d = Dns::new(
        "nodes.ekka.test.",
        DnsRecord::A,
        4370,
        Some(mute.local_addr().unwrap()),
        Duration::from_millis(200),
    )
    .unwrap();
    assert!(d.discover().await.is_err());
}

#[test]
fn bad_settings_are_refused() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        assert!(Dns::new("", DnsRecord::A, 1, None, Duration::from_secs(1)).is_err());
        assert!(Dns::new("x.test.", DnsRecord::A, 0, None, Duration::from_secs(1)).is_err());
    });
    assert!("mx".parse::<DnsRecord>().is_err());
}
