//! Links between agents that a test can cut, on real loopback sockets. Every agent is reached by
//! its peers only through its own proxy (the agent advertises the proxy's address). A proxy knows
//! which agent opened each connection: it looks the connecting socket up in `/proc/net/tcp` and
//! finds the agent process holding it. So a test can cut one direction of one pair of agents
//! (`from` can no longer reach `to`, while `to` still reaches `from`), both directions of a pair,
//! or every link into an agent.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// Agent index → its process id, shared by the proxies of one [`Net`].
type Pids = Arc<Mutex<Vec<Option<u32>>>>;

#[derive(Default)]
struct Links {
    /// Every link into this agent is cut.
    all_cut: bool,
    /// Agents whose links into this agent are cut.
    cut_from: BTreeSet<usize>,
    /// Open connections: the agent that opened each (when known) and both of its sockets.
    conns: Vec<(Option<usize>, TcpStream, TcpStream)>,
}

impl Links {
    fn admits(&self, from: Option<usize>) -> bool {
        !self.all_cut && from.is_none_or(|f| !self.cut_from.contains(&f))
    }

    /// Shuts down every open connection this proxy no longer admits.
    fn drop_refused(&mut self) {
        let (keep, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut self.conns)
            .into_iter()
            .partition(|(from, _, _)| self.admits(*from));
        self.conns = keep;
        for (_, a, b) in gone {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }
}

pub struct Proxy {
    pub addr: String,
    target: Arc<Mutex<String>>,
    links: Arc<Mutex<Links>>,
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// The socket inode of the TCP connection from `peer` to `local`, from the client's side.
fn client_inode(peer: SocketAddr, local: SocketAddr) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let port = |f: &str| u16::from_str_radix(f.rsplit(':').next()?, 16).ok();
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let hit =
            f.len() > 9 && port(f[1]) == Some(peer.port()) && port(f[2]) == Some(local.port());
        if hit {
            f[9].parse().ok()
        } else {
            None
        }
    })
}

/// Which agent of `pids` holds the socket that opened the connection from `peer` to `local`.
fn source_agent(peer: SocketAddr, local: SocketAddr, pids: &[Option<u32>]) -> Option<usize> {
    let want = format!("socket:[{}]", client_inode(peer, local)?);
    pids.iter().position(|pid| {
        let Some(pid) = pid else { return false };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return false;
        };
        fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == want.as_str())
        })
    })
}

impl Proxy {
    /// Listens on 127.0.0.1:0; forwards to the target set with [`Proxy::set_target`], telling
    /// connecting agents apart by `pids`.
    fn start(pids: Pids) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let local = l.local_addr().unwrap();
        let target = Arc::new(Mutex::new(String::new()));
        let links: Arc<Mutex<Links>> = Arc::default();
        let (t, ls) = (target.clone(), links.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(inbound) = s else { continue };
                let from = match inbound.peer_addr() {
                    Ok(peer) => source_agent(peer, local, &pids.lock().unwrap()),
                    Err(_) => continue,
                };
                if !ls.lock().unwrap().admits(from) {
                    continue;
                }
                let to = t.lock().unwrap().clone();
                let Ok(outbound) = TcpStream::connect(&to) else {
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let (i2, o2) = (inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
                {
                    // Checked again under the lock: a cut made meanwhile must not be missed.
                    let mut links = ls.lock().unwrap();
                    if !links.admits(from) {
                        continue;
                    }
                    links
                        .conns
                        .push((from, i2.try_clone().unwrap(), o2.try_clone().unwrap()));
                }
                std::thread::spawn(move || pump(inbound, outbound));
                std::thread::spawn(move || pump(o2, i2));
            }
        });
        Proxy {
            addr: local.to_string(),
            target,
            links,
        }
    }

    pub fn set_target(&self, to: &str) {
        *self.target.lock().unwrap() = to.to_string();
    }

    /// Drops every open connection and refuses new ones until [`Proxy::heal`].
    pub fn cut(&self) {
        let mut l = self.links.lock().unwrap();
        l.all_cut = true;
        l.drop_refused();
    }

    /// Cuts the links opened by agent `from` only.
    fn cut_from(&self, from: usize) {
        let mut l = self.links.lock().unwrap();
        l.cut_from.insert(from);
        l.drop_refused();
    }

    /// Every link into this agent works again.
    pub fn heal(&self) {
        let mut l = self.links.lock().unwrap();
        l.all_cut = false;
        l.cut_from.clear();
    }
}

/// One proxy per agent (by index), and cuts between pairs of agents.
pub struct Net {
    pub proxies: Vec<Proxy>,
    pids: Pids,
}

impl Net {
    pub fn new(n: usize) -> Net {
        let pids: Pids = Arc::new(Mutex::new(vec![None; n]));
        let proxies = (0..n).map(|_| Proxy::start(pids.clone())).collect();
        Net { proxies, pids }
    }

    /// Agent `i` now runs as process `pid` (call again after a restart).
    pub fn set_pid(&self, i: usize, pid: Option<u32>) {
        self.pids.lock().unwrap()[i] = pid;
    }

    /// `from` can no longer reach `to`; `to` still reaches `from`.
    pub fn cut_one_way(&self, from: usize, to: usize) {
        self.proxies[to].cut_from(from);
    }

    /// `a` and `b` no longer reach each other.
    pub fn cut(&self, a: usize, b: usize) {
        self.cut_one_way(a, b);
        self.cut_one_way(b, a);
    }

    /// Cuts every link between agents in different groups.
    pub fn split(&self, groups: &[&[usize]]) {
        for (gi, g) in groups.iter().enumerate() {
            for h in &groups[gi + 1..] {
                for &a in g.iter() {
                    for &b in h.iter() {
                        self.cut(a, b);
                    }
                }
            }
        }
    }

    /// Every link works again.
    pub fn heal(&self) {
        for p in &self.proxies {
            p.heal();
        }
    }
}
