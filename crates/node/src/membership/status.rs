//! `cluster status`: this node's view of the cluster, or the leader's when it answers.

use std::collections::BTreeSet;
use std::sync::Arc;

use ekka_proto::pb;
use ekka_types::{ApiError, ClusterStatus, NodeId};

use crate::error::{from_status, internal, unavailable};
use crate::runtime::core::{Core, Inner};
use crate::timings::*;

impl Inner {
    /// The status as this node sees it, or as the leader sees it when `!local` and it answers.
    pub(crate) async fn status(self: &Arc<Self>, local: bool) -> Result<ClusterStatus, ApiError> {
        let core = self.core();
        if !local {
            self.await_leader(&core).await;
        }
        if !local && !self.is_leader(&core) {
            if let Some((_, addr)) = self.leader(&core) {
                if let Ok(mut s) = self.status_at(&addr).await {
                    // The leader's view, reported as this node's answer.
                    s.node_id = core.node_id;
                    s.node_name = self.cfg.name.clone();
                    s.node_addr = self.addr.clone();
                    return Ok(s);
                }
            }
        }
        Ok(self.local_status(&core))
    }

    async fn status_at(&self, addr: &str) -> Result<ClusterStatus, ApiError> {
        let (ch, auth) = self.transport.channel_with_auth(addr).map_err(internal)?;
        let mut c = pb::cluster_client::ClusterClient::with_interceptor(ch, auth);
        let r = tokio::time::timeout(LEADER_STATUS_TIMEOUT, c.status(pb::StatusRequest {}))
            .await
            .map_err(|_| unavailable("leader did not answer"))?
            .map_err(|s| from_status(&s))?;
        ClusterStatus::try_from(r.into_inner()).map_err(internal)
    }

    pub(crate) fn local_status(&self, core: &Core) -> ClusterStatus {
        let m = core.raft.metrics().borrow().clone();
        let st = core.state.read();
        let leader = m
            .current_leader
            .and_then(|id| st.members.get(&id))
            .map(|l| l.name.clone());
        let mut members: Vec<_> = st.members.values().cloned().collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        ClusterStatus {
            cluster_id: st.cluster_id,
            node_id: core.node_id,
            node_name: self.cfg.name.clone(),
            node_addr: self.addr.clone(),
            leader,
            term: m.current_term,
            revision: st.revision,
            members,
            stale: !(self.is_leader(core) && self.check_quorum(core).is_ok()),
        }
    }
}

/// Roles as the leader's Raft configuration has them (for the monitor's reconciliation).
pub(crate) fn raft_roles(core: &Core) -> (BTreeSet<NodeId>, BTreeSet<NodeId>) {
    let m = core.raft.metrics().borrow().membership_config.clone();
    let voters: BTreeSet<NodeId> = m.membership().voter_ids().collect();
    let all: BTreeSet<NodeId> = m.membership().nodes().map(|(id, _)| *id).collect();
    (voters, all)
}
