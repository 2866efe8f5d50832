//! The body of the `apply` fuzz target: decodes bytes into a sequence of log entries, applies them
//! to a fresh `ClusterState`, and checks every step against the rules of `apply`.
//!
//! Shared by the cargo-fuzz target (`fuzz/fuzz_targets/apply.rs`) and the stable test that replays
//! the committed corpus (`tests/fuzz_corpus.rs`). Pure: no clock, no randomness, no I/O.
//!
//! # Encoding
//!
//! Each step starts with a control byte: the low nibble picks the entry kind, the high nibble the
//! log index (`0`: the same index again, `1`: one back, `2`: a gap of two, `3`: a gap of 1000,
//! anything else: the next index). The kind then reads its own field bytes:
//!
//! | low nibble | entry          | field bytes                              |
//! |------------|----------------|------------------------------------------|
//! | 0          | `Bootstrap`    | cluster id, id, name, addr, max_voters   |
//! | 1, 2       | `AddMember`    | id, name, addr                           |
//! | 3          | `Lock`         | see `data_op`                          |
//! | 4          | a data command | kind (`Kv`, `ExpireLocks`, `SetAutoclean`, `Batch`), see `data_op` |
//! | 5, 6       | `MarkUp`       | id, addr (none when the byte is ≥ 128)   |
//! | 7          | `MarkDown`     | id                                       |
//! | 8          | `MarkLeaving`  | id                                       |
//! | 9..=11     | `SetRoles`     | voter bits, learner bits (ids 1..=8)     |
//! | 12, 13     | `RemoveMember` | id (bit 7: `Removed`, else `Left`)       |
//! | 14         | `Noop`         | -                                        |
//! | 15         | a blank entry  | leader id (`ClusterState::leader_elected`) |
//!
//! Ids, names and addresses come from small pools (ids 1..=8, names n1..n8, four addresses) so that
//! commands collide, with a few invalid or edge values mixed in; so do lock resources, owners and
//! keys, and fencing tokens and compared revisions are drawn from the last few entries' revisions.
//! Bytes past the end read as 0.

use std::collections::{BTreeMap, BTreeSet};

use crate::check::{check_addr, check_name};
use crate::command::{Command, DataCommand, RemoveReason, Request};
use crate::id::NodeId;
use crate::kv::KvOp;
use crate::limits::{
    MAX_ADDR_BYTES, MAX_MEMBERS, MAX_NAME_BYTES, MAX_VALUE_BYTES, MAX_VOTERS_LIMIT, OPS_PER_ENTRY,
};
use crate::lock::LockOp;
use crate::member::{Member, Role, Status};
use crate::outcome::{op_revision, Response};
use crate::state::ClusterState;

/// Most steps one input decodes into; the rest of a longer input is ignored.
pub const MAX_STEPS: usize = 4096;

const VALID_ADDRS: [&str; 4] = [
    "127.0.0.1:4370",
    "127.0.0.2:4370",
    "[::1]:4370",
    "node.example:1",
];

/// `max_voters` values: the valid odd ones first, then invalid ones.
const MAX_VOTERS: [u32; 10] = [1, 3, 5, 7, 9, 0, 2, 4, 11, u32::MAX];

/// One committed log entry as the store hands it to the state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A leader-stamped command, applied with [`ClusterState::apply`].
    Normal(Request),
    /// The blank entry a new term's leader commits first, recorded with
    /// [`ClusterState::leader_elected`].
    Blank { leader: NodeId },
}

/// Reads bytes, yielding 0 past the end.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
}

fn id(b: u8) -> NodeId {
    match b {
        255 => NodeId::MAX,
        254 => 0,
        _ => NodeId::from(b % 8) + 1,
    }
}

fn name(b: u8) -> String {
    match b % 16 {
        0..=11 => format!("n{}", b % 8 + 1),
        12 => String::new(),
        13 => "bad name".into(),
        14 => "x".repeat(MAX_NAME_BYTES + 1),
        _ => "a".repeat(MAX_NAME_BYTES),
    }
}

fn addr(b: u8) -> String {
    match b % 16 {
        0..=11 => VALID_ADDRS[usize::from(b) % VALID_ADDRS.len()].into(),
        12 => "nowhere".into(),
        13 => "h:0".into(),
        14 => ":4370".into(),
        _ => format!("{}:1", "h".repeat(MAX_ADDR_BYTES)),
    }
}

fn ids_from_bits(bits: u8) -> Vec<NodeId> {
    (0..8u64)
        .filter(|i| bits & (1 << i) != 0)
        .map(|i| i + 1)
        .collect()
}

