//! The leader's status monitor: commits `MarkDown`/`MarkUp` from who answers Raft RPCs, promotes
//! learners into free voter seats, and removes member records whose Raft membership is gone.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use ekka_types::{fmt_id, ClusterState, Command, NodeId, RemoveReason, Status};
use tracing::{info, warn};

use crate::runtime::core::{now_ms, Core, Inner};

use super::status::raft_roles;
use crate::timings::*;

/// Runs until the node shuts down. Only acts while this node is the leader.
pub(crate) async fn run(inner: Arc<Inner>) {
    let mut shutdown = inner.shutdown.subscribe();
    let period = inner.cfg.heartbeat_interval.max(MONITOR_MIN_PERIOD);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // (term, node id, when this node became leader in that term)
    let mut leading: Option<(u64, u64, Instant)> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let core = inner.core();
        if !inner.is_leader(&core) {
            leading = None;
            continue;
        }
        let term = core.raft.metrics().borrow().current_term;
        let since = match leading {
            Some((t, id, s)) if t == term && id == core.node_id => s,
            _ => {
                let now = Instant::now();
                leading = Some((term, core.node_id, now));
                now
            }
        };
        if let Err(e) = round(&inner, &core, since).await {
            warn!(error = %e, "monitor round");
        }
        if let Err(e) = autoclean(&inner, &core).await {
            warn!(error = %e, "autoclean");
        }
    }
}

/// One pass of the leader's monitor: statuses, stale records, promotions, a down voter's seat.
async fn round(
    inner: &Arc<Inner>,
    core: &Core,
    leader_since: Instant,
) -> Result<(), ekka_types::ApiError> {
    let st = core.state.read().membership();
    if st.cluster_id == 0 {
        return Ok(());
    }
    for cmd in status_changes(inner, core, &st, leader_since) {
        inner.propose_on(core, cmd).await?;
    }

    // Membership housekeeping is serialized with joins and removals.
    let Ok(_guard) = inner.try_op_lock() else {
        return Ok(());
    };
    let st = core.state.read().membership();
    let (_, in_raft) = raft_roles(core);
    remove_stale_records(inner, core, &st, &in_raft).await?;
    let st = core.state.read().membership();
    inner.promote(core, &st).await?;
    replace_down_voter(inner, core, &in_raft).await
}

/// The `MarkUp`/`MarkDown` commands due for the members in `st`, from who answers Raft RPCs.
fn status_changes(
    inner: &Inner,
    core: &Core,
    st: &ClusterState,
    leader_since: Instant,
) -> Vec<Command> {
    let now = Instant::now();
    let down_after = inner.cfg.down_after;
    let fresh = inner.cfg.heartbeat_interval * 4;
    let mut cmds = Vec::new();
    for m in st.members.values() {
        if m.id == core.node_id {
            if m.status != Status::Up && m.status != Status::Leaving {
                cmds.push(Command::MarkUp {
                    id: m.id,
                    addr: Some(inner.addr.clone()),
                });
            }
            continue;
        }
        let last = inner.transport.last_ok(m.id);
        let heard_recently = last.is_some_and(|t| t > leader_since && now - t < fresh);
        let silent_for = now - last.map_or(leader_since, |t| t.max(leader_since));
        // A member that just came up gets `down_after` to be heard from: no flapping.
        let up_for_ms = now_ms().saturating_sub(m.since_ms);
        let settled = up_for_ms > down_after.as_millis() as u64;
        match m.status {
            // Whatever the member was doing (up, joining, leaving): silent means down, so a joiner
            // that died mid-join is neither counted as running nor kept forever.
            Status::Up | Status::Joining | Status::Leaving
                if silent_for > down_after && settled =>
            {
                info!(name = %m.name, id = %fmt_id(m.id), status = %m.status, "member stopped answering: marking it down");
                cmds.push(Command::MarkDown { id: m.id });
            }
            Status::Down | Status::Joining if heard_recently => {
                info!(name = %m.name, id = %fmt_id(m.id), "member answers: marking it up");
                cmds.push(Command::MarkUp {
                    id: m.id,
                    addr: None,
                });
            }
            _ => {}
        }
    }
    cmds
}

/// Removes the records in `st` of members not in `in_raft`, the Raft membership (joiners aside).
async fn remove_stale_records(
    inner: &Arc<Inner>,
    core: &Core,
    st: &ClusterState,
    in_raft: &BTreeSet<NodeId>,
) -> Result<(), ekka_types::ApiError> {
    for m in st.members.values() {
        if !in_raft.contains(&m.id) && m.status != Status::Joining {
            let reason = if m.status == Status::Leaving {
                RemoveReason::Left
            } else {
                RemoveReason::Removed
            };
            info!(name = %m.name, "member has no Raft membership: removing its record");
            inner
                .propose_on(core, Command::RemoveMember { id: m.id, reason })
                .await?;
        }
    }
    Ok(())
}

/// Replaces one voter that has been down too long by an up, caught-up learner in `in_raft`.
async fn replace_down_voter(
    inner: &Arc<Inner>,
    core: &Core,
    in_raft: &BTreeSet<NodeId>,
) -> Result<(), ekka_types::ApiError> {
    // Replace one voter that has been down too long by an up learner (committed down-since, so a
    // new leader neither resets nor shortens the clock). The count of voters stays the same.
    let st = core.state.read().membership();
    let cutoff = now_ms().saturating_sub(inner.cfg.replace_down_voter_after.as_millis() as u64);
    if let Some((down, learner)) = st.voter_to_replace(cutoff) {
        if in_raft.contains(&learner) && caught_up(core, learner) {
            let mut voters = st.voter_ids();
            voters.remove(&down);
            voters.insert(learner);
            let n_up = voters
                .iter()
                .filter(|v| st.members.get(v).is_some_and(|m| m.status == Status::Up))
                .count();
            if n_up >= ekka_types::state::quorum(voters.len()) {
                info!(down = %fmt_id(down), learner = %fmt_id(learner), "replacing a voter that is down by an up learner");
                inner.replace_voters(core, voters).await?;
            }
        }
    }
    Ok(())
}

/// Removes one member that has been down longer than the autoclean delay (committed down-since
/// time, so a leader change neither resets nor shortens the clock), learners first, never below
/// quorum.
async fn autoclean(inner: &Arc<Inner>, core: &Arc<Core>) -> Result<(), ekka_types::ApiError> {
    let candidate = {
        let st = core.state.read();
        let default = u64::try_from(inner.cfg.autoclean.as_millis()).unwrap_or(u64::MAX);
        st.autoclean_candidate(now_ms(), default)
            .and_then(|id| st.members.get(&id).map(|m| (id, m.name.clone())))
    };
    let Some((id, name)) = candidate else {
        return Ok(());
    };
    info!(%name, id = %fmt_id(id), "autoclean: removing a member down longer than the delay");
    inner.leader_remove_member(core.clone(), id, false).await?;
    Ok(())
}

/// Whether the leader's replication to `id` has reached its last log entry (within a margin).
fn caught_up(core: &Core, id: ekka_types::NodeId) -> bool {
    let m = core.raft.metrics().borrow().clone();
    let last = m.last_log_index.unwrap_or(0);
    m.replication
        .as_ref()
        .and_then(|r| r.get(&id))
        .and_then(|l| l.as_ref())
        .is_some_and(|l| l.index + 16 >= last)
}
