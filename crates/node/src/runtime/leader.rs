//! The leader side of every request: who leads, proposing and waiting for commit, losing the
//! quorum, membership changes in Raft, and forwarding to the leader with failover.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ekka_types::{ApiError, Command, ErrorCode, NodeId, Request, Response};
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};

use crate::error::{from_reject, from_status, internal, outcome_unknown, unavailable};
use crate::runtime::core::{now_ms, Core, Inner};
use crate::timings::*;
use crate::transport::pool::Peer;

/// The answer of a member asked to lead a forwarded request it no longer leads.
pub(crate) const NOT_LEADER: &str = "this node is not the leader";

pub(crate) fn raft_err<E: std::fmt::Display>(e: RaftError<NodeId, E>) -> ApiError {
    match e {
        RaftError::Fatal(f) => unavailable(format!("raft stopped: {f}")),
        RaftError::APIError(e) => unavailable(e.to_string()),
    }
}

/// A write handed to Raft when the leader lost its quorum (or its leadership): it was appended,
/// perhaps replicated, and may commit later under this leader or the next.
pub(crate) fn lost_quorum_in_flight() -> ApiError {
    outcome_unknown("the leader lost its quorum with the write in flight; it may still be applied")
}

/// Whether a membership step may be tried again: no leader or quorum yet, or a previous try whose
/// outcome is unknown (adding or removing the same member again is answered as already done).
pub(crate) fn retryable(e: &ApiError) -> bool {
    matches!(e.code, ErrorCode::Unavailable | ErrorCode::OutcomeUnknown)
}

pub(crate) fn write_err(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> ApiError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            let mut err = unavailable(NOT_LEADER);
            err.leader = f.leader_node.map(|n| n.addr);
            err
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => match c {
            ChangeMembershipError::InProgress(_) => unavailable(c.to_string()),
            other => internal(other),
        },
        // Raft stopped (a reset after this leader left or was removed, a shutdown, a storage
        // fault) with the write handed to it: it may have been appended and replicated, and
        // commit under the next leader.
        RaftError::Fatal(f) => outcome_unknown(format!(
            "raft stopped with the write in flight ({f}); it may have been applied"
        )),
    }
}

/// What a forwarded request that failed with a status means.
enum FailedForward {
    /// Nothing was done there (it was never reached, or it no longer leads): worth taking to
    /// another leader once one is known; this error otherwise.
    Untouched(ApiError),
    /// The answer to give as it is.
    Final(ApiError),
}

/// The error for a request forwarded to the leader at `addr` that got no answer before its
/// deadline (with `write`, one that may have been applied).
fn no_answer(addr: &str, write: bool) -> ApiError {
    if write {
        outcome_unknown(format!(
            "the leader at {addr} did not answer in time; the write may have been applied"
        ))
    } else {
        unavailable(format!("the leader at {addr} did not answer"))
    }
}

/// Reads the status `st` a request forwarded to the leader at `addr` failed with: the leader's
/// own coded answer, a broken connection after a write was sent (its outcome is unknown), or
/// a leader that was never reached.
fn failed_forward(st: &tonic::Status, addr: &str, write: bool) -> FailedForward {
    let coded = st.metadata().get(ekka_proto::ERROR_HEADER).is_some();
    if coded {
        let err = from_status(st);
        let untouched = err.code == ErrorCode::Unavailable && (!write || err.message == NOT_LEADER);
        return if untouched {
            FailedForward::Untouched(err)
        } else {
            FailedForward::Final(err)
        };
    }
    if write && !ekka_proto::never_sent(st) {
        return FailedForward::Final(outcome_unknown(format!(
            "the connection to the leader at {addr} broke after the write was sent ({}); it may \
             have been applied",
            st.message()
        )));
    }
    FailedForward::Untouched(unavailable(format!(
        "the leader at {addr} is unreachable: {}",
        st.message()
    )))
}

impl Inner {
    pub(crate) fn is_leader(&self, core: &Core) -> bool {
        let m = core.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(core.node_id)
    }

    /// The current leader's id and address, if known.
    pub(crate) fn leader(&self, core: &Core) -> Option<(NodeId, String)> {
        let m = core.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let st = core.state.read();
        let addr = st.members.get(&id).map(|m| m.addr.clone()).or_else(|| {
            m.membership_config
                .membership()
                .get_node(&id)
                .map(|n| n.addr.clone())
        })?;
        Some((id, addr))
    }