/// Decodes `data` into `(log index, entry)` steps; see the module docs for the encoding.
pub fn decode(data: &[u8]) -> Vec<(u64, Entry)> {
    let mut b = Bytes(data);
    let mut steps = Vec::new();
    let mut idx = 0u64;
    while !b.0.is_empty() && steps.len() < MAX_STEPS {
        let ctl = b.next();
        idx = match ctl >> 4 {
            0 => idx,
            1 => idx.saturating_sub(1),
            2 => idx.saturating_add(2),
            3 => idx.saturating_add(1000),
            _ => idx.saturating_add(1),
        };
        let cmd = match ctl & 0x0f {
            0 => Command::Bootstrap {
                cluster_id: match b.next() % 4 {
                    0 => 0,
                    1 => 1,
                    2 => 2,
                    _ => u64::MAX,
                },
                id: id(b.next()),
                name: name(b.next()),
                addr: addr(b.next()),
                max_voters: MAX_VOTERS[usize::from(b.next()) % MAX_VOTERS.len()],
            },
            1 | 2 => Command::AddMember {
                id: id(b.next()),
                name: name(b.next()),
                addr: addr(b.next()),
            },
            3 => lock_op(&mut b, idx),
            4 => data_op(&mut b, idx),
            5 | 6 => {
                let id = id(b.next());
                let a = b.next();
                Command::MarkUp {
                    id,
                    addr: (a < 128).then(|| addr(a)),
                }
            }
            7 => Command::MarkDown { id: id(b.next()) },
            8 => Command::MarkLeaving { id: id(b.next()) },
            9..=11 => Command::SetRoles {
                voters: ids_from_bits(b.next()),
                learners: ids_from_bits(b.next()),
            },
            12 | 13 => {
                let x = b.next();
                Command::RemoveMember {
                    id: id(x),
                    reason: if x & 0x80 != 0 {
                        RemoveReason::Removed
                    } else {
                        RemoveReason::Left
                    },
                }
            }
            14 => Command::Noop,
            _ => {
                steps.push((
                    idx,
                    Entry::Blank {
                        leader: id(b.next()),
                    },
                ));
                continue;
            }
        };
        let now_ms = 1_700_000_000_000 + idx.wrapping_mul(10);
        steps.push((idx, Entry::Normal(Request { now_ms, cmd })));
    }
    steps
}

/// Lock resources, owners and keys: three valid, one invalid (empty).
const RESOURCES: [&str; 4] = ["r1", "r2", "r/3", ""];
const OWNERS: [&str; 4] = ["o1", "o2", "o3", ""];
const KEYS: [&str; 4] = ["k1", "k2", "k/3", ""];
/// Lease and wait times (ms); entries are 10 ms apart, a gap of 1000 entries is 10 s.
const TTLS: [u64; 4] = [0, 20, 500, 5_000];
const WAITS: [u64; 4] = [0, 30, 1_000, 60_000];

/// An operation revision of one of the last eight entries (fencing tokens, compared revisions,
/// `abandon`'s `after`), or 0.
fn recent_revision(idx: u64, b: u8) -> u64 {
    if b == 0xff {
        return 0;
    }
    let entry = idx.saturating_sub(u64::from(b % 8));
    entry
        .saturating_mul(OPS_PER_ENTRY)
        .saturating_add(u64::from((b >> 3) % 2))
}

/// A value: empty, short, 300 bytes, or one byte over the limit.
fn value(b: u8) -> Vec<u8> {
    match b % 4 {
        0 => Vec::new(),
        1 => vec![b],
        2 => vec![b; 300],
        _ => vec![b; MAX_VALUE_BYTES + 1],
    }
}

/// Kind byte (`% 8`: 0..=3 acquire, 4 and 5 renew, 6 release, 7 abandon), resource, owner, then
/// one parameter byte: ttl and wait for an acquire, else the token or revision (see
/// [`recent_revision`]).
fn lock_op(b: &mut Bytes, idx: u64) -> Command {
    let kind = b.next();
    let resource = RESOURCES[usize::from(b.next() % 4)].to_string();
    let owner = OWNERS[usize::from(b.next() % 4)].to_string();
    let p = b.next();
    Command::Lock(match kind % 8 {
        0..=3 => LockOp::Acquire {
            resource,
            owner,
            ttl_ms: TTLS[usize::from(p % 4)],
            wait_ms: WAITS[usize::from((p >> 2) % 4)],
        },
        4 | 5 => LockOp::Renew {
            resource,
            token: recent_revision(idx, p),
            ttl_ms: TTLS[usize::from((p >> 4) % 4)],
        },
        6 => LockOp::Release {
            resource,
            token: recent_revision(idx, p),
        },
        _ => LockOp::Abandon {
            resource,
            owner,
            after: recent_revision(idx, p),
        },
    })
}

