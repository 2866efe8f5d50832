//! `ekka agent`: runs one node until SIGINT/SIGTERM.

use std::io::Write;

use ekka::{ApiError, Node};
use tracing::warn;

use crate::cli::args::AgentArgs;
use crate::cli::config;

pub async fn run(args: AgentArgs) -> Result<(), ApiError> {
    let cfg = config::load(args)?;
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
    wait_for_signal().await;
    node.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
