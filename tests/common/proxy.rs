//! A loopback TCP proxy the test controls: peers reach an agent only through its proxy (the agent
//! advertises the proxy's address), so cutting the proxy cuts every link *into* that agent while
//! the agent's own outgoing links stay up: a one-way partition on real sockets.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub struct Proxy {
    pub addr: String,
    target: Arc<Mutex<String>>,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
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

impl Proxy {
    /// Listens on 127.0.0.1:0; forwards to the target set with [`Proxy::set_target`].
    pub fn start() -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = l.local_addr().unwrap().to_string();
        let target = Arc::new(Mutex::new(String::new()));
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (t, c, cs) = (target.clone(), cut.clone(), conns.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(inbound) = s else { continue };
                if c.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let to = t.lock().unwrap().clone();
                let Ok(outbound) = TcpStream::connect(&to) else {
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                {
                    let mut v = cs.lock().unwrap();
                    v.push(inbound.try_clone().unwrap());
                    v.push(outbound.try_clone().unwrap());
                }
                let (i2, o2) = (inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
                std::thread::spawn(move || pump(inbound, outbound));
                std::thread::spawn(move || pump(o2, i2));
            }
        });
        Proxy {
            addr,
            target,
            cut,
            conns,
        }
    }

    pub fn set_target(&self, to: &str) {
        *self.target.lock().unwrap() = to.to_string();
    }

    /// Drops every open connection and refuses new ones until [`Proxy::heal`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}