/// Kind byte (`% 8`): 0..=2 put (key, value), 3 delete (key), 4 and 5 compare-and-swap (key,
/// expected revision, value or a delete), 6 expire locks, 7 set autoclean (0, 1 s or an hour)
/// when bit 7 is set, else a batch of the next two lock or key-value commands.
fn data_op(b: &mut Bytes, idx: u64) -> Command {
    let kind = b.next();
    let key = |b: &mut Bytes| KEYS[usize::from(b.next() % 4)].to_string();
    match kind % 8 {
        0..=2 => Command::Kv(KvOp::Put {
            key: key(b),
            value: value(b.next()),
        }),
        3 => Command::Kv(KvOp::Delete { key: key(b) }),
        4 | 5 => {
            let key = key(b);
            let expect = recent_revision(idx, b.next());
            let v = b.next();
            Command::Kv(KvOp::Cas {
                key,
                expect,
                value: (v < 200).then(|| value(v)),
            })
        }
        6 => Command::ExpireLocks,
        _ if kind & 0x80 != 0 => Command::SetAutoclean {
            ms: [0, 1_000, 3_600_000][usize::from(b.next() % 3)],
        },
        _ => {
            let one = |b: &mut Bytes| {
                if b.next().is_multiple_of(2) {
                    lock_op(b, idx)
                } else {
                    data_op_flat(b, idx)
                }
            };
            let first = one(b);
            // An expiry drawn here is left out: batches hold clients' commands only.
            let cmds = [first, one(b)]
                .into_iter()
                .filter_map(|c| DataCommand::try_from(c).ok())
                .collect();
            Command::Batch(cmds)
        }
    }
}

/// A key-value command or an expiry, never a batch (batches do not nest).
fn data_op_flat(b: &mut Bytes, idx: u64) -> Command {
    match data_op(b, idx) {
        Command::Batch(_) | Command::SetAutoclean { .. } => Command::ExpireLocks,
        c => c,
    }
}

/// Applies one entry the way the store does; `None` for a blank entry (it has no response).
fn apply_entry(st: &mut ClusterState, idx: u64, entry: &Entry) -> Option<Response> {
    match entry {
        Entry::Normal(req) => Some(st.apply(idx, req)),
        Entry::Blank { leader } => {
            st.leader_elected(idx, *leader);
            None
        }
    }
}

/// Decodes `data`, applies the entries to a fresh [`ClusterState`] and, after every step, checks
/// that:
///
/// - [`ClusterState::check_invariants`] holds (one member per name, voters within `max_voters`, ...);
/// - the revision never decreases, and equals the index of every entry after the revision;
/// - a stale entry ([`ClusterState::is_replay`]) is refused and changes nothing at all;
/// - a refused command and a blank entry change nothing but the revision (a refused lock or
///   key-value command may also move leases, as time does);
/// - every lock and key-value step keeps the rules of [`check_data_step`];
/// - an accepted command did what it says, touched no other member, and had valid arguments;
/// - events stay ordered, and new ones carry the entry's index;
/// - a second state fed the same entries in lockstep stays equal, responses included.
///
/// Returns a readable description of the first failing step. Never panics.
pub fn run_apply_sequence(data: &[u8]) -> Result<(), String> {
    let steps = decode(data);
    let mut st = ClusterState::default();
    let mut twin = ClusterState::default();
    // `twin` trails `st` by one step, so before each step it holds the state `st` had: the
    // checker's "before" without a clone per step.
    for (n, (idx, entry)) in steps.iter().enumerate() {
        let rev_before = twin.revision;
        let at = || format!("step {n} (index {idx}, {entry:?}, revision before {rev_before})");
        let resp = apply_entry(&mut st, *idx, entry);
        check_step(&twin, *idx, entry, resp.as_ref(), &st).map_err(|e| format!("{}: {e}", at()))?;
        let twin_resp = apply_entry(&mut twin, *idx, entry);
        if twin != st || twin_resp != resp {
            return Err(format!(
                "{}: not deterministic: {resp:?} vs {twin_resp:?}",
                at()
            ));
        }
    }
    Ok(())
}

