//! The leader's side of membership: adding a member (and finishing its join), promotions and
//! voter replacement, announces, and removals.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ekka_proto::pb;
use ekka_types::{
    fmt_id, ApiError, ClusterState, Command, ErrorCode, Member, NodeId, RemoveReason, Status,
};
use openraft::{BasicNode, ChangeMembers};
use tracing::{info, warn};

use crate::error::{from_reject, internal, unavailable};
use crate::runtime::core::{Core, Inner};
use crate::runtime::leader::{raft_err, write_err};
use crate::timings::*;

impl Inner {
    pub(crate) async fn add_member(
        self: &Arc<Self>,
        req: pb::AddMemberRequest,
        forwarded: bool,
    ) -> Result<pb::AddMemberReply, ApiError> {
        if self.joining.load(Ordering::SeqCst) {
            return Err(unavailable("busy: this node is joining another cluster"));
        }
        if self.cfg.singleton {
            return Err(ApiError::new(
                ErrorCode::Singleton,
                "this node uses singleton discovery",
            ));
        }
        ekka_types::check::check_name(&req.name)
            .and_then(|_| ekka_types::check::check_addr(&req.addr))
            .map_err(|m| ApiError::new(ErrorCode::InvalidArgument, m))?;
        let me = self.clone();
        let r2 = req.clone();
        self.via_leader(
            forwarded,
            !req.dry_run,
            // In a task of its own: a joiner that goes away mid-request must not cut the change
            // off half-way (record added, Raft learner not).
            |core| async move {
                me.clone()
                    .spawn(async move { me.leader_add_member(core, r2).await })
                    .await
                    .map_err(internal)?
            },
            |mut p| {
                let req = req.clone();
                async move { p.add_member(req).await }
            },
        )
        .await
    }

    pub(crate) async fn leader_add_member(
        self: &Arc<Self>,
        core: Arc<Core>,
        req: pb::AddMemberRequest,
    ) -> Result<pb::AddMemberReply, ApiError> {
        let guard = self.op_lock.lock().await;
        let st = core.state.read().membership();
        let reply = |revision| pb::AddMemberReply {
            cluster_id: st.cluster_id,
            revision,
        };
        if let Some(m) = st.members.get(&req.node_id) {
            if m.name != req.name {
                return Err(ApiError::new(
                    ErrorCode::InvalidArgument,
                    format!("id {} belongs to {}", fmt_id(m.id), m.name),
                ));
            }
            if req.dry_run {
                return Ok(reply(st.revision));
            }
        }
        let gone = left_namesake(&core, &st, &req);
        if let Some(id) = gone.filter(|_| !req.dry_run) {
            // A member that left (a leader leaving itself) keeps its record until a monitor
            // round drops it: dropped here, so its name can join again at once.
            let reason = RemoveReason::Left;
            self.propose_on(&core, Command::RemoveMember { id, reason })
                .await?;
        }
        let old = down_namesake(&st, &req, gone)?;
        let plan = match &old {
            Some(o) => Some(st.plan_remove(o.id).map_err(from_reject)?),
            None => None,
        };
        if req.dry_run {
            tokio::time::timeout(self.cfg.op_timeout, core.raft.ensure_linearizable())
                .await
                .map_err(|_| unavailable("no quorum"))?
                .map_err(raft_err)?;
            return Ok(reply(st.revision));
        }
        if let (Some(o), Some(plan)) = (&old, &plan) {
            info!(name = %o.name, old = %fmt_id(o.id), "replacing a down member of the same name");
            self.remove_from_raft(&core, o.id, plan).await?;
        }
        let resp = self
            .propose_on(
                &core,
                Command::AddMember {
                    id: req.node_id,
                    name: req.name.clone(),
                    addr: req.addr.clone(),
                },
            )
            .await?;
        let added_at = self.add_learner(&core, &req).await?;
        drop(guard);
        info!(name = %req.name, id = %fmt_id(req.node_id), addr = %req.addr, "added learner");
        self.spawn(self.clone().finish_join(core, req.node_id, added_at));
        Ok(reply(resp.revision))
    }

