//! What a node does as it starts: finish a join a stop interrupted, bootstrap a one-node
//! cluster, or rejoin its cluster, announcing a new address (`announce_loop`) before it campaigns.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ekka_proto::pb;
use ekka_types::{fmt_id, ApiError, ErrorCode, NodeId};
use tracing::{info, warn};

use crate::error::{from_status, internal};
use crate::runtime::core::{Action, Core, Inner};
use crate::timings::*;

use super::identity::recorded_addr;
use super::reset::Reset;

impl Inner {
    pub(crate) async fn after_start(self: &Arc<Self>) -> Result<(), ApiError> {
        let core = self.core();
        let initialized = core.raft.is_initialized().await.map_err(internal)?;
        if let Some(j) = self.data.join_intent().map_err(internal)? {
            if self.cluster_id() == j.to_cluster && !self.is_member(&core) {
                // Stopped in the middle of a join, after the wipe: the cluster may have added
                // this node or not. Ask again (an add of a member is answered as done).
                info!(target = %j.target, cluster = %fmt_id(j.to_cluster), "resuming a join that was interrupted");
                core.raft.runtime_config().elect(true);
                self.joining.store(true, Ordering::SeqCst);
                self.spawn(self.clone().resume_join(j));
                return Ok(());
            }
            // Either the wipe never happened (still the old cluster) or the join completed.
            self.data.set_join_intent(None).map_err(internal)?;
            if !initialized && self.cluster_id() != j.to_cluster {
                // Wiped, but the cluster was never asked: a one-node cluster again.
                core.raft.runtime_config().elect(true);
                return self.bootstrap(&core, Some(j.from_cluster)).await;
            }
        }
        if !initialized && self.cluster_id() == 0 {
            core.raft.runtime_config().elect(true);
            return self.bootstrap(&core, None).await;
        }
        if initialized {
            let n_members = core.n_members();
            let only_self = {
                let m = core.raft.metrics().borrow().membership_config.clone();
                let ids: Vec<NodeId> = m.membership().nodes().map(|(id, _)| *id).collect();
                ids == [core.node_id]
            };
            if n_members == 0 && only_self {
                // Crashed between initialize and the Bootstrap entry: finish it.
                core.raft.runtime_config().elect(true);
                return self.bootstrap(&core, Some(self.cluster_id())).await;
            }
            if n_members > 1 {
                let moved = recorded_addr(&core, core.node_id).is_some_and(|a| a != self.addr);
                if !moved {
                    core.raft.runtime_config().elect(true);
                }
                // On a new address, this node campaigns only once the cluster took its
                // announce (another process may run with its id at the old one), or after
                // `ANNOUNCE_GRACE` without an answer (no leader to ask).
                self.spawn(self.clone().announce_loop(moved));
                return Ok(());
            }
        }
        core.raft.runtime_config().elect(true);
        Ok(())
    }

    /// Tells the cluster this member runs at `self.addr`, until one leader accepts it. With
    /// `gated`, elections stay off until then (or `ANNOUNCE_GRACE`). A refusal because another
    /// process runs with this node id stops this node's Raft core and raises `conflict`.
    async fn announce_loop(self: Arc<Self>, gated: bool) {
        let mut shutdown = self.shutdown.subscribe();
        let mut gated = gated;
        if gated {
            self.open_gate_after_grace();
        }
        // The Raft instance whose membership this loop announces. Once the node resets (a join,
        // e.g. of a cluster recovered from this one, a leave or a removal) the announcement is
        // moot, and an answer to it says nothing about the node's new cluster.
        let mine = self.core();
        loop {
            if !Arc::ptr_eq(&self.core(), &mine) {
                return;
            }
            if self.announce_round(&mine, &mut gated).await {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(ANNOUNCE_EVERY) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Turns elections on after `ANNOUNCE_GRACE`, unless the node shuts down first.
    fn open_gate_after_grace(&self) {
        // Opens the gate after ANNOUNCE_GRACE however long the announces take (a refusal
        // stops the Raft core first).
        let core = self.core();
        let mut shutdown = self.shutdown.subscribe();
        self.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(ANNOUNCE_GRACE) => {}
                _ = shutdown.changed() => return,
            }
            core.raft.runtime_config().elect(true);
        });
    }

    /// Announces `mine`'s address to each other member in turn; true once one answer settles it.
    async fn announce_round(self: &Arc<Self>, mine: &Arc<Core>, gated: &mut bool) -> bool {
        let core = mine.clone();
        let req = self.announce_request(&core);
        let peers = self.peer_addrs(&core);
        for addr in peers {
            let Ok(mut p) = self.transport.peer(&addr, false) else {
                continue;
            };
            match tokio::time::timeout(ANNOUNCE_TIMEOUT, p.announce(req.clone())).await {
                Ok(Ok(_)) => {
                    info!(%addr, "announced this member's address");
                    open_gate(&core, gated);
                    return true;
                }
                Ok(Err(st)) if from_status(&st).code == ErrorCode::NodeNotInCluster => {
                    open_gate(&core, gated);
                    self.reset_as_removed(mine).await;
                    return true;
                }
                Ok(Err(st)) if from_status(&st).code == ErrorCode::InvalidConfig => {
                    // `stop_on_conflict` stops the Raft core.
                    self.conflict.send_replace(Some(from_status(&st).message));
                    return true;
                }
                // Another cluster (e.g. one recovered from ours) answers there: say so, keep
                // everything, try the others.
                Ok(Err(st)) => self.transport.note_refused(&addr, &st),
                _ => {}
            }
        }
        false
    }

    /// The announce of this member's address, incarnation and log end in `core`.
    fn announce_request(&self, core: &Core) -> pb::AnnounceRequest {
        let log_end = core
            .raft
            .metrics()
            .borrow()
            .last_log_index
            .map_or(0, |i| i + 1);
        pb::AnnounceRequest {
            node_id: core.node_id,
            addr: self.addr.clone(),
            incarnation: self.incarnation,
            log_end,
        }
    }

    /// Resets to a fresh node, the cluster having dropped it, unless `mine` is gone or it joins.
    async fn reset_as_removed(self: &Arc<Self>, mine: &Arc<Core>) {
        if Arc::ptr_eq(&self.core(), mine) && !self.joining.load(Ordering::SeqCst) {
            warn!("the cluster no longer has this member: resetting to a fresh node");
            self.run_prepare(Action::Heal);
            match self.reset_if(Some(mine), Reset::Fresh { keep: None }).await {
                Ok(true) => self.run_reboot(),
                Ok(false) => {}
                Err(e) => warn!(error = %e, "reset after removal failed"),
            }
        }
    }

    /// Addresses of the other members, the leader's first.
    fn peer_addrs(&self, core: &Core) -> Vec<String> {
        let leader = core.raft.metrics().borrow().current_leader;
        let st = core.state.read();
        let mut v: Vec<(bool, String)> = st
            .members
            .values()
            .filter(|m| m.id != core.node_id)
            .map(|m| (Some(m.id) != leader, m.addr.clone()))
            .collect();
        v.sort();
        v.into_iter().map(|(_, a)| a).collect()
    }
}

/// Turns elections on in `core` if they are still gated, and ungates.
fn open_gate(core: &Core, gated: &mut bool) {
    if *gated {
        core.raft.runtime_config().elect(true);
        *gated = false;
    }
}
