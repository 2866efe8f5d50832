//! `ClusterState`: the replicated state machine and its total, deterministic `apply`.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::check::{check_addr, check_name};
use crate::command::{Command, DataCommand, RemoveReason, Request};
use crate::event::{Event, EventKind};
use crate::id::{ClusterId, NodeId};
use crate::kv::KvSpace;
use crate::limits::{MAX_EVENTS_RETAINED, MAX_MEMBERS, MAX_VOTERS_LIMIT, OPS_PER_ENTRY};
use crate::lock::LockTable;
use crate::member::{Member, Role, Status};
use crate::outcome::{op_revision, OpResult, Outcome, Reject, Response};

/// The replicated cluster state: members, the cluster id and the revision.
///
/// Every replica applies the same entries in the same order through [`ClusterState::apply`] and so
/// holds the same value at the same revision.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// `0` until the cluster bootstraps.
    pub cluster_id: ClusterId,
    pub max_voters: u32,
    pub members: BTreeMap<NodeId, Member>,
    /// The log index of the last applied entry.
    pub revision: u64,
    /// The most recent membership events, oldest first.
    pub events: VecDeque<Event>,
    /// The member that led the term of the last blank entry (0 before any).
    #[serde(default)]
    pub leader: NodeId,
    /// Revision of the newest event dropped from `events` (0: none dropped).
    #[serde(default)]
    pub compacted_to: u64,
    /// The latest leader time applied: the state's clock, which never goes backwards.
    #[serde(default)]
    pub clock_ms: u64,
    /// Lease locks.
    #[serde(default)]
    pub locks: LockTable,
    /// The key-value space.
    #[serde(default)]
    pub kv: KvSpace,
    /// The autoclean delay set through the API (ms, 0: off); `None`: the leader's default.
    #[serde(default)]
    pub autoclean_ms: Option<u64>,
}

/// What the leader must do to remove a member without losing quorum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemovePlan {
    /// The voter set after the removal (unchanged when a learner is removed).
    pub voters: BTreeSet<NodeId>,
    /// A learner promoted to keep the number of voters, if any.
    pub promoted: Option<NodeId>,
    pub was_voter: bool,
}

/// The smallest number of voters that forms a majority of `n_voters`.
pub fn quorum(n_voters: usize) -> usize {
    n_voters / 2 + 1
}

impl ClusterState {
    /// Whether an entry at `log_idx` was applied already: it is at or below the revision. A
    /// fresh state (revision 0, no cluster) takes any index; once a cluster exists, index 0 is
    /// taken too (found by the fuzzer: a bootstrap at index 0 let a second entry at 0 through).
    pub fn is_replay(&self, log_idx: u64) -> bool {
        log_idx <= self.revision && (self.revision != 0 || self.cluster_id != 0)
    }

    /// Applies one committed entry at log index `log_idx`.
    ///
    /// Total and deterministic: a command that breaks a rule is refused with a [`Reject`] and
    /// changes nothing but the revision. An entry at or below the current revision (a replay) is
    /// refused and changes nothing at all.
    pub fn apply(&mut self, log_idx: u64, req: &Request) -> Response {
        if self.is_replay(log_idx) {
            return Response {
                revision: self.revision,
                rejected: Some(Reject::InvalidArgument {
                    message: format!("entry {log_idx} is not after revision {}", self.revision),
                }),
                outcome: Outcome::None,
            };
        }
        self.revision = log_idx;
        if req.now_ms > self.clock_ms {
            self.clock_ms = req.now_ms;
        }
        let result = if req.cmd.is_data() {
            self.apply_data(log_idx, &req.cmd)
        } else {
            self.apply_cmd(log_idx, req.now_ms, &req.cmd)
                .map(|_| Outcome::None)
        };
        match result {
            Ok(outcome) => Response {
                revision: log_idx,
                rejected: None,
                outcome,
            },
            Err(r) => Response {
                revision: log_idx,
                rejected: Some(r),
                outcome: Outcome::None,
            },
        }
    }

