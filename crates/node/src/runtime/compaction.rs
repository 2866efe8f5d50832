//! Log compaction by bytes. openraft's snapshot policy counts entries only, so with large values
//! the log (and sled's files) grew with the write volume, not with the data. This task snapshots
//! once the log written since the last snapshot passes `NodeConfig::snapshot_log_bytes`, and at
//! every new snapshot (by bytes or by count) purges the log up to the snapshot before it. The log
//! then holds at most about two budgets' worth of entries, whatever the value sizes, and a
//! follower that lags by less than one snapshot interval still catches up from the log.
//! Every node (leader or follower) compacts its own log.

use std::sync::Arc;
use std::time::Instant;

use openraft::LogId;
use tracing::{debug, info};

use crate::runtime::core::{Core, Inner};
use crate::timings::*;

/// Where the node's log and snapshot stand (from openraft's metrics and the log store).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogStats {
    /// Last log index the current snapshot covers.
    pub snapshot_index: Option<u64>,
    /// Last log index deleted from the log.
    pub purged_index: Option<u64>,
    pub last_log_index: Option<u64>,
    /// Encoded bytes of the log entries written since the node (re)opened its store.
    pub appended_bytes: u64,
}

impl LogStats {
    pub(crate) fn of(core: &Core) -> LogStats {
        let m = core.raft.metrics().borrow().clone();
        LogStats {
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            last_log_index: m.last_log_index,
            appended_bytes: core.log.appended_bytes(),
        }
    }
}

/// Runs until shutdown, following the node's current Raft instance.
pub(crate) async fn run(inner: Arc<Inner>) {
    let mut shutdown = inner.shutdown.subscribe();
    loop {
        let core = inner.core();
        tokio::select! {
            _ = compact(&inner, &core) => {}
            _ = shutdown.changed() => return,
        }
        // The instance stopped or was replaced: go on with the next one.
        while Arc::ptr_eq(&inner.core(), &core) {
            tokio::select! {
                _ = tokio::time::sleep(CORE_CHECK_INTERVAL) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Compacts `core`'s log; returns when its Raft instance stopped or the node replaced it.
async fn compact(inner: &Inner, core: &Arc<Core>) {
    let budget = inner.cfg.snapshot_log_bytes;
    let mut metrics = core.raft.metrics();
    let mut applied = core.applied.clone();
    let mut snapshot: Option<LogId<u64>> = metrics.borrow().snapshot;
    // The log store's byte count when the last snapshot was seen.
    let mut mark = core.log.appended_bytes();
    let mut requested: Option<Instant> = None;
    let mut check = tokio::time::interval(CORE_CHECK_INTERVAL);
    loop {
        let now_snapshot = metrics.borrow_and_update().snapshot;
        if now_snapshot > snapshot {
            mark = core.log.appended_bytes();
            requested = None;
            if let Some(prev) = snapshot {
                // openraft purges only what is in a snapshot and not being sent to a follower.
                if core.raft.trigger().purge_log(prev.index).await.is_err() {
                    return;
                }
            }
            snapshot = now_snapshot;
        }
        let since = core.log.appended_bytes().saturating_sub(mark);
        if since >= budget && requested.is_none_or(|t| t.elapsed() >= SNAPSHOT_RETRIGGER_AFTER) {
            info!(
                log_bytes = since,
                budget, "log passed its byte budget: building a snapshot"
            );
            if core.raft.trigger().snapshot().await.is_err() {
                return;
            }
            requested = Some(Instant::now());
        }
        tokio::select! {
            r = applied.changed() => if r.is_err() { return },
            r = metrics.changed() => if r.is_err() { return },
            _ = check.tick() => {
                if !Arc::ptr_eq(&inner.core(), core) {
                    debug!("raft instance replaced: compacting the new one");
                    return;
                }
            }
        }
    }
}
