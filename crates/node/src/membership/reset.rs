//! Wiping this node's Raft state and starting a new Raft instance: to join another cluster, to
//! start over after leaving or being removed.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ekka_types::{ApiError, NodeId};
use tracing::warn;

use crate::error::internal;
use crate::runtime::core::build_core;
use crate::runtime::core::{Action, Core, Inner};

pub(crate) enum Reset {
    /// Wipe and wait to be replicated by `intent.to_cluster`, keeping the node id. The intent is
    /// recorded first, so a node stopped from here on resumes the join when it starts.
    Join { intent: ekka_store::JoinIntent },
    /// Wipe and bootstrap a one-node cluster. `keep` keeps the node id and this cluster id.
    Fresh { keep: Option<u64> },
}

impl Inner {
    /// A member answered one of this node's Raft RPCs with "you were removed" (it was removed
    /// while unreachable): start over as a fresh node; autocluster then rejoins under a new id.
    pub(crate) async fn reset_when_removed(self: Arc<Self>) {
        let mut sig = self.transport.removed_signal();
        let mut shutdown = self.shutdown.subscribe();
        loop {
            tokio::select! {
                r = sig.wait_for(|r| *r) => if r.is_err() { return },
                _ = shutdown.changed() => return,
            }
            warn!(
                "a member says this node was removed from the cluster: resetting to a fresh node"
            );
            if let Err(e) = self
                .reset_and_reboot(Action::Heal, Reset::Fresh { keep: None })
                .await
            {
                warn!(error = %e, "reset after removal failed");
            }
            self.transport.clear_removed();
        }
    }

    /// The leader told this node it was removed: start over as a fresh one-node cluster.
    pub(crate) async fn removed(self: &Arc<Self>, node_id: NodeId) {
        if node_id != self.core().node_id {
            return;
        }
        warn!("this node was removed from the cluster: resetting to a fresh node");
        if let Err(e) = self
            .reset_and_reboot(Action::Leave, Reset::Fresh { keep: None })
            .await
        {
            warn!(error = %e, "reset after removal failed");
        }
    }

    pub(crate) async fn reset_and_reboot(
        self: &Arc<Self>,
        a: Action,
        how: Reset,
    ) -> Result<(), ApiError> {
        self.run_prepare(a);
        self.reset(how).await?;
        self.run_reboot();
        Ok(())
    }

    /// Stops Raft, wipes the data dir's Raft and state-machine data and starts a new instance.
    pub(crate) async fn reset(self: &Arc<Self>, how: Reset) -> Result<(), ApiError> {
        self.reset_if(None, how).await.map(|_| ())
    }

    /// As [`Inner::reset`]; with `expect`, only while that is still this node's Raft instance
    /// and no join is under way (`false`, nothing changed, otherwise).
    pub(crate) async fn reset_if(
        self: &Arc<Self>,
        expect: Option<&Arc<Core>>,
        how: Reset,
    ) -> Result<bool, ApiError> {
        let _r = self.reset_lock.lock().await;
        let old = self.core();
        if let Some(e) = expect {
            if !Arc::ptr_eq(&old, e) || self.joining.load(Ordering::SeqCst) {
                return Ok(false);
            }
        }
        old.raft.shutdown().await.map_err(internal)?;
        let (node_id, fresh, keep) = match how {
            Reset::Join { intent } => {
                let cluster_id = intent.to_cluster;
                self.data.set_join_intent(Some(&intent)).map_err(internal)?;
                self.data.reset().map_err(internal)?;
                self.data.set_node_id(old.node_id).map_err(internal)?;
                self.data.set_cluster_id(cluster_id).map_err(internal)?;
                self.cluster_id.store(cluster_id, Ordering::SeqCst);
                (old.node_id, false, None)
            }
            Reset::Fresh { keep: Some(c) } => {
                self.data.set_join_intent(None).map_err(internal)?;
                self.data.reset().map_err(internal)?;
                self.data.set_node_id(old.node_id).map_err(internal)?;
                (old.node_id, true, Some(c))
            }
            Reset::Fresh { keep: None } => {
                self.data.set_join_intent(None).map_err(internal)?;
                let id = self.data.reset().map_err(internal)?;
                (id, true, None)
            }
        };
        let new = build_core(&self.data, node_id, &self.transport, &self.raft_config).await?;
        *self.core.write() = new.clone();
        if fresh {
            self.bootstrap(&new, keep).await?;
        }
        Ok(true)
    }
}