    /// Applies a lock or key-value command (or a batch of them) at the state's clock.
    fn apply_data(&mut self, log_idx: u64, cmd: &Command) -> Result<Outcome, Reject> {
        if self.cluster_id == 0 {
            return Err(Reject::NotBootstrapped);
        }
        let now = self.clock_ms;
        if self.locks.extend_pending && now != 0 {
            self.locks.extend_all(now);
        }
        let cmds = match cmd {
            Command::Batch(cmds) => cmds,
            Command::Lock(op) => return self.locks.apply(op_revision(log_idx, 0), now, op),
            Command::Kv(op) => return self.kv.apply(op_revision(log_idx, 0), op),
            Command::ExpireLocks => {
                self.locks.expire(op_revision(log_idx, 0), now);
                return Ok(Outcome::None);
            }
            _ => return Err(invalid("not a lock or key-value command")),
        };
        if cmds.len() as u64 > OPS_PER_ENTRY {
            return Err(invalid(format!(
                "a batch holds at most {OPS_PER_ENTRY} commands"
            )));
        }
        let results = cmds
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let revision = op_revision(log_idx, k);
                match self.apply_op(revision, now, c) {
                    Ok(outcome) => OpResult {
                        revision,
                        rejected: None,
                        outcome,
                    },
                    Err(r) => OpResult {
                        revision,
                        rejected: Some(r),
                        outcome: Outcome::None,
                    },
                }
            })
            .collect();
        Ok(Outcome::Batch(results))
    }

    /// One lock or key-value operation at operation revision `rev`.
    fn apply_op(&mut self, rev: u64, now: u64, cmd: &DataCommand) -> Result<Outcome, Reject> {
        match cmd {
            DataCommand::Lock(op) => self.locks.apply(rev, now, op),
            DataCommand::Kv(op) => self.kv.apply(rev, op),
        }
    }

    /// The highest operation revision an applied entry can have produced: lock tokens and key
    /// revisions are at most this.
    pub fn data_revision(&self) -> u64 {
        op_revision(self.revision, OPS_PER_ENTRY as usize - 1)
    }

    /// A copy of the membership part of the state (members, events, leader), without locks and
    /// keys: what status and the membership logic need, cheap whatever the data held.
    pub fn membership(&self) -> ClusterState {
        ClusterState {
            cluster_id: self.cluster_id,
            max_voters: self.max_voters,
            members: self.members.clone(),
            revision: self.revision,
            events: self.events.clone(),
            leader: self.leader,
            compacted_to: self.compacted_to,
            clock_ms: self.clock_ms,
            locks: LockTable::default(),
            kv: KvSpace::default(),
            autoclean_ms: self.autoclean_ms,
        }
    }

    /// Records an entry that carries no command (a blank or membership entry without roles).
    pub fn advance(&mut self, log_idx: u64) {
        if log_idx > self.revision {
            self.revision = log_idx;
        }
    }

    /// Records the blank entry a new leader commits when its term starts: `leader_changed`.
    pub fn leader_elected(&mut self, log_idx: u64, leader: NodeId) {
        if self.is_replay(log_idx) {
            return;
        }
        self.revision = log_idx;
        if leader != self.leader && self.cluster_id != 0 {
            self.leader = leader;
            if !self.locks.locks.is_empty() {
                self.locks.extend_pending = true;
            }
            self.event(log_idx, leader, EventKind::LeaderChanged);
        }
    }

    fn apply_cmd(&mut self, rev: u64, now_ms: u64, cmd: &Command) -> Result<(), Reject> {
        if self.cluster_id == 0 && !matches!(cmd, Command::Bootstrap { .. } | Command::Noop) {
            return Err(Reject::NotBootstrapped);
        }
        match cmd {
            Command::Noop => Ok(()),
            Command::Bootstrap {
                cluster_id,
                id,
                name,
                addr,
                max_voters,
            } => self.bootstrap(rev, now_ms, *cluster_id, *id, name, addr, *max_voters),
            Command::AddMember { id, name, addr } => self.add_member(rev, now_ms, *id, name, addr),
            Command::MarkUp { id, addr } => self.mark_up(rev, now_ms, *id, addr.as_deref()),
            Command::MarkDown { id } => self.set_status(rev, now_ms, *id, Status::Down),
            Command::MarkLeaving { id } => self.set_status(rev, now_ms, *id, Status::Leaving),
            Command::SetRoles { voters, learners } => self.set_roles(rev, voters, learners),
            Command::RemoveMember { id, reason } => self.remove_member(rev, *id, *reason),
            Command::Lock(_) | Command::Kv(_) | Command::ExpireLocks | Command::Batch(_) => {
                self.apply_data(rev, cmd).map(|_| ())
            }
            Command::SetAutoclean { ms } => {
                self.autoclean_ms = Some(*ms);
                Ok(())
            }
        }
    }

    /// The first entry of a cluster: its id, limits and first member (a voter, up, leading).
    #[allow(clippy::too_many_arguments)]
    fn bootstrap(
        &mut self,
        rev: u64,
        now_ms: u64,
        cluster_id: ClusterId,
        id: NodeId,
        name: &str,
        addr: &str,
        max_voters: u32,
    ) -> Result<(), Reject> {
        if self.cluster_id != 0 {
            return Err(Reject::AlreadyBootstrapped);
        }
        if cluster_id == 0 {
            return Err(invalid("cluster id 0 is reserved"));
        }
        let mv = max_voters as usize;
        if mv == 0 || mv.is_multiple_of(2) || mv > MAX_VOTERS_LIMIT {
            return Err(invalid(format!(
                "max_voters must be odd, 1..={MAX_VOTERS_LIMIT}"
            )));
        }
        check_name(name).map_err(invalid)?;
        check_addr(addr).map_err(invalid)?;
        self.cluster_id = cluster_id;
        self.max_voters = max_voters;
        self.members.clear();
        let m = Member {
            id,
            name: name.to_string(),
            addr: addr.to_string(),
            role: Role::Voter,
            status: Status::Up,
            since_ms: now_ms,
            joined_at_ms: now_ms,
        };
        self.members.insert(id, m);
        self.event(rev, id, EventKind::MemberJoined);
        // Only a new cluster's sole member, as its leader, writes Bootstrap.
        self.leader = id;
        self.event(rev, id, EventKind::LeaderChanged);
        Ok(())
    }

    /// A new `joining` learner, or the same member again (its address updated); a down member
    /// of the same name gives way to it.
    fn add_member(
        &mut self,
        rev: u64,
        now_ms: u64,
        id: NodeId,
        name: &str,
        addr: &str,
    ) -> Result<(), Reject> {
        check_name(name).map_err(invalid)?;
        check_addr(addr).map_err(invalid)?;
        if let Some(m) = self.members.get(&id) {
            if m.name != name {
                return Err(invalid(format!(
                    "id {} already belongs to {}",
                    crate::id::fmt_id(id),
                    m.name
                )));
            }
            if m.addr != addr {
                self.members.get_mut(&id).expect("checked above").addr = addr.to_string();
                self.event(
                    rev,
                    id,
                    EventKind::AddressChanged {
                        addr: addr.to_string(),
                    },
                );
            }
            return Ok(());
        }
        let old = self.member_by_name(name).map(|m| (m.id, m.status));
        if let Some((_, status)) = old {
            if status != Status::Down {
                return Err(Reject::NameInUse {
                    name: name.to_string(),
                });
            }
        }
        if old.is_none() && self.members.len() >= MAX_MEMBERS {
            return Err(Reject::TooManyMembers);
        }
        if let Some((old_id, _)) = old {
            self.event(rev, old_id, EventKind::MemberRemoved);
            self.members.remove(&old_id);
        }
        self.members.insert(
            id,
            Member {
                id,
                name: name.to_string(),
                addr: addr.to_string(),
                role: Role::Learner,
                status: Status::Joining,
                since_ms: now_ms,
                joined_at_ms: now_ms,
            },
        );
        self.event(rev, id, EventKind::MemberJoined);
        Ok(())
    }

    /// The member is up, at `addr` when given.
    fn mark_up(
        &mut self,
        rev: u64,
        now_ms: u64,
        id: NodeId,
        addr: Option<&str>,
    ) -> Result<(), Reject> {
        if let Some(a) = addr {
            check_addr(a).map_err(invalid)?;
        }
        let m = self
            .members
            .get_mut(&id)
            .ok_or(Reject::NoSuchMember { id })?;
        let mut kinds = Vec::new();
        if let Some(a) = addr {
            if m.addr != a {
                m.addr = a.to_string();
                kinds.push(EventKind::AddressChanged {
                    addr: a.to_string(),
                });
            }
        }
        if m.status != Status::Up {
            m.status = Status::Up;
            m.since_ms = now_ms;
            kinds.push(EventKind::MemberUp);
        }
        for k in kinds {
            self.event(rev, id, k);
        }
        Ok(())
    }

    /// Mirrors Raft's voter and learner sets into the members' roles.
    fn set_roles(
        &mut self,
        rev: u64,
        voters: &[NodeId],
        learners: &[NodeId],
    ) -> Result<(), Reject> {
        if voters.is_empty() {
            return Err(invalid("a configuration needs at least one voter"));
        }
        let voter_set: BTreeSet<NodeId> = voters.iter().copied().collect();
        if voter_set.len() > self.max_voters as usize {
            return Err(Reject::TooManyVoters {
                max_voters: self.max_voters,
            });
        }
        let learner_set: BTreeSet<NodeId> = learners.iter().copied().collect();
        let mut changed = Vec::new();
        for m in self.members.values_mut() {
            let role = if voter_set.contains(&m.id) {
                Role::Voter
            } else if learner_set.contains(&m.id) || m.role == Role::Voter {
                Role::Learner
            } else {
                m.role
            };
            if role != m.role {
                m.role = role;
                changed.push((m.id, role));
            }
        }
        for (id, role) in changed {
            self.event(rev, id, EventKind::RoleChanged { role });
        }
        Ok(())
    }

    fn remove_member(&mut self, rev: u64, id: NodeId, reason: RemoveReason) -> Result<(), Reject> {
        if !self.members.contains_key(&id) {
            return Err(Reject::NoSuchMember { id });
        }
        let kind = match reason {
            RemoveReason::Left => EventKind::MemberLeft,
            RemoveReason::Removed => EventKind::MemberRemoved,
        };
        self.event(rev, id, kind);
        self.members.remove(&id);
        Ok(())
    }

    fn set_status(
        &mut self,
        rev: u64,
        now_ms: u64,
        id: NodeId,
        status: Status,
    ) -> Result<(), Reject> {
        let m = self
            .members
            .get_mut(&id)
            .ok_or(Reject::NoSuchMember { id })?;
        if m.status == status {
            return Ok(());
        }
        m.status = status;
        m.since_ms = now_ms;
        let kind = match status {
            Status::Up => EventKind::MemberUp,
            Status::Down => EventKind::MemberDown,
            Status::Leaving => EventKind::MemberLeaving,
            Status::Joining => EventKind::MemberJoined,
        };
        self.event(rev, id, kind);
        Ok(())
    }

    fn event(&mut self, revision: u64, id: NodeId, kind: EventKind) {
        let (name, status) = self
            .members
            .get(&id)
            .map(|m| (m.name.clone(), m.status))
            .unwrap_or_else(|| (String::new(), Status::Down));
        self.events.push_back(Event {
            revision,
            id,
            name,
            kind,
            status,
        });
        while self.events.len() > MAX_EVENTS_RETAINED {
            if let Some(e) = self.events.pop_front() {
                self.compacted_to = self.compacted_to.max(e.revision);
            }
        }
    }

    /// The member with this name, if any. Names are unique.
    pub fn member_by_name(&self, name: &str) -> Option<&Member> {
        self.members.values().find(|m| m.name == name)
    }

    /// Ids of the voters.
    pub fn voter_ids(&self) -> BTreeSet<NodeId> {
        self.members
            .values()
            .filter(|m| m.role == Role::Voter)
            .map(|m| m.id)
            .collect()
    }

    fn is_up(&self, id: NodeId) -> bool {
        self.members
            .get(&id)
            .is_some_and(|m| m.status == Status::Up)
    }

    /// Names of running members (ekka's `running_nodes`), sorted.
    pub fn running_nodes(&self) -> Vec<String> {
        self.names_where(|m| m.status.is_running())
    }

    /// Names of stopped members (ekka's `stopped_nodes`), sorted.
    pub fn stopped_nodes(&self) -> Vec<String> {
        self.names_where(|m| !m.status.is_running())
    }

    fn names_where(&self, f: impl Fn(&Member) -> bool) -> Vec<String> {
        let mut v: Vec<String> = self
            .members
            .values()
            .filter(|m| f(m))
            .map(|m| m.name.clone())
            .collect();
        v.sort();
        v
    }

    /// Admission control for removing `id`: the voter set afterwards must still have a quorum of up
    /// voters. When a voter goes, the oldest up learner takes its seat, keeping the voter count.
    pub fn plan_remove(&self, id: NodeId) -> Result<RemovePlan, Reject> {
        let m = self.members.get(&id).ok_or(Reject::NoSuchMember { id })?;
        let mut voters = self.voter_ids();
        if m.role != Role::Voter {
            return Ok(RemovePlan {
                voters,
                promoted: None,
                was_voter: false,
            });
        }
        voters.remove(&id);
        let promoted = self.up_learners().into_iter().find(|l| *l != id);
        if let Some(l) = promoted {
            voters.insert(l);
        }
        let n_up = voters.iter().filter(|v| self.is_up(**v)).count();
        if voters.is_empty() || n_up < quorum(voters.len()) {
            return Err(Reject::WouldLoseQuorum);
        }
        Ok(RemovePlan {
            voters,
            promoted,
            was_voter: true,
        })
    }

    /// Up learners, oldest member first.
    fn up_learners(&self) -> Vec<NodeId> {
        let mut v: Vec<&Member> = self
            .members
            .values()
            .filter(|m| m.role == Role::Learner && m.status == Status::Up)
            .collect();
        v.sort_by_key(|m| (m.joined_at_ms, m.id));
        v.into_iter().map(|m| m.id).collect()
    }

    /// A voter down since before `down_before_ms` (leader-stamped, committed) and the up learner
    /// to seat instead, keeping the voter count; `None` when there is nothing to replace.
    pub fn voter_to_replace(&self, down_before_ms: u64) -> Option<(NodeId, NodeId)> {
        let down = self
            .members
            .values()
            .filter(|m| m.role == Role::Voter && m.status == Status::Down)
            .filter(|m| m.since_ms < down_before_ms)
            .min_by_key(|m| (m.since_ms, m.id))?;
        let learner = self.up_learners().into_iter().next()?;
        Some((down.id, learner))
    }

    /// The member autoclean removes next, if any: down for at least the autoclean delay (the
    /// state's setting, else `default_ms`; 0: off) by the committed down-since time, learners
    /// before voters, the longest down first, and only a removal that keeps a quorum of up voters.
    pub fn autoclean_candidate(&self, now_ms: u64, default_ms: u64) -> Option<NodeId> {
        let delay = self.autoclean_ms.unwrap_or(default_ms);
        if delay == 0 {
            return None;
        }
        let mut due: Vec<&Member> = self
            .members
            .values()
            .filter(|m| m.status == Status::Down && m.since_ms.saturating_add(delay) <= now_ms)
            .collect();
        due.sort_by_key(|m| (m.role == Role::Voter, m.since_ms, m.id));
        due.into_iter()
            .map(|m| m.id)
            .find(|id| self.plan_remove(*id).is_ok())
    }

    /// Learners the leader should promote now: enough to bring the voter count to the largest odd
    /// number not above `max_voters` and the number of voters plus up learners.
    pub fn learners_to_promote(&self) -> Vec<NodeId> {
        let n_voters = self.voter_ids().len();
        let learners = self.up_learners();
        let candidates = (n_voters + learners.len()).min(self.max_voters as usize);
        let target = if candidates.is_multiple_of(2) {
            candidates.saturating_sub(1)
        } else {
            candidates
        };
        if target <= n_voters {
            return Vec::new();
        }
        learners.into_iter().take(target - n_voters).collect()
    }

    /// Whether `id` is known to have been removed (a retained `member_left`/`member_removed`
    /// event, no later join): positive evidence, never mere absence, so a member that lags behind
    /// a join never calls the new member removed.
    pub fn was_removed(&self, id: NodeId) -> bool {
        if self.members.contains_key(&id) {
            return false;
        }
        self.events
            .iter()
            .rev()
            .find(|e| e.id == id && !matches!(e.kind, EventKind::LeaderChanged))
            .is_some_and(|e| matches!(e.kind, EventKind::MemberLeft | EventKind::MemberRemoved))
    }

    /// Events with a revision strictly greater than `after`, oldest first; `None` when some of
    /// them were already dropped from the retained window.
    pub fn events_after(&self, after: u64) -> Option<Vec<Event>> {
        if after < self.compacted_to {
            return None;
        }
        Some(
            self.events
                .iter()
                .filter(|e| e.revision > after)
                .cloned()
                .collect(),
        )
    }

    /// Checks the invariants that hold after every `apply`; returns the first broken one.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut names = BTreeSet::new();
        for (id, m) in &self.members {
            if *id != m.id {
                return Err(format!("member key {id} holds id {}", m.id));
            }
            if !names.insert(m.name.as_str()) {
                return Err(format!("two members are named {}", m.name));
            }
        }
        if self.voter_ids().len() > self.max_voters.max(1) as usize {
            return Err(format!(
                "{} voters, more than max_voters {}",
                self.voter_ids().len(),
                self.max_voters
            ));
        }
        if self.members.len() > MAX_MEMBERS {
            return Err("more members than MAX_MEMBERS".into());
        }
        if self.cluster_id == 0 && !self.members.is_empty() {
            return Err("members without a cluster id".into());
        }
        if self.events.len() > MAX_EVENTS_RETAINED {
            return Err("more events than MAX_EVENTS_RETAINED".into());
        }
        if self.events.iter().any(|e| e.revision > self.revision) {
            return Err("an event is newer than the revision".into());
        }
        self.locks.check_invariants(self.data_revision())?;
        self.kv.check_invariants(self.data_revision())?;
        Ok(())
    }
}

fn invalid(message: impl Into<String>) -> Reject {
    Reject::InvalidArgument {
        message: message.into(),
    }
}

#[cfg(test)]
mod tests;