    /// Proposes a command on `core` (which must be the leader) and waits for it to apply.
    pub(crate) async fn propose_on(&self, core: &Core, cmd: Command) -> Result<Response, ApiError> {
        self.check_fault()?;
        let req = Request {
            now_ms: now_ms(),
            cmd,
        };
        let fut = core.raft.client_write(req);
        let resp = tokio::select! {
            r = tokio::time::timeout(self.cfg.op_timeout, fut) => r.map_err(|_| {
                // Appended, perhaps replicated: it may still commit once a quorum answers.
                outcome_unknown(format!(
                    "the write did not commit within {:?} (no quorum?); it may still be applied",
                    self.cfg.op_timeout
                ))
            })?,
            () = self.quorum_lost() => return Err(lost_quorum_in_flight()),
        }
        .map_err(|e| match self.fault() {
            // Handed to Raft, which may have appended (even committed) it before the fault.
            Some(f) => outcome_unknown(format!(
                "the write may have been applied: storage fault: {f}"
            )),
            None => write_err(e),
        })?;
        match resp.data.rejected {
            Some(r) => Err(from_reject(r)),
            None => Ok(resp.data),
        }
    }

    /// Resolves once this node, as leader, has heard from no quorum of voters for `down_after`
    /// (or no longer leads): what it has in flight will not commit while that lasts. One task
    /// looks every half `down_after` (`watch_quorum`), so a request waits at most about
    /// `1.5 × down_after` past the cut instead of its whole deadline, and costs no timer.
    pub(crate) async fn quorum_lost(&self) {
        let mut rx = self.quorum_gone.subscribe();
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// While this node runs: every half `down_after`, tells the requests waiting on
    /// [`Inner::quorum_lost`] when it does not lead, or leads without a quorum.
    pub(crate) async fn watch_quorum(self: Arc<Self>) {
        let mut shutdown = self.shutdown.subscribe();
        let every = self.cfg.down_after / 2;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
            let core = self.core();
            if !self.is_leader(&core) || self.check_quorum(&core).is_err() {
                self.quorum_gone.send_modify(|n| *n += 1);
            }
        }
    }