/// Checks one step: `after` is `before` with `entry` applied at `idx`, `resp` what `apply` returned.
fn check_step(
    before: &ClusterState,
    idx: u64,
    entry: &Entry,
    resp: Option<&Response>,
    after: &ClusterState,
) -> Result<(), String> {
    after
        .check_invariants()
        .map_err(|e| format!("invariant broken: {e}"))?;
    if after.revision < before.revision {
        return Err(format!(
            "revision went back from {} to {}",
            before.revision, after.revision
        ));
    }
    if after
        .events
        .iter()
        .zip(after.events.iter().skip(1))
        .any(|(a, b)| a.revision > b.revision)
    {
        return Err("events are out of revision order".into());
    }
    if let Some(e) = after
        .events
        .iter()
        .find(|e| e.revision > before.revision && e.revision != idx)
    {
        return Err(format!("a new event has revision {}", e.revision));
    }

    let stale = before.is_replay(idx);
    if stale {
        if after != before {
            return Err("a stale entry changed the state".into());
        }
        if let Some(r) = resp {
            if r.is_ok() || r.revision != before.revision {
                return Err(format!("a stale entry got {r:?}"));
            }
        }
        return Ok(());
    }
    if after.revision != idx {
        return Err(format!("revision is {}, not the index", after.revision));
    }
    let (req, resp) = match (entry, resp) {
        (Entry::Blank { leader }, None) => return check_blank(before, idx, *leader, after),
        (Entry::Normal(req), Some(resp)) => (req, resp),
        _ => return Err("a response does not match its entry".into()),
    };
    if resp.revision != idx {
        return Err(format!("response revision {}", resp.revision));
    }
    match &resp.rejected {
        // Leases move with the entries' time, refused or not: a new leader's first timed entry
        // extends the leases it inherited, and an expired holder makes way for its first waiter.
        Some(why) if is_data(&req.cmd) => {
            let mut expected = before.clone();
            expected.locks = after.locks.clone();
            if !same_but_revision(&expected, after) {
                return Err(format!("refused ({why}) but more than the leases changed"));
            }
            check_data_step(before, after, idx, !matches!(req.cmd, Command::Batch(_)))
        }
        Some(why) if !same_but_revision(before, after) => {
            Err(format!("refused ({why}) but the state changed"))
        }
        Some(why) => {
            must_accept(before, &req.cmd).map_err(|rule| format!("refused ({why}) though {rule}"))
        }
        None => check_accepted(before, req, after),
    }
}

/// A blank entry changes the revision, and records `leader_changed` exactly when the cluster
/// exists and its leader is a different node.
fn check_blank(
    before: &ClusterState,
    idx: u64,
    leader: NodeId,
    after: &ClusterState,
) -> Result<(), String> {
    if before.cluster_id == 0 || leader == before.leader {
        return if same_but_revision(before, after) {
            Ok(())
        } else {
            Err("a blank entry of the same leader changed more than the revision".into())
        };
    }
    let mut expect = before.clone();
    expect.revision = idx;
    expect.leader = leader;
    // Events at `idx` that were not there before (index 0 may already hold Bootstrap's).
    let new: Vec<_> = after
        .events
        .iter()
        .filter(|e| e.revision == idx && !before.events.contains(e))
        .collect();
    let ok = new.len() == 1
        && new[0].kind == crate::event::EventKind::LeaderChanged
        && new[0].id == leader
        && after.members == before.members
        && after.leader == leader
        && after.cluster_id == before.cluster_id
        && after.max_voters == before.max_voters;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "a new leader's blank entry: {new:?}, leader {}",
            after.leader
        ))
    }
}

/// Whether `a` and `b` are equal but for the revision.
fn same_but_revision(a: &ClusterState, b: &ClusterState) -> bool {
    // Destructured, so that a new field breaks the build here instead of going unchecked.
    let ClusterState {
        cluster_id,
        max_voters,
        members,
        revision: _,
        events,
        leader,
        compacted_to,
        clock_ms,
        locks,
        kv,
        autoclean_ms,
    } = a;
    // The clock follows the entries' time, accepted or not, and never goes backwards.
    *clock_ms <= b.clock_ms
        && *locks == b.locks
        && *kv == b.kv
        && *autoclean_ms == b.autoclean_ms
        && *cluster_id == b.cluster_id
        && *max_voters == b.max_voters
        && *members == b.members
        && *events == b.events
        && *leader == b.leader
        && *compacted_to == b.compacted_to
}

/// `Err(rule)` when `st` must accept `cmd`, so refusing it is a bug; `Ok` when a refusal is allowed.
fn must_accept(st: &ClusterState, cmd: &Command) -> Result<(), &'static str> {
    let bootstrapped = st.cluster_id != 0;
    let present = |id: &NodeId| st.members.contains_key(id);
    match cmd {
        Command::Noop => Err("a noop is always accepted"),
        Command::MarkDown { id } | Command::MarkLeaving { id } if bootstrapped && present(id) => {
            Err("the member exists")
        }
        Command::MarkUp { id, addr }
            if bootstrapped
                && present(id)
                && addr.as_deref().is_none_or(|a| check_addr(a).is_ok()) =>
        {
            Err("the member exists and the address is valid")
        }
        Command::RemoveMember { id, .. } if bootstrapped && present(id) => Err("the member exists"),
        Command::AddMember { id, name, addr }
            if bootstrapped && check_name(name).is_ok() && check_addr(addr).is_ok() =>
        {
            let holder = st.member_by_name(name);
            match st.members.get(id) {
                Some(m) if m.name == *name => Err("the member re-joins under its own name"),
                None if holder.is_none_or(|m| m.status == Status::Down)
                    && (holder.is_some() || st.members.len() < MAX_MEMBERS) =>
                {
                    Err("the name is free or held by a down member")
                }
                _ => Ok(()),
            }
        }
        Command::SetRoles { voters, .. }
            if bootstrapped
                && !voters.is_empty()
                && voters.iter().collect::<BTreeSet<_>>().len() <= st.max_voters as usize =>
        {
            Err("the voters are within max_voters")
        }
        Command::Bootstrap {
            cluster_id,
            name,
            addr,
            max_voters,
            ..
        } if !bootstrapped
            && *cluster_id != 0
            && valid_max_voters(*max_voters)
            && check_name(name).is_ok()
            && check_addr(addr).is_ok() =>
        {
            Err("the cluster is new and the arguments are valid")
        }
        _ => Ok(()),
    }
}

