//! A running CLI command that prints one JSON object per line (`members watch --json`,
//! `kv watch --json`), read on a thread; killed when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

use serde_json::Value;

use super::{Agent, BIN, COOKIE};

pub struct JsonLines {
    child: Child,
    rx: Receiver<Value>,
}

impl JsonLines {
    /// Runs `ekka <args> --node <a> --cookie <test cookie>`. A line that is not JSON ends the
    /// stream (the reader thread panics on it).
    pub fn start(a: &Agent, args: &[&str]) -> JsonLines {
        let mut child = Command::new(BIN)
            .args(args)
            .args(["--node", &a.addr, "--cookie", COOKIE])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                let v: Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        JsonLines { child, rx }
    }

    /// The next object, waiting up to `limit`; `None` when none came (or the stream ended).
    pub fn next(&self, limit: Duration) -> Option<Value> {
        self.rx.recv_timeout(limit).ok()
    }
}

impl Drop for JsonLines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