    /// Commits `change`, retrying while a previous change is still in progress. With `retain`,
    /// voters taken out stay as learners; without, they leave the configuration.
    pub(crate) async fn change_membership(
        &self,
        core: &Core,
        change: ChangeMembers<NodeId, BasicNode>,
        retain: bool,
    ) -> Result<(), ApiError> {
        let deadline = Instant::now() + self.cfg.op_timeout;
        loop {
            let fut = core.raft.change_membership(change.clone(), retain);
            let r = tokio::time::timeout_at(deadline.into(), fut)
                .await
                .map_err(|_| {
                    outcome_unknown(
                        "the membership change did not commit in time (no quorum?); it may still \
                         be applied",
                    )
                })?;
            match r {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                ))) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(write_err(e)),
            }
        }
    }

    pub(crate) fn try_op_lock(&self) -> Result<tokio::sync::MutexGuard<'_, ()>, ()> {
        self.op_lock.try_lock().map_err(|_| ())
    }

    pub(crate) fn in_raft_config(core: &Core, id: NodeId) -> bool {
        let m = core.raft.metrics().borrow().membership_config.clone();
        m.membership().get_node(&id).is_some()
    }

    /// Takes `id` out of the Raft configuration following `plan`.
    pub(crate) async fn remove_from_raft(
        &self,
        core: &Core,
        id: NodeId,
        plan: &ekka_types::state::RemovePlan,
    ) -> Result<(), ApiError> {
        if !Self::in_raft_config(core, id) {
            return Ok(());
        }
        if plan.was_voter {
            self.change_membership(
                core,
                ChangeMembers::ReplaceAllVoters(plan.voters.clone()),
                false,
            )
            .await?;
        }
        if Self::in_raft_config(core, id) {
            let ids: BTreeSet<NodeId> = [id].into();
            self.change_membership(core, ChangeMembers::RemoveNodes(ids), false)
                .await?;
        }
        Ok(())
    }

    // ----- leader side -----

    /// Runs `local` when this node leads, else forwards with `remote` to the leader (one hop).
    ///
    /// Fails over: a request that never reached the leader (it is cut off, or refused the
    /// connection) waits for the next leader, up to `FAILOVER_WAIT`, and goes there instead; a
    /// read whose leader is replaced while it waits for the answer is asked again of the new one.
    /// With `write`, a forwarded request whose answer is lost after it was sent (the leader did
    /// not answer in time, the connection broke, another leader took over meanwhile) is
    /// `outcome_unknown`: the old leader may have applied it.
    pub(crate) async fn via_leader<T, L, R, LF, RF>(
        self: &Arc<Self>,
        forwarded: bool,
        write: bool,
        local: L,
        mut remote: R,
    ) -> Result<T, ApiError>
    where
        L: FnOnce(Arc<Core>) -> LF,
        LF: std::future::Future<Output = Result<T, ApiError>>,
        R: FnMut(Peer) -> RF,
        RF: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.cfg.op_timeout;
        loop {
            let core = self.core();
            self.await_leader(&core).await;
            if self.is_leader(&core) {
                return local(core).await;
            }
            if forwarded {
                return Err(unavailable(NOT_LEADER));
            }
            let (leader, addr) = self
                .leader(&core)
                .ok_or_else(|| unavailable("no leader is known"))?;
            // Cut off from the leader: a write is not sent into a link that may be gone (its
            // outcome would be unknown); a new leader is probably being elected, so wait for it.
            if let Some(limit) = self.write_waits_for_other_leader(write) {
                if self.await_other_leader(&core, leader, deadline).await {
                    continue;
                }
                return Err(unavailable(format!(
                    "no quorum: no word from the leader at {addr} in the last {limit:?}"
                )));
            }
            let peer = self.transport.peer(&addr, true).map_err(internal)?;
            let answer = tokio::select! {
                r = tokio::time::timeout_at(deadline.into(), remote(peer)) => r,
                () = self.leader_replaced(&core, leader) => {
                    if write {
                        return Err(outcome_unknown(format!(
                            "the leader at {addr} was replaced while the write was in flight; \
                             it may have been applied"
                        )));
                    }
                    continue;
                }
            };
            let st = match answer {
                Err(_) => return Err(no_answer(&addr, write)),
                Ok(Ok(r)) => return Ok(r.into_inner()),
                Ok(Err(st)) => st,
            };
            match failed_forward(&st, &addr, write) {
                // Nothing was done there: once another leader is known, go there.
                FailedForward::Untouched(err) => {
                    if self.await_other_leader(&core, leader, deadline).await {
                        continue;
                    }
                    return Err(err);
                }
                FailedForward::Final(err) => return Err(err),
            }
        }
    }

    /// With `write`, when no word came from the leader within `down_after`: that limit (the
    /// write should wait for another leader rather than be sent into a link that may be gone).
    fn write_waits_for_other_leader(&self, write: bool) -> Option<Duration> {
        let heard = *self.leader_heard.lock();
        let limit = self.cfg.down_after;
        (write && heard.is_some_and(|t| t.elapsed() > limit)).then_some(limit)
    }

    /// Waits until this node knows a leader other than `old`, at most `FAILOVER_WAIT` (and not
    /// past `deadline`). False when none turned up.
    pub(crate) async fn await_other_leader(
        &self,
        core: &Core,
        old: NodeId,
        deadline: Instant,
    ) -> bool {
        let until = deadline.min(Instant::now() + FAILOVER_WAIT);
        let wait = until.saturating_duration_since(Instant::now());
        core.raft
            .wait(Some(wait))
            .metrics(
                |m| m.current_leader.is_some_and(|l| l != old),
                "another leader",
            )
            .await
            .is_ok()
    }

    /// Resolves once this node no longer names `old` as the leader (never, if the metrics end).
    pub(crate) async fn leader_replaced(&self, core: &Core, old: NodeId) {
        let mut rx = core.raft.metrics();
        loop {
            if rx.borrow_and_update().current_leader != Some(old) {
                return;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// When no leader is known, waits up to `LEADER_WAIT` for one: an election is under way (a
    /// restarted node always holds one, see `LogStore::read_vote`), and a moment's wait beats an
    /// answer without a leader.
    pub(crate) async fn await_leader(&self, core: &Core) {
        // A borrow of the metrics, not `leader()`'s clone: this runs on every request.
        let known = core.raft.metrics().borrow().current_leader.is_some();
        if !known {
            let _ = core
                .raft
                .wait(Some(LEADER_WAIT))
                .metrics(|m| m.current_leader.is_some(), "a leader")
                .await;
        }
    }

    /// Fails fast, before anything is appended, when this leader has not heard from a quorum of
    /// voters within `down_after` (by its own transport, or openraft's last quorum ack).
    pub(crate) fn check_quorum(&self, core: &Core) -> Result<(), ApiError> {
        // Only what is needed, not a clone of the whole metrics: this runs on every write.
        let (voters, quorum_ack_ms) = {
            let metrics = core.raft.metrics();
            let m = metrics.borrow();
            let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
            (voters, m.millis_since_quorum_ack)
        };
        let limit = self.cfg.down_after;
        let now = std::time::Instant::now();
        let heard = voters
            .iter()
            .filter(|id| {
                **id == core.node_id
                    || self
                        .transport
                        .last_ok(**id)
                        .is_some_and(|t| now.duration_since(t) < limit)
            })
            .count();
        let acked = quorum_ack_ms.is_some_and(|ms| u128::from(ms) < limit.as_millis());
        if heard > voters.len() / 2 || acked {
            return Ok(());
        }
        Err(unavailable(format!(
            "no quorum: {heard} of {} voters answered in the last {limit:?}",
            voters.len()
        )))
    }
}