/// Checks what an accepted command did: its arguments were valid, it did what it says, and members
/// it does not name are untouched.
fn check_accepted(
    before: &ClusterState,
    req: &Request,
    after: &ClusterState,
) -> Result<(), String> {
    let cmd = &req.cmd;
    if !matches!(cmd, Command::Bootstrap { .. } | Command::Noop) && before.cluster_id == 0 {
        return Err("accepted before the bootstrap".into());
    }
    if !matches!(cmd, Command::Bootstrap { .. })
        && (after.cluster_id != before.cluster_id || after.max_voters != before.max_voters)
    {
        return Err("the cluster id or max_voters changed".into());
    }
    match cmd {
        Command::Noop => {
            if !same_but_revision(before, after) {
                return Err("a noop changed more than the revision".into());
            }
        }
        Command::Bootstrap {
            cluster_id,
            id,
            name,
            addr,
            max_voters,
        } => {
            if before.cluster_id != 0 {
                return Err("bootstrapped twice".into());
            }
            if *cluster_id == 0 || !valid_max_voters(*max_voters) {
                return Err("accepted an invalid cluster id or max_voters".into());
            }
            valid_name_addr(name, addr)?;
            let m = after.members.get(id).ok_or("the first member is missing")?;
            if after.cluster_id != *cluster_id
                || after.max_voters != *max_voters
                || after.members.len() != 1
                || m.name != *name
                || m.addr != *addr
                || m.role != Role::Voter
                || m.status != Status::Up
            {
                return Err(format!("bootstrap gave {after:?}"));
            }
        }
        Command::AddMember { id, name, addr } => {
            valid_name_addr(name, addr)?;
            let m = after.members.get(id).ok_or("the added member is missing")?;
            if m.name != *name || m.addr != *addr {
                return Err(format!("added member is {m}"));
            }
            match before.members.get(id) {
                Some(old)
                    if *m
                        != Member {
                            addr: addr.clone(),
                            ..old.clone()
                        } =>
                {
                    return Err(format!("re-adding {old} gave {m}"));
                }
                None if m.role != Role::Learner
                    || m.status != Status::Joining
                    || m.since_ms != req.now_ms
                    || m.joined_at_ms != req.now_ms =>
                {
                    return Err(format!("a new member is {m}, not a joining learner"));
                }
                _ => {}
            }
            // The only other change allowed: a down member of the same name is replaced.
            for (k, old) in &before.members {
                if k != id
                    && after.members.get(k) != Some(old)
                    && !(old.name == *name
                        && old.status == Status::Down
                        && !after.members.contains_key(k))
                {
                    return Err(format!("adding {id} changed member {old}"));
                }
            }
            others_unchanged(before, after, &[*id], true)?;
        }
        Command::MarkUp { id, .. } | Command::MarkDown { id } | Command::MarkLeaving { id } => {
            let (want, new_addr) = match cmd {
                Command::MarkUp { addr, .. } => (Status::Up, addr.as_ref()),
                Command::MarkDown { .. } => (Status::Down, None),
                _ => (Status::Leaving, None),
            };
            if let Some(a) = new_addr {
                check_addr(a).map_err(|e| format!("accepted an invalid address: {e}"))?;
            }
            let (old, m) = before
                .members
                .get(id)
                .zip(after.members.get(id))
                .ok_or("changed the status of a missing member")?;
            let mut expect = old.clone();
            expect.status = want;
            if want != old.status {
                expect.since_ms = req.now_ms;
            }
            if let Some(a) = new_addr {
                expect.addr.clone_from(a);
            }
            if *m != expect {
                return Err(format!("member {old} became {m}, wanted {expect}"));
            }
            others_unchanged(before, after, &[*id], false)?;
        }
        Command::SetRoles { voters, learners } => {
            let voter_set: BTreeSet<NodeId> = voters.iter().copied().collect();
            if voter_set.is_empty() || voter_set.len() > before.max_voters as usize {
                return Err(format!(
                    "accepted {} voters with max_voters {}",
                    voter_set.len(),
                    before.max_voters
                ));
            }
            if after.members.keys().ne(before.members.keys()) {
                return Err("setting roles added or removed members".into());
            }
            for (old, m) in before.members.values().zip(after.members.values()) {
                let want = if voter_set.contains(&old.id) {
                    Role::Voter
                } else if learners.contains(&old.id) || old.role == Role::Voter {
                    Role::Learner
                } else {
                    old.role
                };
                let mut expect = old.clone();
                expect.role = want;
                if *m != expect {
                    return Err(format!("member {old} became {m}, wanted role {want}"));
                }
            }
        }
        Command::RemoveMember { id, .. } => {
            if !before.members.contains_key(id) || after.members.contains_key(id) {
                return Err(format!("removing {id} did not remove exactly that member"));
            }
            others_unchanged(before, after, &[*id], false)?;
        }
        Command::SetAutoclean { ms } => {
            if after.autoclean_ms != Some(*ms) || after.members != before.members {
                return Err("set autoclean did not set exactly the delay".into());
            }
        }
        Command::Lock(_) | Command::Kv(_) | Command::ExpireLocks | Command::Batch(_) => {
            if after.members != before.members || after.events != before.events {
                return Err("a data command changed the membership".into());
            }
            check_data_step(
                before,
                after,
                after.revision,
                !matches!(cmd, Command::Batch(_)),
            )?;
        }
    }
    Ok(())
}

