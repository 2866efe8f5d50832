//! Bootstrapping a one-node cluster: a fresh data dir, a reset to a fresh node, or a recovery.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use ekka_types::{fmt_id, ApiError, Command};
use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, ServerState};
use tracing::info;

use crate::error::{internal, unavailable};
use crate::runtime::core::{random_id, Core, Inner};
use crate::runtime::leader::raft_err;

impl Inner {
    /// Makes `core` a one-node cluster and commits its Bootstrap entry.
    pub(crate) async fn bootstrap(&self, core: &Core, keep: Option<u64>) -> Result<(), ApiError> {
        let cluster_id = keep.filter(|c| *c != 0).unwrap_or_else(random_id);
        self.data.set_cluster_id(cluster_id).map_err(internal)?;
        self.cluster_id.store(cluster_id, Ordering::SeqCst);
        let mut nodes = BTreeMap::new();
        nodes.insert(
            core.node_id,
            BasicNode {
                addr: self.addr.clone(),
            },
        );
        match core.raft.initialize(nodes).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(e) => return Err(raft_err(e)),
        }
        core.raft
            .wait(Some(self.cfg.op_timeout))
            .state(ServerState::Leader, "bootstrap leader")
            .await
            .map_err(|e| unavailable(format!("bootstrap: {e}")))?;
        // A restart may find the Bootstrap entry in the log but not applied (the committed
        // index is not flushed with every write): apply the whole log before looking.
        core.raft
            .wait(Some(self.cfg.op_timeout))
            .metrics(
                |m| m.last_applied.map(|l| l.index) >= m.last_log_index,
                "bootstrap leader applied its log",
            )
            .await
            .map_err(|e| unavailable(format!("bootstrap: {e}")))?;
        let bootstrapped = core.state.read().cluster_id != 0;
        if !bootstrapped {
            self.propose_on(
                core,
                Command::Bootstrap {
                    cluster_id,
                    id: core.node_id,
                    name: self.cfg.name.clone(),
                    addr: self.addr.clone(),
                    max_voters: self.cfg.max_voters,
                },
            )
            .await?;
        }
        info!(cluster = %fmt_id(cluster_id), node = %fmt_id(core.node_id), "bootstrapped a one-node cluster");
        Ok(())
    }
}
