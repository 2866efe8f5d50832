//! The addressed node's side of membership: hello, join (and its retries), leave, force-leave.

use rand::Rng;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ekka_proto::pb;
use ekka_types::{fmt_id, parse_id, ApiError, ErrorCode, NodeId, Status};
use tracing::{info, warn};

use crate::error::{from_reject, from_status, internal, outcome_unknown, unavailable};
use crate::runtime::core::{Action, Core, Inner};
use crate::runtime::leader::retryable;

use super::reset::Reset;
use crate::timings::*;

/// The result of `join`: joined, or ekka's `ignore` with a reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JoinOutcome {
    Joined { cluster_id: u64 },
    Ignored(String),
}

/// The result of `force_leave`: removed, or ekka's `ignore` with a reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForceLeaveOutcome {
    Removed,
    Ignored(String),
}

impl Inner {
    /// Whether `core`'s state has this node as a member of its cluster.
    pub(crate) fn is_member(&self, core: &Core) -> bool {
        let st = core.state.read();
        st.cluster_id == self.cluster_id() && st.members.contains_key(&core.node_id)
    }

    /// Finishes a join interrupted by a stop after this node wiped itself: asks `j.target` to add
    /// it again until that is done (or until the node is a member anyway, the cluster having
    /// added it before the stop), then waits to be up. If the cluster refuses it for good, or
    /// `j.target` belongs to another cluster now, it becomes its one-node cluster again.
    pub(crate) async fn resume_join(self: Arc<Self>, j: ekka_store::JoinIntent) {
        let mut shutdown = self.shutdown.subscribe();
        let mut delay = RESUME_FIRST_PAUSE;
        let outcome: Result<(), ApiError> = loop {
            let core = self.core();
            if self.is_member(&core) {
                break Ok(());
            }
            let r = match self.hello_at(&j.target).await {
                Ok(h) if h.cluster_id != j.to_cluster => Err(ApiError::new(
                    ErrorCode::NodeNotInCluster,
                    format!(
                        "{} is in cluster {} now, not {}",
                        j.target,
                        fmt_id(h.cluster_id),
                        fmt_id(j.to_cluster)
                    ),
                )),
                Ok(_) => {
                    let req = pb::AddMemberRequest {
                        node_id: core.node_id,
                        name: self.cfg.name.clone(),
                        addr: self.addr.clone(),
                        from_cluster_id: j.from_cluster,
                        dry_run: false,
                    };
                    self.add_at(&j.target, req).await.map(|_| ())
                }
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => break Ok(()),
                Err(e) if retryable(&e) || e.code == ErrorCode::NodeDown => {
                    info!(error = %e, "resuming the join: trying again");
                }
                Err(e) => break Err(e),
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return,
            }
            delay = (delay * 2).min(RESUME_MAX_PAUSE);
        };
        match outcome {
            Ok(()) => {
                let mut rx = self.core().applied.clone();
                loop {
                    if self.is_member(&self.core()) {
                        break;
                    }
                    tokio::select! {
                        r = rx.changed() => if r.is_err() { return },
                        _ = shutdown.changed() => return,
                    }
                }
                self.joining.store(false, Ordering::SeqCst);
                if let Err(e) = self.data.set_join_intent(None) {
                    warn!(error = %e, "clearing the finished join");
                }
                self.run_reboot();
                info!(cluster = %fmt_id(j.to_cluster), "joined (resumed)");
            }
            Err(e) => {
                warn!(error = %e, "the interrupted join cannot be finished: back to a one-node cluster");
                self.joining.store(false, Ordering::SeqCst);
                if let Err(e) = self
                    .reset_and_reboot(
                        Action::Heal,
                        Reset::Fresh {
                            keep: Some(j.from_cluster),
                        },
                    )
                    .await
                {
                    warn!(error = %e, "reset after a failed join");
                }
            }
        }
    }

    pub(crate) async fn hello(&self) -> pb::HelloReply {
        let core = self.core();
        let n = core.state.read().members.len();
        pb::HelloReply {
            node_id: core.node_id,
            name: self.cfg.name.clone(),
            addr: self.addr.clone(),
            cluster_id: self.cluster_id(),
            n_members: n as u32,
            singleton: self.cfg.singleton,
            joining: self.joining.load(Ordering::SeqCst),
            recovered_from: self.data.recovered_from(),
            incarnation: self.incarnation,
        }
    }

    pub(crate) async fn join(self: &Arc<Self>, addr: &str) -> Result<JoinOutcome, ApiError> {
        self.check_fault()?;
        self.join_as(addr, false, false).await
    }