fn is_data(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::Lock(_) | Command::Kv(_) | Command::ExpireLocks | Command::Batch(_)
    )
}

/// Holder (owner, token) and line (owner, wait deadline: a waiter that left and came back is a
/// new arrival) of each lock.
type Locks = BTreeMap<String, ((String, u64), Vec<(String, u64)>)>;

fn locks(st: &ClusterState) -> Locks {
    st.locks
        .locks
        .iter()
        .map(|(r, l)| {
            let line = l
                .waiters
                .iter()
                .map(|w| (w.owner.clone(), w.deadline_ms))
                .collect();
            (r.clone(), ((l.owner.clone(), l.token), line))
        })
        .collect()
}

/// Checks the lock and key-value rules of one step from `before` to `after` (at log index
/// `idx`); `Err` names the broken rule. A new holder comes from a grant in this entry, with a
/// token newer than the one before; the same owner keeps its token while its lease runs; lines
/// are first come, first served; a written key gets a revision of this entry. `fifo`: also check
/// the lines' order (not across a batch, where one owner may leave and rejoin with an identical
/// deadline). Shared by this module's checker and the seeded test `tests/data_fuzz.rs`.
pub fn check_data_step(
    before: &ClusterState,
    after: &ClusterState,
    idx: u64,
    fifo: bool,
) -> Result<(), String> {
    after.check_invariants()?;
    if after.clock_ms < before.clock_ms {
        return Err("the clock went back".into());
    }
    let (b, a) = (locks(before), locks(after));
    let floor = op_revision(idx, 0);
    for (r, ((owner, token), line)) in &a {
        match b.get(r) {
            Some(((o0, t0), line0)) => {
                if (owner, token) != (o0, t0) {
                    // A new holder comes from a grant in this entry.
                    if *token <= *t0 || *token < floor {
                        return Err(format!("{r}: token {token} after {t0} at entry {idx}"));
                    }
                    // The same owner keeps its token while its lease runs (re-entrant).
                    let lease_ran = before.locks.locks[r].expires_ms > after.clock_ms;
                    if owner == o0 && lease_ran && fifo {
                        return Err(format!("{r}: {owner} re-acquired with a new token"));
                    }
                    // A waiter is served only when everyone ahead of it has left the line.
                    if let Some(p) = line0.iter().position(|w| w.0 == *owner) {
                        if fifo && line0[..p].iter().any(|w| line.contains(w)) {
                            return Err(format!("{r}: {owner} served ahead of {line0:?}"));
                        }
                    }
                }
                // First come, first served: those still waiting keep their order, and newcomers
                // join at the end.
                let kept: Vec<_> = line0.iter().filter(|w| line.contains(w)).collect();
                let prefix: Vec<_> = line.iter().take(kept.len()).collect();
                if fifo && kept != prefix {
                    return Err(format!("{r}: line {line0:?} became {line:?}"));
                }
            }
            None if *token < floor => {
                return Err(format!("{r}: new hold with old token {token}"));
            }
            None => {}
        }
    }
    for (k, e) in &after.kv.entries {
        let changed = before.kv.entries.get(k) != Some(e);
        if changed && e.mod_revision < floor {
            return Err(format!("{k}: changed with revision {}", e.mod_revision));
        }
    }
    Ok(())
}

/// `max_voters` must be odd, 1..=MAX_VOTERS_LIMIT.
fn valid_max_voters(max_voters: u32) -> bool {
    let mv = max_voters as usize;
    mv % 2 == 1 && mv <= MAX_VOTERS_LIMIT
}

fn valid_name_addr(name: &str, addr: &str) -> Result<(), String> {
    check_name(name).map_err(|e| format!("accepted an invalid name: {e}"))?;
    check_addr(addr).map_err(|e| format!("accepted an invalid address: {e}"))
}

