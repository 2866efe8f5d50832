//! One node id, one process: the probe at start, refused announces and votes from a copy of a
//! member's data dir, and stopping when the cluster says another process runs as this node.

use std::sync::Arc;

use ekka_proto::pb;
use ekka_types::{fmt_id, ApiError, NodeId};
use tracing::{error, warn};

use crate::runtime::core::{cfg_err, Core, Inner};
use crate::timings::*;
use crate::transport::pool::Transport;

/// The address `core`'s committed state (or, before the state has it, its Raft configuration)
/// records for member `id`.
pub(crate) fn recorded_addr(core: &Core, id: NodeId) -> Option<String> {
    let st = core.state.read();
    if let Some(m) = st.members.get(&id) {
        return Some(m.addr.clone());
    }
    drop(st);
    let m = core.raft.metrics().borrow().membership_config.clone();
    m.membership().get_node(&id).map(|n| n.addr.clone())
}

/// Who answers `Hello` at `addr` within `PROBE_TIMEOUT`; `None` when nothing does.
pub(crate) async fn probe(transport: &Transport, addr: &str) -> Option<pb::HelloReply> {
    let mut p = transport.peer(addr, false).ok()?;
    match tokio::time::timeout(PROBE_TIMEOUT, p.hello(pb::HelloRequest {})).await {
        Ok(Ok(r)) => Some(r.into_inner()),
        _ => None,
    }
}

/// The error of a process refused because another one runs with its node id at `addr`.
pub(crate) fn duplicate_node(id: NodeId, addr: &str) -> ApiError {
    cfg_err(format!(
        "node {} already runs at {addr}: another process has this node id (a copy of its data \
         dir?); two processes cannot be one member. Stop one, or start this one on an empty \
         data dir to join as a new member",
        fmt_id(id)
    ))
}

/// At start, before this process takes part in Raft: when its cluster records it at another
/// address than its own and a process with its node id answers there, it is a copy of a running
/// member and is refused.
pub(crate) async fn check_identity(
    core: &Core,
    addr: &str,
    incarnation: u64,
    transport: &Transport,
) -> Result<(), ApiError> {
    let n_members = core.n_members();
    let n_nodes = core
        .raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .nodes()
        .count();
    if n_members.max(n_nodes) <= 1 {
        return Ok(());
    }
    let Some(recorded) = recorded_addr(core, core.node_id) else {
        return Ok(());
    };
    if recorded == addr {
        return Ok(());
    }
    match probe(transport, &recorded).await {
        Some(h)
            if h.node_id == core.node_id
                && h.cluster_id == transport.cluster_id()
                && h.incarnation != incarnation =>
        {
            Err(duplicate_node(core.node_id, &recorded))
        }
        _ => Ok(()),
    }
}

impl Inner {
    /// Once a member refused this process because another one runs with its node id: stops
    /// taking part in Raft (the embedder is told through `Node::wait_conflict`).
    pub(crate) async fn stop_on_conflict(self: Arc<Self>) {
        let mut rx = self.conflict.subscribe();
        let mut shutdown = self.shutdown.subscribe();
        let msg = tokio::select! {
            r = rx.wait_for(Option::is_some) => match r {
                Ok(m) => m.clone().unwrap_or_default(),
                Err(_) => return,
            },
            _ = shutdown.changed() => return,
        };
        error!(%msg, "refused by the cluster: another process runs with this node id; stopping");
        let core = self.core();
        let _ = tokio::time::timeout(SHUTDOWN_RAFT_LIMIT, core.raft.shutdown()).await;
    }

    /// A vote request from `candidate`, sent by process `incarnation` at `addr`: refused when
    /// that is not the process the cluster knows as `candidate` (this very node, or another
    /// process with that id answering at the recorded address). A refused process is
    /// remembered, so it is probed for once.
    pub(crate) async fn check_candidate(
        &self,
        core: &Core,
        candidate: NodeId,
        incarnation: u64,
        addr: &str,
    ) -> Result<(), ApiError> {
        if candidate == core.node_id {
            if incarnation != self.incarnation {
                return Err(duplicate_node(candidate, &self.addr));
            }
            return Ok(());
        }
        let Some(recorded) = recorded_addr(core, candidate) else {
            return Ok(());
        };
        if recorded == addr {
            return Ok(());
        }
        let mut dup = self.duplicates.lock().contains(&(candidate, incarnation));
        if !dup {
            dup = probe(&self.transport, &recorded).await.is_some_and(|h| {
                h.node_id == candidate
                    && h.cluster_id == self.cluster_id()
                    && h.incarnation != incarnation
            });
            // Only a refusal is remembered: a probe that found no one (or timed out on a loaded
            // machine) is tried again at the next vote request.
            if dup {
                let mut m = self.duplicates.lock();
                if m.len() >= 1024 {
                    m.clear();
                }
                m.insert((candidate, incarnation));
            }
        }
        if dup {
            warn!(id = %fmt_id(candidate), %recorded, %addr, "refusing a vote request: another process with this node id answers at its address");
            return Err(duplicate_node(candidate, &recorded));
        }
        Ok(())
    }

    /// Refuses an announce from a process that is not the one the cluster knows as that member:
    /// this leader itself (same id, another incarnation), or, for an address change, a process
    /// with that id still answering at the recorded address.
    pub(crate) async fn check_announcer(
        &self,
        core: &Core,
        req: &pb::AnnounceRequest,
    ) -> Result<(), ApiError> {
        if req.node_id == core.node_id {
            if req.incarnation != self.incarnation {
                return Err(duplicate_node(req.node_id, &self.addr));
            }
            return Ok(());
        }
        let Some(recorded) = recorded_addr(core, req.node_id) else {
            return Ok(());
        };
        if recorded == req.addr {
            return Ok(());
        }
        // A member acknowledges only entries it has made durable, so a process whose log ends
        // below what this leader saw the member acknowledge is an older copy of its data dir (a
        // follower's log may not go back: openraft's leader would stop on it).
        let matched = core
            .raft
            .metrics()
            .borrow()
            .replication
            .as_ref()
            .and_then(|r| r.get(&req.node_id).cloned())
            .flatten()
            .map(|l| l.index);
        if let Some(m) = matched.filter(|_| req.incarnation != 0) {
            if req.log_end <= m {
                warn!(id = %fmt_id(req.node_id), %recorded, new = %req.addr, log_end = req.log_end, matched = m, "refusing an announce: the process's log ends below what the member acknowledged");
                return Err(cfg_err(format!(
                    "node {} acknowledged log entries up to {m}, but this process's log ends \
                     at {}: its data dir is an older copy of that member's. Start it on an \
                     empty data dir to join as a new member",
                    fmt_id(req.node_id),
                    req.log_end
                )));
            }
        }
        match probe(&self.transport, &recorded).await {
            Some(h)
                if h.node_id == req.node_id
                    && h.cluster_id == self.cluster_id()
                    && h.incarnation != req.incarnation =>
            {
                warn!(id = %fmt_id(req.node_id), %recorded, new = %req.addr, "refusing an announce: another process with this node id answers at its address");
                Err(duplicate_node(req.node_id, &recorded))
            }
            _ => Ok(()),
        }
    }
}