    /// Adds the joiner of `req` as a Raft learner; returns the log index of that change.
    async fn add_learner(&self, core: &Core, req: &pb::AddMemberRequest) -> Result<u64, ApiError> {
        let fut = core.raft.add_learner(
            req.node_id,
            BasicNode {
                addr: req.addr.clone(),
            },
            false,
        );
        let added = tokio::time::timeout(self.cfg.op_timeout, fut)
            .await
            .map_err(|_| unavailable("no quorum: adding the learner did not commit"))?
            .map_err(write_err)?;
        Ok(added.log_id.index)
    }

    /// Once the new learner has caught up: promote learners if a voter seat is free, then mark
    /// the new member up (so when the joiner sees itself up, roles are settled).
    pub(crate) async fn finish_join(self: Arc<Self>, core: Arc<Core>, id: NodeId, log_idx: u64) {
        let caught_up = core
            .raft
            .wait(Some(self.cfg.op_timeout))
            .metrics(
                |m| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(&id))
                        .and_then(|l| l.as_ref())
                        .is_some_and(|l| l.index >= log_idx)
                },
                "learner caught up",
            )
            .await;
        if let Err(e) = caught_up {
            warn!(id = %fmt_id(id), error = %e, "new member did not catch up; the monitor will retry");
            return;
        }
        let _guard = self.op_lock.lock().await;
        let mut st = core.state.read().membership();
        match st.members.get_mut(&id) {
            Some(m) => m.status = Status::Up,
            None => return,
        }
        if let Err(e) = self.promote(&core, &st).await {
            warn!(error = %e, "promotion failed");
        }
        if let Err(e) = self
            .propose_on(&core, Command::MarkUp { id, addr: None })
            .await
        {
            warn!(error = %e, "marking the new member up failed");
        }
    }

    /// Makes `voters` the voter set; voters left out stay as learners. Caller holds `op_lock`.
    pub(crate) async fn replace_voters(
        &self,
        core: &Core,
        voters: BTreeSet<NodeId>,
    ) -> Result<(), ApiError> {
        self.change_membership(core, ChangeMembers::ReplaceAllVoters(voters), true)
            .await
    }

    /// Promotes the learners `st` says should be voters. Caller holds `op_lock`.
    pub(crate) async fn promote(
        &self,
        core: &Core,
        st: &ekka_types::ClusterState,
    ) -> Result<(), ApiError> {
        let ids: BTreeSet<NodeId> = st
            .learners_to_promote()
            .into_iter()
            .filter(|id| Self::in_raft_config(core, *id))
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        info!(ids = ?ids.iter().map(|i| fmt_id(*i)).collect::<Vec<_>>(), "promoting learners to voters");
        self.change_membership(core, ChangeMembers::AddVoterIds(ids), false)
            .await
    }

    pub(crate) async fn announce(
        self: &Arc<Self>,
        req: pb::AnnounceRequest,
        forwarded: bool,
    ) -> Result<pb::AnnounceReply, ApiError> {
        ekka_types::check::check_addr(&req.addr)
            .map_err(|m| ApiError::new(ErrorCode::InvalidArgument, m))?;
        let me = self.clone();
        let r2 = req.clone();
        self.via_leader(
            forwarded,
            true,
            |core| async move {
                let known = core.state.read().members.contains_key(&r2.node_id);
                if !known {
                    return Err(ApiError::new(
                        ErrorCode::NodeNotInCluster,
                        format!("{} is not a member", fmt_id(r2.node_id)),
                    ));
                }
                me.check_announcer(&core, &r2).await?;
                // An announce is an answer: the monitor must not mark it down meanwhile.
                me.transport.record_ok(r2.node_id);
                let resp = me
                    .propose_on(
                        &core,
                        Command::MarkUp {
                            id: r2.node_id,
                            addr: Some(r2.addr),
                        },
                    )
                    .await?;
                Ok(pb::AnnounceReply {
                    revision: resp.revision,
                })
            },
            |mut p| {
                let req = req.clone();
                async move { p.announce(req).await }
            },
        )
        .await
    }

    pub(crate) async fn remove_member(
        self: &Arc<Self>,
        req: pb::RemoveMemberRequest,
        forwarded: bool,
    ) -> Result<pb::RemoveMemberReply, ApiError> {
        let me = self.clone();
        let r2 = req;
        self.via_leader(
            forwarded,
            true,
            |core| async move { me.leader_remove_member(core, r2.node_id, r2.leave).await },
            |mut p| async move { p.remove_member(req).await },
        )
        .await
    }

    pub(crate) async fn leader_remove_member(
        self: &Arc<Self>,
        core: Arc<Core>,
        id: NodeId,
        leave: bool,
    ) -> Result<pb::RemoveMemberReply, ApiError> {
        let guard = self.op_lock.lock().await;
        let st = core.state.read().membership();
        let member = st
            .members
            .get(&id)
            .cloned()
            .ok_or_else(|| ApiError::new(ErrorCode::NodeNotInCluster, "no such member"))?;
        let plan = st.plan_remove(id).map_err(from_reject)?;
        if leave {
            self.propose_on(&core, Command::MarkLeaving { id }).await?;
        }
        self.remove_from_raft(&core, id, &plan).await?;
        if id == core.node_id {
            // A leader may remove itself: openraft keeps it leading until the configuration
            // without it commits, then it steps down; the next leader's monitor drops the record.
            drop(guard);
            info!("the leader removed itself from the raft configuration");
            if !leave {
                // Force-removed: nobody will send to it again, so it starts over by itself (a
                // leaving node does so in `leave`).
                let me = self.clone();
                self.spawn(async move { me.removed(id).await });
            }
            return Ok(pb::RemoveMemberReply {
                revision: core.state.read().revision,
            });
        }
        let reason = if leave {
            RemoveReason::Left
        } else {
            RemoveReason::Removed
        };
        let resp = self
            .propose_on(&core, Command::RemoveMember { id, reason })
            .await?;
        info!(name = %member.name, id = %fmt_id(id), ?reason, "removed member");
        if !leave && member.status != Status::Down {
            let t = self.transport.clone();
            self.spawn(async move {
                if let Ok(mut p) = t.peer(&member.addr, false) {
                    let n = pb::RemovedNotice { node_id: id };
                    let _ = tokio::time::timeout(REMOVED_NOTICE_TIMEOUT, p.removed(n)).await;
                }
            });
        }
        Ok(pb::RemoveMemberReply {
            revision: resp.revision,
        })
    }
}

/// The other member named as `req`'s joiner that has left: `leaving`, and out of the Raft
/// configuration already.
fn left_namesake(core: &Core, st: &ClusterState, req: &pb::AddMemberRequest) -> Option<NodeId> {
    st.member_by_name(&req.name)
        .filter(|m| m.id != req.node_id && m.status == Status::Leaving)
        .filter(|m| !Inner::in_raft_config(core, m.id))
        .map(|m| m.id)
}

/// The other member named as `req`'s joiner, which the joiner replaces; refused unless it is down
/// (or is `left`, a record about to go).
fn down_namesake(
    st: &ClusterState,
    req: &pb::AddMemberRequest,
    left: Option<NodeId>,
) -> Result<Option<Member>, ApiError> {
    let old = st
        .member_by_name(&req.name)
        .filter(|m| m.id != req.node_id && Some(m.id) != left)
        .cloned();
    if let Some(o) = &old {
        if o.status != Status::Down {
            return Err(from_reject(ekka_types::Reject::NameInUse {
                name: req.name.clone(),
            }));
        }
    }
    Ok(old)
}
