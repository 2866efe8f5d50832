//! Storage faults: a data dir that stopped taking writes (disk full, read-only, I/O error) fails
//! the node for good.
//!
//! When a store write or flush fails, openraft's core stops with a storage error
//! (`RaftMetrics::running_state`), or the store's flusher reports the failed flush; a Raft member that cannot persist its log or vote must not go
//! on (etcd panics on a failed fsync). [`watch`] notices and records the fault on the node, which
//! then answers every request with `storage` (or `outcome_unknown` for a write already proposed),
//! and `Node::wait_fault` tells the embedder (the agent exits). Nothing is retried: what sled
//! holds after a failed write is known again only after a restart, which replays the durable log.

use std::sync::Arc;

use ekka_types::{ApiError, ErrorCode};
use openraft::error::Fatal;
use tracing::error;

use crate::runtime::core::{Core, Inner};
use crate::timings::*;

/// The fault of `core`: it stopped on a storage error (or a panic), or a flush of its store
/// failed (which stops it at its next write or apply; a follower may not write for a while).
pub(crate) fn core_fault(core: &Core) -> Option<String> {
    let stopped = match &core.raft.metrics().borrow().running_state {
        Err(Fatal::StorageError(e)) => Some(e.to_string()),
        Err(Fatal::Panicked) => Some("the raft core panicked".into()),
        _ => None,
    };
    stopped.or_else(|| {
        core.log
            .flush_failure()
            .map(|e| format!("flush failed: {e}"))
    })
}

impl Inner {
    /// The storage fault of this node (`<data dir>: <cause>`), if any. Looks at the current core
    /// too, so a fault shows here as soon as openraft reports it, before the watcher runs.
    pub(crate) fn fault(&self) -> Option<String> {
        if let Some(f) = self.fault.borrow().clone() {
            return Some(f);
        }
        let core = self.core();
        let cause = core_fault(&core)?;
        Some(self.set_fault(&core, &cause))
    }

    /// Fails fast with `storage` when the node has a storage fault.
    pub(crate) fn check_fault(&self) -> Result<(), ApiError> {
        match self.fault() {
            Some(f) => Err(ApiError::new(ErrorCode::Storage, f)),
            None => Ok(()),
        }
    }

    /// Records the fault (the first one wins) and returns it.
    fn set_fault(&self, core: &Arc<Core>, cause: &str) -> String {
        let msg = format!("{}: {cause}", self.cfg.data_dir.display());
        let mut first = false;
        self.fault.send_if_modified(|f| {
            if f.is_some() {
                return false;
            }
            *f = Some(msg.clone());
            first = true;
            true
        });
        if first {
            error!(path = %self.cfg.data_dir.display(), error = %cause, "storage fault: this node serves nothing more; restart it once the disk is fixed");
            // sled 0.34 flushes when its last handle is dropped, and after a failed write that
            // flush waits forever for a buffer it can never write: dropping the stores would
            // block the thread that drops them (the agent's only runtime thread, so SIGTERM went
            // unanswered). The stores of a failed core are never dropped; the process's exit
            // frees them, and the next start reads only what was durable.
            std::mem::forget(core.clone());
        }
        self.fault.borrow().clone().unwrap_or(msg)
    }
}

/// Watches the current core until it stops with a fault (or the node shuts down), and records it.
pub(crate) async fn watch(inner: Arc<Inner>) {
    let mut shutdown = inner.shutdown.subscribe();
    loop {
        let core = inner.core();
        if let Some(cause) = core_fault(&core) {
            inner.set_fault(&core, &cause);
            return;
        }
        let mut metrics = core.raft.metrics();
        let stopped = async {
            let stopped_now = tokio::time::timeout(FAULT_POLL, async {
                let _ = metrics.wait_for(|m| m.running_state.is_err()).await;
            })
            .await
            .is_ok();
            if stopped_now && core_fault(&core).is_none() {
                // Stopped on purpose (a reset replaces it, or the node shuts down).
                tokio::time::sleep(FAULT_POLL).await;
            }
        };
        tokio::select! {
            _ = stopped => {}
            _ = shutdown.changed() => return,
        }
    }
}