/// Members other than `except` are as they were; with `may_drop`, some may be gone instead.
fn others_unchanged(
    before: &ClusterState,
    after: &ClusterState,
    except: &[NodeId],
    may_drop: bool,
) -> Result<(), String> {
    for (k, m) in &after.members {
        if !except.contains(k) && before.members.get(k) != Some(m) {
            return Err(format!("member {m} changed or appeared"));
        }
    }
    for (k, m) in &before.members {
        if !except.contains(k) && !may_drop && !after.members.contains_key(k) {
            return Err(format!("member {m} disappeared"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::MAX_EVENTS_RETAINED;

    /// Control byte: the next log index, entry kind `op`.
    const NEXT: u8 = 0x40;

    fn boot_bytes() -> Vec<u8> {
        // Bootstrap cluster 1, id 1, n1, 127.0.0.1:4370, max_voters 9.
        vec![NEXT, 1, 0, 0, 0, 4]
    }

    fn run(data: &[u8]) -> ClusterState {
        let mut st = ClusterState::default();
        for (idx, e) in decode(data) {
            apply_entry(&mut st, idx, &e);
        }
        st
    }

    fn booted() -> ClusterState {
        run(&boot_bytes())
    }

    fn member(id: NodeId, name: &str) -> Member {
        Member {
            id,
            name: name.into(),
            addr: "127.0.0.1:4370".into(),
            role: Role::Learner,
            status: Status::Up,
            since_ms: 0,
            joined_at_ms: 0,
        }
    }

    fn req(cmd: Command) -> Entry {
        Entry::Normal(Request { now_ms: 0, cmd })
    }

    #[test]
    fn empty_short_and_truncated_inputs_are_fine() {
        run_apply_sequence(&[]).unwrap();
        run_apply_sequence(&[0]).unwrap();
        run_apply_sequence(&[0, 1, 2, 3, 4, 5, 6]).unwrap();
        run_apply_sequence(&[0xff; 64]).unwrap();
    }

    #[test]
    fn bytes_decode_into_the_documented_commands() {
        let mut data = boot_bytes();
        data.extend([NEXT | 1, 1, 1, 1]); // add id 2, n2
        data.extend([0x20 | 9, 0b11, 0]); // gap of two: voters {1, 2}
        data.extend([7, 1]); // high nibble 0, the same index again: mark down id 2
        data.extend([NEXT | 15]); // blank
        let steps = decode(&data);
        let idx: Vec<u64> = steps.iter().map(|s| s.0).collect();
        assert_eq!(idx, vec![1, 2, 4, 4, 5]);
        assert!(matches!(
            &steps[0].1,
            Entry::Normal(Request {
                cmd: Command::Bootstrap {
                    cluster_id: 1,
                    id: 1,
                    max_voters: 9,
                    ..
                },
                ..
            })
        ));
        assert!(matches!(
            &steps[1].1,
            Entry::Normal(Request { cmd: Command::AddMember { id: 2, name, .. }, .. }) if name == "n2"
        ));
        assert!(matches!(steps[4].1, Entry::Blank { .. }));
        let st = run(&data);
        assert_eq!(st.revision, 5);
        assert_eq!(st.voter_ids().into_iter().collect::<Vec<_>>(), vec![1, 2]);
        // The stale mark-down at index 4 was refused.
        assert_eq!(st.members[&2].status, Status::Joining);
        run_apply_sequence(&data).unwrap();
    }

    /// The decoder is not degenerate: pseudo-random bytes reach every kind of entry, stale
    /// indexes, invalid names and addresses, and both accepted and refused commands.
    #[test]
    fn random_bytes_reach_every_kind_of_step() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let data: Vec<u8> = (0..16 * 1024)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect();
        let steps = decode(&data);
        assert_eq!(steps.len(), MAX_STEPS);
        let mut kinds = std::collections::HashSet::new();
        let (mut stale, mut bad_name, mut bad_addr, mut ok, mut refused) = (0, 0, 0, 0, 0);
        let (mut grants, mut writes) = (0, 0);
        let mut st = ClusterState::default();
        for (idx, e) in &steps {
            if st.is_replay(*idx) {
                stale += 1;
            }
            if let Entry::Normal(r) = e {
                kinds.insert(std::mem::discriminant(&r.cmd));
                if let Command::AddMember { name, addr, .. } = &r.cmd {
                    bad_name += usize::from(check_name(name).is_err());
                    bad_addr += usize::from(check_addr(addr).is_err());
                }
            }
            let (locks_before, keys_before) = (st.locks.locks.clone(), st.kv.entries.clone());
            match apply_entry(&mut st, *idx, e) {
                Some(r) if r.is_ok() => ok += 1,
                Some(_) => refused += 1,
                None => {}
            }
            grants += st
                .locks
                .locks
                .iter()
                .filter(|(r, l)| locks_before.get(*r).is_none_or(|o| o.token != l.token))
                .count();
            writes += st
                .kv
                .entries
                .iter()
                .filter(|(k, v)| {
                    keys_before
                        .get(*k)
                        .is_none_or(|o| o.mod_revision != v.mod_revision)
                })
                .count();
        }
        assert_eq!(kinds.len(), 13, "every Command variant");
        assert!(grants > 20, "only {grants} lock grants");
        assert!(writes > 20, "only {writes} key writes");
        for (what, n) in [
            ("stale", stale),
            ("bad name", bad_name),
            ("bad addr", bad_addr),
            ("accepted", ok),
            ("refused", refused),
        ] {
            assert!(n > 20, "only {n} {what} steps");
        }
        run_apply_sequence(&data).unwrap();
    }

    #[test]
    fn the_checker_catches_a_lock_granted_with_an_old_token() {
        let mut data = boot_bytes();
        data.extend([NEXT | 3, 0, 0, 0, 3]); // acquire r1 for o1, 5 s
        let before = run(&boot_bytes());
        let after = run(&data);
        assert_eq!(after.locks.locks["r1"].owner, "o1");
        let idx = after.revision;
        check_data_step(&before, &after, idx, true).unwrap();
        let mut forged = after.clone();
        forged.locks.locks.get_mut("r1").unwrap().token = before.data_revision();
        let e = check_data_step(&before, &forged, idx, true).unwrap_err();
        assert!(e.contains("new hold with old token"), "{e}");
        let mut thief = after.clone();
        thief.locks.locks.get_mut("r1").unwrap().owner = "o2".into();
        let e = check_data_step(&after, &thief, idx, true).unwrap_err();
        assert!(e.contains("r1: token"), "{e}");
    }

    #[test]
    fn a_long_sequence_overflows_the_event_window() {
        let mut data = boot_bytes();
        for k in 1..8u8 {
            data.extend([NEXT | 1, k, k, k]); // add n2..n8
        }
        for _ in 0..300 {
            data.extend([NEXT | 9, 0xff, 0]); // all voters
            data.extend([NEXT | 9, 0x01, 0xff]); // only id 1 a voter
        }
        let st = run(&data);
        assert_eq!(st.members.len(), 8);
        assert_eq!(st.events.len(), MAX_EVENTS_RETAINED);
        run_apply_sequence(&data).unwrap();
    }

    #[test]
    fn the_checker_catches_a_duplicate_name() {
        let before = booted();
        let mut after = before.clone();
        after.revision += 1;
        after.members.insert(2, member(2, "n1"));
        let cmd = Command::AddMember {
            id: 2,
            name: "n1".into(),
            addr: "127.0.0.1:4370".into(),
        };
        let resp = Response {
            revision: after.revision,
            rejected: None,
            outcome: Default::default(),
        };
        let err = check_step(&before, after.revision, &req(cmd), Some(&resp), &after).unwrap_err();
        assert!(err.contains("two members are named n1"), "{err}");
    }

    #[test]
    fn the_checker_catches_a_refused_command_that_changed_the_state() {
        let before = booted();
        let mut after = before.clone();
        after.revision += 1;
        after.members.get_mut(&1).expect("booted").status = Status::Down;
        let resp = Response {
            revision: after.revision,
            rejected: Some(crate::outcome::Reject::NoSuchMember { id: 3 }),
            outcome: Default::default(),
        };
        let err = check_step(
            &before,
            after.revision,
            &req(Command::MarkDown { id: 3 }),
            Some(&resp),
            &after,
        )
        .unwrap_err();
        assert!(err.contains("but the state changed"), "{err}");
    }

    #[test]
    fn the_checker_catches_a_stale_entry_that_changed_the_state() {
        let before = booted();
        let mut after = before.clone();
        after.members.insert(2, member(2, "n2"));
        let blank = Entry::Blank { leader: 1 };
        let err = check_step(&before, before.revision, &blank, None, &after).unwrap_err();
        assert!(err.contains("stale entry changed"), "{err}");
    }

    #[test]
    fn the_checker_catches_an_accepted_command_that_did_nothing() {
        let before = booted();
        let mut after = before.clone();
        after.revision += 1;
        let resp = Response {
            revision: after.revision,
            rejected: None,
            outcome: Default::default(),
        };
        let err = check_step(
            &before,
            after.revision,
            &req(Command::RemoveMember {
                id: 1,
                reason: RemoveReason::Left,
            }),
            Some(&resp),
            &after,
        )
        .unwrap_err();
        assert!(err.contains("did not remove"), "{err}");
    }

    #[test]
    fn the_checker_catches_a_refused_noop() {
        let before = booted();
        let mut after = before.clone();
        after.revision += 1;
        let resp = Response {
            revision: after.revision,
            rejected: Some(crate::outcome::Reject::WouldLoseQuorum),
            outcome: Default::default(),
        };
        let err = check_step(
            &before,
            after.revision,
            &req(Command::Noop),
            Some(&resp),
            &after,
        )
        .unwrap_err();
        assert!(err.contains("always accepted"), "{err}");
    }
}
