//! `ekka agent`: runs one node until SIGINT/SIGTERM.

use std::io::Write;

use ekka::{ApiError, Node};
use tracing::warn;

use crate::cli::args::AgentArgs;
use crate::cli::config;

pub async fn run(args: AgentArgs) -> Result<(), ApiError> {
    let cfg = config::load(args)?;
    let signals = Signals::new();
    if cfg.default_cookie {
        warn!("no cookie configured: using the default cookie; set --cookie or EKKA_COOKIE");
    }
    let node = Node::start(cfg.node).await?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {}", node.local_addr());
        let _ = out.flush();
    }
    if let Some(h) = &cfg.http {
        let bound = crate::cli::http::spawn(h, node.clone()).await?;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "http on {bound}");
        let _ = out.flush();
    }
    signals.wait().await;
    node.shutdown().await;
    Ok(())
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
