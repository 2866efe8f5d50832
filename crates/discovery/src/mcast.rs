//! `mcast`: UDP multicast ping/pong. A node pings the group; every node of the same cluster that
//! hears it pongs back, and both sides learn each other's address. Packets carry the cluster
//! name and an HMAC-SHA256 of their content keyed by the cookie: packets of another cluster,
//! forged, truncated or garbled ones are ignored.
//!
//! Wire format: `EKKA-MCAST1` | kind (1 = ping, 2 = pong) | name length (u8) | name |
//! address length (u8) | address | HMAC-SHA256 (32 bytes) over everything before it.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tracing::debug;

use crate::{clean, DiscoveryError, Strategy};

const MAGIC: &[u8] = b"EKKA-MCAST1";
const PING: u8 = 1;
const PONG: u8 = 2;
const MAC_BYTES: usize = 32;
/// Largest packet read; anything longer is not ours.
const MAX_PACKET: usize = 1024;

/// Settings of the mcast strategy.
#[derive(Clone, Debug)]
pub struct McastConfig {
    pub group: Ipv4Addr,
    pub port: u16,
    /// Interface address to join the group on (`0.0.0.0`: the default route's).
    pub iface: Ipv4Addr,
    pub ttl: u32,
    /// Only nodes of this cluster answer each other.
    pub cluster: String,
    /// The shared cookie: the HMAC key.
    pub cookie: String,
    /// How long `discover` listens for pongs after pinging.
    pub wait: Duration,
}

type Seen = Arc<Mutex<BTreeSet<String>>>;

/// The mcast strategy; its socket and listener start on the first `discover`.
pub struct Mcast {
    cfg: McastConfig,
    addr: Mutex<String>,
    seen: Seen,
    sock: tokio::sync::OnceCell<Arc<UdpSocket>>,
    listener: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

fn failed(message: String) -> DiscoveryError {
    DiscoveryError::Failed {
        strategy: "mcast",
        message,
    }
}

/// Encodes one packet.
pub(crate) fn encode(kind: u8, cluster: &str, addr: &str, cookie: &str) -> Option<Vec<u8>> {
    let (n, a) = (
        u8::try_from(cluster.len()).ok()?,
        u8::try_from(addr.len()).ok()?,
    );
    let mut p = MAGIC.to_vec();
    p.push(kind);
    p.push(n);
    p.extend_from_slice(cluster.as_bytes());
    p.push(a);
    p.extend_from_slice(addr.as_bytes());
    let mut mac = Hmac::<Sha256>::new_from_slice(cookie.as_bytes()).ok()?;
    mac.update(&p);
    p.extend_from_slice(&mac.finalize().into_bytes());
    Some(p)
}

/// Decodes a packet of `cluster` signed with `cookie` into (kind, address); `None` for anything
/// else.
pub(crate) fn decode(p: &[u8], cluster: &str, cookie: &str) -> Option<(u8, String)> {
    let body = p.get(..p.len().checked_sub(MAC_BYTES)?)?;
    let tag = p.get(body.len()..)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(cookie.as_bytes()).ok()?;
    mac.update(body);
    mac.verify_slice(tag).ok()?;
    let rest = body.strip_prefix(MAGIC)?;
    let (&kind, rest) = rest.split_first()?;
    let (&n, rest) = rest.split_first()?;
    let name = rest.get(..usize::from(n))?;
    let rest = rest.get(usize::from(n)..)?;
    let (&a, rest) = rest.split_first()?;
    let addr = rest.get(..usize::from(a))?;
    if rest.len() != usize::from(a) || name != cluster.as_bytes() || !(kind == PING || kind == PONG)
    {
        return None;
    }
    let addr = std::str::from_utf8(addr).ok()?.to_string();
    ekka_types::check::check_addr(&addr).ok()?;
    Some((kind, addr))
}

impl Mcast {
    pub fn new(cfg: McastConfig) -> Result<Mcast, DiscoveryError> {
        if !cfg.group.is_multicast() {
            return Err(failed(format!("{} is not a multicast address", cfg.group)));
        }
        if cfg.cluster.is_empty() || cfg.cluster.len() > 255 {
            return Err(failed("cluster name must be 1..=255 bytes".into()));
        }
        if cfg.port == 0 {
            return Err(failed("no port".into()));
        }
        Ok(Mcast {
            cfg,
            addr: Mutex::new(String::new()),
            seen: Seen::default(),
            sock: tokio::sync::OnceCell::new(),
            listener: Mutex::new(None),
        })
    }