    /// Joins the cluster of `addr`. With `heal`, a member of a cluster of several nodes drops out
    /// of it to join (autoheal); otherwise that is `in_other_cluster`.
    /// `auto`: the autocluster loop asks; such a join is dropped once `leave` has disabled it.
    pub(crate) async fn join_as(
        self: &Arc<Self>,
        addr: &str,
        heal: bool,
        auto: bool,
    ) -> Result<JoinOutcome, ApiError> {
        if self.cfg.singleton {
            return Err(ApiError::new(
                ErrorCode::Singleton,
                "this node uses singleton discovery",
            ));
        }
        ekka_types::check::check_addr(addr)
            .map_err(|m| ApiError::new(ErrorCode::InvalidArgument, m))?;
        if addr == self.addr || addr == self.local_addr.to_string() {
            return Ok(JoinOutcome::Ignored("cannot join itself".into()));
        }
        let deadline = Instant::now() + self.cfg.op_timeout;
        loop {
            match self.try_join(addr, heal, auto).await {
                Err(e) if retryable(&e) && Instant::now() < deadline => {
                    let ms = rand::thread_rng().gen_range(20..200);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                other => return other,
            }
        }
    }

    pub(crate) async fn hello_at(&self, addr: &str) -> Result<pb::HelloReply, ApiError> {
        let mut p = self
            .transport
            .peer(addr, false)
            .map_err(|e| ApiError::new(ErrorCode::InvalidArgument, e.to_string()))?;
        match tokio::time::timeout(HELLO_TIMEOUT, p.hello(pb::HelloRequest {})).await {
            Err(_) => Err(ApiError::new(
                ErrorCode::NodeDown,
                format!("nothing answers at {addr}"),
            )),
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(st))
                if st.code() == tonic::Code::Unavailable
                    && st.metadata().get(ekka_proto::ERROR_HEADER).is_none() =>
            {
                Err(ApiError::new(
                    ErrorCode::NodeDown,
                    format!("nothing answers at {addr}"),
                ))
            }
            Ok(Err(st)) => Err(from_status(&st)),
        }
    }

