//! `ekka agent`: runs one node until SIGINT/SIGTERM, or until a storage fault fails it (then it
//! exits 1 with `error: storage: <data dir>: <cause>`), or until the cluster refuses it because
//! another process runs with its node id (exit 2, `error: invalid_config: …`). Either way it ends
//! within `SHUTDOWN_LIMIT`.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use ekka::{ApiError, ErrorCode, Node};
use tracing::warn;

use crate::cli::args::AgentArgs;
use crate::cli::config;

pub async fn run(args: AgentArgs) -> Result<(), ApiError> {
    let cfg = config::load(args)?;
    let signals = Signals::new();
    if cfg.default_cookie {
        warn!("no cookie configured: using the default cookie; set --cookie or EKKA_COOKIE");
    }
    // Every port first: one in use fails the start before the data dir is touched.
    cfg.node.validate()?;
    let listener = Node::bind(&cfg.node).await?;
    let http = match &cfg.http {
        Some(h) => Some(crate::cli::http::bind(h).await?),
        None => None,
    };
    let node = Node::start_on(cfg.node, listener).await?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {}", node.local_addr());
        let _ = out.flush();
    }
    if let Some(listener) = http {
        let bound = crate::cli::http::serve(listener, node.clone())?;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "http on {bound}");
        let _ = out.flush();
    }
    let stop = tokio::select! {
        _ = signals.wait() => Stop::Signal,
        f = node.wait_fault() => Stop::Fault(f),
        c = node.wait_conflict() => Stop::Conflict(c),
    };
    // From here the process ends within SHUTDOWN_LIMIT, whatever the node does.
    watchdog(matches!(stop, Stop::Fault(_)));
    node.shutdown().await;
    match stop {
        Stop::Conflict(c) => Err(ApiError::new(ErrorCode::InvalidConfig, c)),
        Stop::Fault(f) => Err(ApiError::new(ErrorCode::Storage, f)),
        Stop::Signal => match node.fault() {
            Some(f) => Err(ApiError::new(ErrorCode::Storage, f)),
            None => Ok(()),
        },
    }
}

/// Why the agent stops.
enum Stop {
    Signal,
    /// A storage fault failed the node.
    Fault(String),
    /// The cluster refused this process: another one runs with its node id (exit 2).
    Conflict(String),
}

/// How long the agent may take to stop after SIGTERM/SIGINT or a storage fault.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(5);

/// Held by whoever prints the agent's last line and exits, so only one line is ever printed.
pub static EXIT: Mutex<()> = Mutex::new(());

/// Ends the process SHUTDOWN_LIMIT from now if it has not ended by then, with one error line.
/// An OS thread, so it fires even when the runtime's only thread is stuck (a store that cannot
/// be dropped, a flush that never returns).
fn watchdog(faulted: bool) {
    let _ = std::thread::Builder::new()
        .name("ekka-exit".into())
        .spawn(move || {
            std::thread::sleep(SHUTDOWN_LIMIT);
            let _held = EXIT.lock().unwrap_or_else(|e| e.into_inner());
            let why = if faulted {
                "a storage fault stopped the node"
            } else {
                "shutdown"
            };
            eprintln!(
                "error: {}: {why}, and it did not finish within {SHUTDOWN_LIMIT:?}; exiting",
                if faulted { "storage" } else { "internal" }
            );
            std::process::exit(1);
        });
}

/// SIGINT and SIGTERM, registered before the node starts so no early signal is lost.
struct Signals {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
        }
    }

    async fn wait(mut self) {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = recv(&mut self.int) => {}
            _ = recv(&mut self.term) => {}
        }
    }
}