    fn my_addr(&self) -> String {
        self.addr.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn open(&self) -> Result<UdpSocket, DiscoveryError> {
        let io = |what: &str, e: std::io::Error| failed(format!("{what}: {e}"));
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
            .map_err(|e| io("socket", e))?;
        s.set_reuse_address(true)
            .map_err(|e| io("SO_REUSEADDR", e))?;
        s.set_reuse_port(true).map_err(|e| io("SO_REUSEPORT", e))?;
        s.set_nonblocking(true).map_err(|e| io("nonblocking", e))?;
        let bind = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, self.cfg.port);
        s.bind(&bind.into()).map_err(|e| io("bind", e))?;
        s.join_multicast_v4(&self.cfg.group, &self.cfg.iface)
            .map_err(|e| io("join group", e))?;
        s.set_multicast_loop_v4(true).map_err(|e| io("loop", e))?;
        s.set_multicast_ttl_v4(self.cfg.ttl)
            .map_err(|e| io("ttl", e))?;
        UdpSocket::from_std(s.into()).map_err(|e| io("tokio socket", e))
    }

    async fn socket(&self) -> Result<Arc<UdpSocket>, DiscoveryError> {
        let sock = self
            .sock
            .get_or_try_init(|| async { self.open().map(Arc::new) })
            .await?
            .clone();
        let mut l = self.listener.lock().unwrap_or_else(|e| e.into_inner());
        if l.is_none() {
            *l = Some(tokio::spawn(listen(
                sock.clone(),
                self.cfg.clone(),
                self.my_addr(),
                self.seen.clone(),
            )));
        }
        Ok(sock)
    }

    fn group(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.cfg.group, self.cfg.port))
    }
}

/// Answers pings and records every sender of a valid ping or pong.
async fn listen(sock: Arc<UdpSocket>, cfg: McastConfig, me: String, seen: Seen) {
    let group = SocketAddr::V4(SocketAddrV4::new(cfg.group, cfg.port));
    let mut buf = vec![0u8; MAX_PACKET];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let Some((kind, addr)) = decode(&buf[..n], &cfg.cluster, &cfg.cookie) else {
            debug!(%from, bytes = n, "mcast: ignored a packet that is not from this cluster");
            continue;
        };
        if addr == me {
            continue;
        }
        seen.lock().unwrap_or_else(|e| e.into_inner()).insert(addr);
        if kind == PING && !me.is_empty() {
            if let Some(p) = encode(PONG, &cfg.cluster, &me, &cfg.cookie) {
                let _ = sock.send_to(&p, group).await;
            }
        }
    }
}

impl Drop for Mcast {
    fn drop(&mut self) {
        if let Some(h) = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            h.abort();
        }
    }
}

#[async_trait::async_trait]
impl Strategy for Mcast {
    fn name(&self) -> &'static str {
        "mcast"
    }

    fn bind(&self, addr: &str) {
        *self.addr.lock().unwrap_or_else(|e| e.into_inner()) = addr.to_string();
    }

    async fn discover(&self) -> Result<Vec<String>, DiscoveryError> {
        let me = self.my_addr();
        if me.is_empty() {
            return Err(failed("the node's address is not known yet".into()));
        }
        let sock = self.socket().await?;
        let ping = encode(PING, &self.cfg.cluster, &me, &self.cfg.cookie)
            .ok_or_else(|| failed("address or cluster name too long for a packet".into()))?;
        sock.send_to(&ping, self.group())
            .await
            .map_err(|e| failed(format!("send to {}: {e}", self.group())))?;
        tokio::time::sleep(self.cfg.wait).await;
        let mut found: Vec<String> =
            std::mem::take(&mut *self.seen.lock().unwrap_or_else(|e| e.into_inner()))
                .into_iter()
                .collect();
        found.push(me);
        clean("mcast", found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_round_trip_and_forgeries_are_rejected() {
        let p = encode(PING, "c1", "127.0.0.1:4370", "secret").unwrap();
        assert_eq!(
            decode(&p, "c1", "secret"),
            Some((PING, "127.0.0.1:4370".into()))
        );
        assert_eq!(decode(&p, "c2", "secret"), None, "another cluster");
        assert_eq!(decode(&p, "c1", "other"), None, "another cookie");
        let mut flipped = p.clone();
        let i = MAGIC.len() + 4;
        flipped[i] ^= 1;
        assert_eq!(decode(&flipped, "c1", "secret"), None, "tampered");
        for cut in 0..p.len() {
            assert_eq!(
                decode(&p[..cut], "c1", "secret"),
                None,
                "truncated at {cut}"
            );
        }
        assert_eq!(decode(b"\x00\xff garbage", "c1", "secret"), None);
        let bad_addr = encode(PONG, "c1", "not an address", "secret").unwrap();
        assert_eq!(decode(&bad_addr, "c1", "secret"), None);
    }
}