    /// One attempt at joining; `unavailable` errors are retried by the caller.
    pub(crate) async fn try_join(
        self: &Arc<Self>,
        addr: &str,
        heal: bool,
        auto: bool,
    ) -> Result<JoinOutcome, ApiError> {
        let hello = self.hello_at(addr).await?;
        let core = self.core();
        if hello.node_id == core.node_id {
            return Ok(JoinOutcome::Ignored("cannot join itself".into()));
        }
        if hello.singleton {
            return Err(ApiError::new(
                ErrorCode::Singleton,
                format!("{addr} uses singleton discovery"),
            ));
        }
        let my_cluster = self.cluster_id();
        self.check_target(addr, &hello, my_cluster)?;
        let heal = heal || self.superseded_by(addr, &hello, my_cluster, heal);
        self.check_own_cluster(&core, &hello, my_cluster, heal)?;
        if self
            .joining
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Err(unavailable("another join of this node is in progress"));
        }
        // `leave` clears the flag before it resets this node, so a round that began while this
        // node was still a member cannot carry it back in once it is a fresh one-node cluster.
        if auto && !self.autocluster.load(Ordering::SeqCst) {
            self.joining.store(false, Ordering::SeqCst);
            return Ok(JoinOutcome::Ignored(
                "autocluster is disabled (left)".into(),
            ));
        }
        let r = self.join_holding_flag(addr, my_cluster, heal).await;
        self.joining.store(false, Ordering::SeqCst);
        r
    }

    /// Refuses a target in this node's cluster, busy joining, or in the one this one replaced.
    fn check_target(
        &self,
        addr: &str,
        hello: &pb::HelloReply,
        my_cluster: u64,
    ) -> Result<(), ApiError> {
        if hello.cluster_id != 0 && hello.cluster_id == my_cluster {
            return Err(self.already_together(&hello.name, my_cluster));
        }
        if hello.joining || hello.cluster_id == 0 {
            return Err(unavailable(format!("{addr} is busy joining a cluster")));
        }
        let replaced = self.recovered_from();
        if replaced != 0 && hello.cluster_id == replaced {
            // Joining would wipe the recovered cluster's only copy into the one it replaced.
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "{} is in cluster {}, which this node's cluster was recovered from \
                     (`ekka cluster recover`); join {} to this node instead",
                    hello.name,
                    fmt_id(replaced),
                    hello.name
                ),
            ));
        }
        Ok(())
    }

    /// Whether the target's cluster was recovered from this node's, logging so unless `heal`.
    fn superseded_by(
        &self,
        addr: &str,
        hello: &pb::HelloReply,
        my_cluster: u64,
        heal: bool,
    ) -> bool {
        // The target's cluster was recovered (`ekka cluster recover`) from this node's: this
        // node's cluster is a generation the operator gave up on, so it may be left behind
        // whatever its size, as autoheal leaves a cluster (the target may even be in its members).
        let superseded = my_cluster != 0 && hello.recovered_from == my_cluster;
        if superseded && !heal {
            info!(
                %addr,
                old = %fmt_id(my_cluster),
                new = %fmt_id(hello.cluster_id),
                "joining the cluster recovered from this node's cluster: dropping this node's copy of the old one"
            );
        }
        superseded
    }

    /// Unless `heal`, refuses to join while this node's cluster has the target or other members.
    fn check_own_cluster(
        &self,
        core: &Core,
        hello: &pb::HelloReply,
        my_cluster: u64,
        heal: bool,
    ) -> Result<(), ApiError> {
        let (n_members, has_target) = {
            let st = core.state.read();
            (st.members.len(), st.members.contains_key(&hello.node_id))
        };
        if has_target && !heal {
            // The target joined this node's cluster while our hello was in flight. (When
            // healing, this node's view of its old cluster is stale and says nothing.)
            return Err(self.already_together(&hello.name, my_cluster));
        }
        if n_members > 1 && !heal {
            return Err(ApiError::new(
                ErrorCode::InOtherCluster,
                format!(
                    "this node belongs to cluster {} with {n_members} members; leave it first",
                    fmt_id(my_cluster)
                ),
            ));
        }
        Ok(())
    }

    pub(crate) async fn join_holding_flag(
        self: &Arc<Self>,
        addr: &str,
        my_cluster: u64,
        heal: bool,
    ) -> Result<JoinOutcome, ApiError> {
        // Let any add of another node to this one finish, then look again.
        drop(self.op_lock.lock().await);
        let core = self.core();
        if !heal && core.state.read().members.len() > 1 {
            return Err(unavailable("this node gained a member meanwhile"));
        }
        let mut req = pb::AddMemberRequest {
            node_id: core.node_id,
            name: self.cfg.name.clone(),
            addr: self.addr.clone(),
            from_cluster_id: my_cluster,
            dry_run: true,
        };
        let check = self.add_at(addr, req.clone()).await?;
        self.run_prepare(if heal { Action::Heal } else { Action::Join });
        info!(%addr, cluster = %fmt_id(check.cluster_id), "joining: dropping this node's one-node cluster");
        self.reset(Reset::Join {
            intent: ekka_store::JoinIntent {
                target: addr.to_string(),
                from_cluster: my_cluster,
                to_cluster: check.cluster_id,
            },
        })
        .await?;
        req.dry_run = false;
        let deadline = Instant::now() + self.cfg.op_timeout;
        let (added, unknown) = self.add_with_retry(addr, &req, deadline).await;
        if let Err(e) = &added {
            // The cluster may have added this node: restoring the one-node cluster would leave
            // a member that never comes. Finish the join in the background, as after a restart.
            if unknown || e.code == ErrorCode::OutcomeUnknown {
                self.join_in_background(addr, e)?;
            }
        }
        if let Err(e) = added {
            warn!(error = %e, "join failed after the check; restoring the one-node cluster");
            self.reset(Reset::Fresh {
                keep: Some(my_cluster),
            })
            .await?;
            return Err(e);
        }
        self.wait_self_up(deadline).await?;
        self.data.set_join_intent(None).map_err(internal)?;
        self.run_reboot();
        info!(cluster = %fmt_id(check.cluster_id), "joined");
        Ok(JoinOutcome::Joined {
            cluster_id: check.cluster_id,
        })
    }

    /// Asks `addr` to add this node until done or `deadline`, and says if any try went unknown.
    async fn add_with_retry(
        &self,
        addr: &str,
        req: &pb::AddMemberRequest,
        deadline: Instant,
    ) -> (Result<pb::AddMemberReply, ApiError>, bool) {
        let mut unknown = false;
        let added = loop {
            match self.add_at(addr, req.clone()).await {
                Err(e) if retryable(&e) && Instant::now() < deadline => {
                    unknown |= e.code == ErrorCode::OutcomeUnknown;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                other => break other,
            }
        };
        (added, unknown)
    }

    /// If the join intent is recorded, resumes it in the background and errs `outcome_unknown`.
    fn join_in_background(self: &Arc<Self>, addr: &str, e: &ApiError) -> Result<(), ApiError> {
        let intent = self.data.join_intent().map_err(internal)?;
        if let Some(j) = intent {
            warn!(error = %e, "the join's outcome is unknown; finishing it in the background");
            self.spawn(self.clone().resume_join(j));
            return Err(outcome_unknown(format!(
                "the cluster at {addr} may have added this node ({}); the join goes on \
                 in the background",
                e.message
            )));
        }
        Ok(())
    }

    pub(crate) async fn add_at(
        &self,
        addr: &str,
        req: pb::AddMemberRequest,
    ) -> Result<pb::AddMemberReply, ApiError> {
        let mut p = self.transport.peer(addr, false).map_err(internal)?;
        match tokio::time::timeout(self.cfg.op_timeout, p.add_member(req)).await {
            Err(_) => Err(unavailable(format!("{addr} did not answer in time"))),
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(st)) => Err(from_status(&st)),
        }
    }

    pub(crate) async fn wait_self_up(&self, deadline: Instant) -> Result<(), ApiError> {
        let core = self.core();
        let mut rx = core.applied.clone();
        let up = async {
            loop {
                let is_up = core
                    .state
                    .read()
                    .members
                    .get(&core.node_id)
                    .is_some_and(|m| m.status == Status::Up);
                if is_up {
                    return;
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout_at(deadline.into(), up)
            .await
            .map_err(|_| unavailable("added to the cluster but not yet caught up"))
    }

    pub(crate) async fn leave(self: &Arc<Self>) -> Result<(), ApiError> {
        self.check_fault()?;
        let core = self.core();
        let st = core.state.read().membership();
        if st.members.len() <= 1 {
            return Err(ApiError::new(
                ErrorCode::NodeNotInCluster,
                "this node is not in a cluster with other members",
            ));
        }
        st.plan_remove(core.node_id).map_err(from_reject)?;
        // An autoclustered node that leaves stays out: stop the loop and unregister.
        self.autocluster.store(false, Ordering::SeqCst);
        if let Some(d) = &self.cfg.discovery {
            if let Err(e) = d.0.unregister().await {
                warn!(error = %e, "unregister on leave");
            }
        }
        self.run_prepare(Action::Leave);
        self.remove_with_retry(core.node_id, true).await?;
        self.reset(Reset::Fresh { keep: None }).await?;
        self.run_reboot();
        info!("left the cluster");
        Ok(())
    }

    pub(crate) async fn force_leave(
        self: &Arc<Self>,
        name: &str,
    ) -> Result<ForceLeaveOutcome, ApiError> {
        self.check_fault()?;
        let core = self.core();
        let target = {
            let st = core.state.read();
            st.member_by_name(name)
                .or_else(|| parse_id(name).and_then(|id| st.members.get(&id)))
                .map(|m| m.id)
        };
        let Some(id) = target else {
            return Err(ApiError::new(
                ErrorCode::NodeNotInCluster,
                format!("{name} is not a member"),
            ));
        };
        if id == core.node_id {
            return Ok(ForceLeaveOutcome::Ignored(
                "cannot force-leave itself".into(),
            ));
        }
        self.remove_with_retry(id, false).await?;
        Ok(ForceLeaveOutcome::Removed)
    }

    pub(crate) async fn remove_with_retry(
        self: &Arc<Self>,
        id: NodeId,
        leave: bool,
    ) -> Result<(), ApiError> {
        let deadline = Instant::now() + self.cfg.op_timeout;
        let mut unknown = false;
        loop {
            let req = pb::RemoveMemberRequest { node_id: id, leave };
            match self.remove_member(req, false).await {
                Ok(_) => return Ok(()),
                // An earlier try whose outcome was unknown did remove it.
                Err(e) if unknown && e.code == ErrorCode::NodeNotInCluster => return Ok(()),
                Err(e) if retryable(&e) && Instant::now() < deadline => {
                    unknown |= e.code == ErrorCode::OutcomeUnknown;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                // Unavailable now, but an earlier try may have gone through.
                Err(e) if unknown && e.code == ErrorCode::Unavailable => {
                    return Err(outcome_unknown(format!(
                        "an earlier try may have removed it: {}",
                        e.message
                    )))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `already_in_cluster`: this node and `other` are both in `cluster`.
    fn already_together(&self, other: &str, cluster: u64) -> ApiError {
        ApiError::new(
            ErrorCode::AlreadyInCluster,
            format!(
                "{} and {other} are already in the same cluster {}",
                self.cfg.name,
                fmt_id(cluster)
            ),
        )
    }
}
