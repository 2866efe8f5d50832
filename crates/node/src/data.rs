//! The data API on `Node`: lease locks and the key-value space. Every write is one log entry
//! proposed by the leader (a follower forwards it, one hop); reads are linearizable through a
//! read-index round on the leader unless the caller asks for a stale local read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ekka_proto::pb;
use ekka_types::{
    millis as ms, ApiError, ClusterState, Command, DataCommand, ErrorCode, KvEntry, KvEvent, KvOp,
    LockOp, Outcome, Response,
};
pub use ekka_types::{KvRange, LockGrant};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::warn;

use crate::error::{internal, outcome_unknown, unavailable};
use crate::node::{now_ms, Core, Inner, Node};
use ekka_types::limits::MAX_BATCH_BYTES;

/// How a read is served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Read {
    /// Reflects every write acknowledged before the read started (a read-index round on the
    /// leader). Fails with `unavailable` without a quorum.
    #[default]
    Linearizable,
    /// This node's state as it is, possibly behind; answers even without a quorum.
    Stale,
}

/// A read a follower forwards to the leader.
#[derive(Serialize, Deserialize)]
pub(crate) struct ReadQuery {
    pub key: String,
    pub prefix: bool,
    pub limit: u32,
}

fn read_state(st: &ClusterState, q: &ReadQuery) -> KvRange {
    let limit = match q.limit as usize {
        0 => ekka_types::limits::MAX_RANGE_KEYS,
        n => n.min(ekka_types::limits::MAX_RANGE_KEYS),
    };
    let (entries, more) = if q.prefix {
        let mut v = st.kv.range(&q.key, limit + 1);
        let more = v.len() > limit;
        v.truncate(limit);
        (v, more)
    } else {
        let v = st
            .kv
            .entries
            .get(&q.key)
            .map(|e| vec![(q.key.clone(), e.clone())])
            .unwrap_or_default();
        (v, false)
    };
    KvRange {
        revision: st.data_revision(),
        entries,
        more,
    }
}

fn check_query(q: &ReadQuery) -> Result<(), ApiError> {
    let r = if q.prefix && q.key.is_empty() {
        Ok(())
    } else {
        ekka_types::kv::check_key(&q.key)
    };
    r.map_err(|m| ApiError::new(ErrorCode::InvalidArgument, m))
}

impl Inner {
    /// Proposes a lock or key-value command on the leader (forwarding it when this node is not).
    pub(crate) async fn propose_data(
        self: &Arc<Self>,
        cmd: Command,
        forwarded: bool,
    ) -> Result<Response, ApiError> {
        let valid = match &cmd {
            Command::Lock(op) => op.validate(),
            Command::Kv(op) => op.validate(),
            Command::SetAutoclean { .. } => Ok(()),
            _ => {
                return Err(ApiError::new(
                    ErrorCode::InvalidArgument,
                    "only lock and key-value commands are accepted here",
                ))
            }
        };
        valid.map_err(crate::error::from_reject)?;
        self.check_fault()?;
        // Only one of the two paths runs; the command is encoded only when it is forwarded.
        let slot = Mutex::new(Some(cmd));
        let take = || slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        let me = self.clone();
        let reply = self
            .via_leader(
                forwarded,
                true,
                |core| async move {
                    let cmd = take().ok_or_else(|| internal("the command was taken twice"))?;
                    me.check_quorum(&core)?;
                    match DataCommand::try_from(cmd) {
                        Ok(data) => me.submit(data).await.map(Reply::Local),
                        // SetAutoclean: an entry of its own.
                        Err(cmd) => me.propose_on(&core, cmd).await.map(Reply::Local),
                    }
                },
                |mut p| {
                    // Encoded again on each try (a retry at a new leader is rare).
                    let payload = match slot.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                        Some(cmd) => to_payload(cmd),
                        None => Err(internal("the command was taken")),
                    };
                    async move {
                        let payload = payload.map_err(|e| tonic::Status::internal(e.message))?;
                        p.forward(payload).await.map(|r| r.map(Reply::Remote))
                    }
                },
            )
            .await?;
        reply.into_value()
    }

    /// Hands `cmd` to the leader's batcher and waits for its own result.
    async fn submit(&self, cmd: DataCommand) -> Result<Response, ApiError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.batch_tx
            .send(Pending { cmd, tx })
            .map_err(|_| unavailable("this node is shutting down"))?;
        tokio::select! {
            r = rx => r.map_err(|_| {
                outcome_unknown(
                    "the batcher stopped with the write in hand (shutdown); it may have been \
                     applied",
                )
            })?,
            () = self.quorum_lost() => Err(crate::node::lost_quorum_in_flight()),
        }
    }

    /// A read served by the leader after confirming it still leads (read index), or by this node
    /// from its own state when `read` is `Stale`.
    pub(crate) async fn read_data(
        self: &Arc<Self>,
        q: ReadQuery,
        read: Read,
        forwarded: bool,
    ) -> Result<KvRange, ApiError> {
        check_query(&q)?;
        self.check_fault()?;
        if read == Read::Stale {
            let core = self.core();
            let st = core.state.read().unwrap_or_else(|e| e.into_inner());
            return Ok(read_state(&st, &q));
        }
        let payload = to_payload(&q)?;
        let me = self.clone();
        let reply = self
            .via_leader(
                forwarded,
                false,
                |core| async move { me.leader_read(&core, &q).await.map(Reply::Local) },
                |mut p| {
                    let payload = payload.clone();
                    async move { p.read(payload).await.map(|r| r.map(Reply::Remote)) }
                },
            )
            .await?;
        reply.into_value()
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

    async fn leader_read(&self, core: &Core, q: &ReadQuery) -> Result<KvRange, ApiError> {
        self.check_quorum(core)?;
        let fut = core.raft.ensure_linearizable();
        tokio::select! {
            r = tokio::time::timeout(self.cfg.op_timeout, fut) => r
                .map_err(|_| unavailable("no quorum: the read index was not confirmed in time"))?
                .map_err(|e| unavailable(format!("no linearizable read: {e}")))?,
            () = self.quorum_lost() => {
                return Err(unavailable("no quorum: the leader lost its quorum during the read"))
            }
        };
        let st = core.state.read().unwrap_or_else(|e| e.into_inner());
        Ok(read_state(&st, q))
    }

    /// Acquires a lock, waiting in line up to `wait` (woken by the state machine, never by
    /// polling the leader).
    pub(crate) async fn lock_acquire(
        self: &Arc<Self>,
        resource: &str,
        owner: &str,
        ttl_ms: u64,
        wait_ms: u64,
    ) -> Result<LockGrant, ApiError> {
        let op = LockOp::Acquire {
            resource: resource.into(),
            owner: owner.into(),
            ttl_ms,
            wait_ms,
        };
        let before = self
            .core()
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .revision;
        let resp = match self.propose_data(Command::Lock(op), false).await {
            Ok(r) => r,
            Err(e) => {
                if matches!(e.code, ErrorCode::Unavailable | ErrorCode::OutcomeUnknown) {
                    // The entry may still commit once a quorum is back: undo it then, so a
                    // failed acquire leaves nothing behind.
                    let undo = LockOp::Abandon {
                        resource: resource.into(),
                        owner: owner.into(),
                        after: before,
                    };
                    let me = self.clone();
                    let give_up = std::time::Instant::now() + Duration::from_millis(ttl_ms);
                    let tracker = me.clone();
                    tracker.spawn(async move {
                        // Until it commits, or the lease would have ended anyway.
                        while me
                            .propose_data(Command::Lock(undo.clone()), false)
                            .await
                            .is_err()
                            && std::time::Instant::now() < give_up
                            && !*me.shutdown.borrow()
                        {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    });
                    // The undo makes the outcome certain: nothing stays held.
                    return Err(unavailable(format!(
                        "{}; the acquire is undone if it commits",
                        e.message
                    )));
                }
                return Err(e);
            }
        };
        match resp.outcome {
            Outcome::Granted { token, expires_ms } => Ok(LockGrant { token, expires_ms }),
            Outcome::Queued { .. } => {
                // Should the caller go away while in line, leave the line and give back a
                // lock granted meanwhile instead of holding it for a whole lease.
                let mut gone = LeaveLine {
                    inner: Some(self.clone()),
                    resource: resource.to_string(),
                    owner: owner.to_string(),
                    queued_at: resp.revision,
                };
                let local_deadline = Duration::from_millis(wait_ms) + self.cfg.op_timeout;
                let r = tokio::time::timeout(
                    local_deadline,
                    self.wait_for_grant(resource, owner, resp.revision),
                )
                .await;
                gone.inner = None;
                match r {
                    Ok(r) => r,
                    Err(_) => {
                        // The state never said either way (cut off?): leave the line, and
                        // give back a hold granted meanwhile.
                        let op = LockOp::Abandon {
                            resource: resource.into(),
                            owner: owner.into(),
                            after: resp.revision,
                        };
                        let _ = self.propose_data(Command::Lock(op), false).await;
                        Err(unavailable(format!(
                            "no answer about {resource} within the wait"
                        )))
                    }
                }
            }
            other => Err(internal(format!("unexpected answer to acquire: {other:?}"))),
        }
    }

    /// Waits until the local state, at or after `from_rev`, shows `owner` holding `resource`
    /// (granted) or out of its line (the wait ran out).
    async fn wait_for_grant(
        &self,
        resource: &str,
        owner: &str,
        from_rev: u64,
    ) -> Result<LockGrant, ApiError> {
        let core = self.core();
        let mut applied = core.applied.clone();
        loop {
            {
                let st = core.state.read().unwrap_or_else(|e| e.into_inner());
                if st.data_revision() >= from_rev {
                    match st.locks.locks.get(resource) {
                        Some(l) if l.owner == owner => {
                            return Ok(LockGrant {
                                token: l.token,
                                expires_ms: l.expires_ms,
                            })
                        }
                        Some(l) if l.waiters.iter().any(|w| w.owner == owner) => {}
                        _ => {
                            return Err(ApiError::new(
                                ErrorCode::LockHeld,
                                format!("{resource} was not acquired within the wait"),
                            ))
                        }
                    }
                }
            }
            if applied.changed().await.is_err() {
                return Err(unavailable("this node reset its state while waiting"));
            }
        }
    }

    /// Streams key-value changes under `prefix` from revision `from` (inclusive), or only new
    /// ones when `None`.
    pub(crate) fn kv_watch(
        self: &Arc<Self>,
        prefix: String,
        from: Option<u64>,
    ) -> Result<mpsc::Receiver<Result<KvEvent, ApiError>>, ApiError> {
        if !prefix.is_empty() {
            ekka_types::kv::check_key(&prefix)
                .map_err(|m| ApiError::new(ErrorCode::InvalidArgument, m))?;
        }
        self.spawn_watch(
            from,
            |st| st.data_revision(),
            move |st, after| {
                st.kv
                    .events_from(&prefix, after + 1)
                    .ok_or_else(|| kv_compacted(after + 1, st))
            },
            |e: &KvEvent| e.revision,
        )
    }
}

/// Armed while an acquirer waits in line; dropped armed (the caller went away), it cancels the
/// wait and releases a lock granted meanwhile.
struct LeaveLine {
    inner: Option<Arc<Inner>>,
    resource: String,
    owner: String,
    queued_at: u64,
}

impl Drop for LeaveLine {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        let (resource, owner, queued_at) = (
            std::mem::take(&mut self.resource),
            std::mem::take(&mut self.owner),
            self.queued_at,
        );
        let tracker = inner.clone();
        tracker.spawn(async move {
            let op = LockOp::Abandon {
                resource,
                owner,
                after: queued_at,
            };
            let _ = inner.propose_data(Command::Lock(op), false).await;
        });
    }
}

/// A lock or key-value command waiting for the leader's next batch.
pub(crate) struct Pending {
    cmd: DataCommand,
    tx: tokio::sync::oneshot::Sender<Result<Response, ApiError>>,
}

impl Pending {
    /// Key and value bytes the command carries (what makes an entry large).
    fn cmd_bytes(&self) -> usize {
        match &self.cmd {
            DataCommand::Kv(op) => {
                op.key().len()
                    + match op {
                        KvOp::Put { value, .. }
                        | KvOp::Cas {
                            value: Some(value), ..
                        } => value.len(),
                        _ => 0,
                    }
            }
            DataCommand::Lock(_) => 0,
        }
    }
}

/// Batches proposed at once: while they commit, the next batch fills up.
const BATCHES_IN_FLIGHT: usize = 4;

/// The leader's write batcher: concurrent lock and key-value commands go into one log entry
/// (`Command::Batch`, at most `OPS_PER_ENTRY`), so one append, one fsync and one replication
/// round serve them all. Each command keeps its own result and operation revision.
pub(crate) async fn batcher(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT));
    let mut shutdown = inner.shutdown.subscribe();
    // A command that did not fit in the last batch; it opens the next one.
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => tokio::select! {
                p = rx.recv() => match p {
                    Some(p) => p,
                    None => return,
                },
                _ = shutdown.changed() => return,
            },
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.cmd_bytes();
        let mut batch = vec![first];
        while batch.len() < ekka_types::limits::OPS_PER_ENTRY as usize {
            let Some(p) = carry.take().or_else(|| rx.try_recv().ok()) else {
                break;
            };
            if bytes + p.cmd_bytes() > MAX_BATCH_BYTES {
                // Starts the next batch: one entry stays under `MAX_ENTRY_BYTES`.
                carry = Some(p);
                break;
            }
            bytes += p.cmd_bytes();
            batch.push(p);
        }
        let me = inner.clone();
        inner.spawn(async move {
            let _permit = permit;
            let (cmds, txs): (Vec<DataCommand>, Vec<_>) =
                batch.into_iter().map(|p| (p.cmd, p.tx)).unzip();
            let core = me.core();
            match me.propose_on(&core, Command::Batch(cmds)).await {
                Ok(Response {
                    outcome: Outcome::Batch(results),
                    ..
                }) if results.len() == txs.len() => {
                    for (r, tx) in results.into_iter().zip(txs) {
                        let one = match r.rejected {
                            Some(rej) => Err(crate::error::from_reject(rej)),
                            None => Ok(Response {
                                revision: r.revision,
                                rejected: None,
                                outcome: r.outcome,
                            }),
                        };
                        let _ = tx.send(one);
                    }
                }
                Ok(other) => {
                    let e = internal(format!("unexpected answer to a batch: {other:?}"));
                    for tx in txs {
                        let _ = tx.send(Err(e.clone()));
                    }
                }
                Err(e) => {
                    for tx in txs {
                        let _ = tx.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

/// Either a local answer or the leader's encoded one.
enum Reply<T> {
    Local(T),
    Remote(pb::RaftPayload),
}

impl<T: serde::de::DeserializeOwned> Reply<T> {
    /// The local answer, or the leader's, decoded.
    fn into_value(self) -> Result<T, ApiError> {
        match self {
            Reply::Local(r) => Ok(r),
            Reply::Remote(p) => ekka_proto::envelope::open(&p)
                .map_err(|e| internal(format!("unreadable answer from the leader: {e}"))),
        }
    }
}

fn kv_compacted(from: u64, st: &ClusterState) -> ApiError {
    ApiError::new(
        ErrorCode::Compacted,
        format!(
            "revision {from} is older than the oldest retained change ({}); read the keys again \
             (revision {}) and watch from there",
            st.kv.compacted_to + 1,
            st.data_revision()
        ),
    )
}

/// A value as a versioned payload (`ekka_types::codec`): a forwarded command or read, and the
/// leader's answer.
pub(crate) fn to_payload<T: Serialize>(v: &T) -> Result<pb::RaftPayload, ApiError> {
    ekka_proto::envelope::seal(v).map_err(internal)
}

/// Runs on every node; while it leads, proposes `ExpireLocks` when a lease or a wait runs out.
pub(crate) async fn lock_ticker(inner: Arc<Inner>) {
    let mut shutdown = inner.shutdown.subscribe();
    loop {
        let core = inner.core();
        let mut applied = core.applied.clone();
        // Seen: wake on the next change only (a clone starts at the sender's first value).
        applied.borrow_and_update();
        let next = if inner.is_leader(&core) {
            let st = core.state.read().unwrap_or_else(|e| e.into_inner());
            st.locks.next_deadline()
        } else {
            None
        };
        let now = now_ms();
        if let Some(due) = next.filter(|d| *d <= now) {
            if let Err(e) = inner.propose_on(&core, Command::ExpireLocks).await {
                warn!(error = %e, due, "expiring locks");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            continue;
        }
        let sleep = next.map_or(Duration::from_secs(1), |d| {
            Duration::from_millis(d - now).min(Duration::from_secs(1))
        });
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            r = applied.changed() => if r.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            },
            _ = shutdown.changed() => return,
        }
    }
}

/// A lock held by this process through [`Node::lock`]: renewed in the background until dropped
/// or released. Dropping it releases the lock (best effort; the lease ends it otherwise).
pub struct LockGuard {
    resource: String,
    grant: LockGrant,
    lost: Arc<AtomicBool>,
    stop: Option<tokio::sync::oneshot::Sender<bool>>,
}

impl LockGuard {
    /// The fencing token: pass it to whatever the lock protects.
    pub fn token(&self) -> u64 {
        self.grant.token
    }

    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// Whether a renewal found the lock no longer held (the lease ran out, e.g. while cut off).
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Stops renewing and releases the lock now.
    pub async fn release(mut self, node: &Node) -> Result<(), ApiError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(false);
        }
        node.lock_release(&self.resource, self.grant.token).await?;
        Ok(())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
    }
}

/// ekka's `local` lock scope: locks that exist only in this process. Acquiring a lock you hold
/// succeeds again (re-entrant); releasing one you do not hold fails.
#[derive(Clone, Debug, Default)]
pub struct LocalLocks {
    held: Arc<Mutex<HashMap<String, String>>>,
}

impl LocalLocks {
    /// Takes `resource` for `owner`; `false` when another owner holds it.
    pub fn acquire(&self, resource: &str, owner: &str) -> bool {
        let mut h = self.held.lock().unwrap_or_else(|e| e.into_inner());
        match h.get(resource) {
            Some(o) => o == owner,
            None => {
                h.insert(resource.to_string(), owner.to_string());
                true
            }
        }
    }

    /// Frees `resource`; `true` when it is free afterwards (it was `owner`'s, or nobody's).
    pub fn release(&self, resource: &str, owner: &str) -> bool {
        let mut h = self.held.lock().unwrap_or_else(|e| e.into_inner());
        match h.get(resource) {
            Some(o) if o != owner => false,
            _ => {
                h.remove(resource);
                true
            }
        }
    }
}

/// A put's revision and the revision it replaced (0: the key was new).
pub(crate) struct PutDone {
    pub revision: u64,
    pub prev_revision: u64,
}

/// The data operations as the node's API and the gRPC server both call them: the only place
/// lock and key-value commands are built and their outcomes read.
impl Inner {
    pub(crate) async fn set_autoclean_ms(self: &Arc<Self>, ms: u64) -> Result<u64, ApiError> {
        let r = self
            .propose_data(Command::SetAutoclean { ms }, false)
            .await?;
        Ok(r.revision)
    }

    /// The new end of the lease held with `token` (`ttl_ms` 0: its own ttl again).
    pub(crate) async fn lock_renew(
        self: &Arc<Self>,
        resource: String,
        token: u64,
        ttl_ms: u64,
    ) -> Result<u64, ApiError> {
        let op = LockOp::Renew {
            resource,
            token,
            ttl_ms,
        };
        match self.propose_data(Command::Lock(op), false).await?.outcome {
            Outcome::Renewed { expires_ms } => Ok(expires_ms),
            other => Err(internal(format!("unexpected answer to renew: {other:?}"))),
        }
    }

    /// The release's revision.
    pub(crate) async fn lock_release(
        self: &Arc<Self>,
        resource: String,
        token: u64,
    ) -> Result<u64, ApiError> {
        let op = LockOp::Release { resource, token };
        Ok(self.propose_data(Command::Lock(op), false).await?.revision)
    }

    pub(crate) async fn kv_put(
        self: &Arc<Self>,
        key: String,
        value: Vec<u8>,
    ) -> Result<PutDone, ApiError> {
        let op = KvOp::Put { key, value };
        let r = self.propose_data(Command::Kv(op), false).await?;
        let prev_revision = match r.outcome {
            Outcome::Put { prev_revision } => prev_revision,
            other => return Err(internal(format!("unexpected answer to put: {other:?}"))),
        };
        Ok(PutDone {
            revision: r.revision,
            prev_revision,
        })
    }

    /// The delete's revision, and whether the key existed.
    pub(crate) async fn kv_delete(self: &Arc<Self>, key: String) -> Result<(u64, bool), ApiError> {
        let op = KvOp::Delete { key };
        let r = self.propose_data(Command::Kv(op), false).await?;
        match r.outcome {
            Outcome::Deleted { existed } => Ok((r.revision, existed)),
            other => Err(internal(format!("unexpected answer to delete: {other:?}"))),
        }
    }

    /// The write's revision.
    pub(crate) async fn kv_cas(
        self: &Arc<Self>,
        key: String,
        expect: u64,
        value: Option<Vec<u8>>,
    ) -> Result<u64, ApiError> {
        let op = KvOp::Cas { key, expect, value };
        Ok(self.propose_data(Command::Kv(op), false).await?.revision)
    }

    /// `key` alone, or the keys under it with `prefix`, at most `limit`.
    pub(crate) async fn kv_range(
        self: &Arc<Self>,
        key: String,
        prefix: bool,
        limit: u32,
        read: Read,
    ) -> Result<KvRange, ApiError> {
        let q = ReadQuery { key, prefix, limit };
        self.read_data(q, read, false).await
    }
}

impl Node {
    /// Sets the cluster's autoclean delay, for every present and future leader (zero: off).
    pub async fn set_autoclean(&self, delay: Duration) -> Result<(), ApiError> {
        self.inner.set_autoclean_ms(ms(delay)).await.map(|_| ())
    }

    /// Takes the lease lock `resource` for `owner` for `ttl`, waiting in line up to `wait` while
    /// another owner holds it (`lock_held` when the wait runs out). The same owner acquiring
    /// again gets the same token and a renewed lease.
    pub async fn lock_acquire(
        &self,
        resource: &str,
        owner: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<LockGrant, ApiError> {
        self.inner
            .lock_acquire(resource, owner, ms(ttl), ms(wait))
            .await
    }

    /// Extends the lease held with `token` (by its own ttl when `ttl` is `None`); returns the new
    /// end of the lease. `lock_not_held` when the token no longer holds it.
    pub async fn lock_renew(
        &self,
        resource: &str,
        token: u64,
        ttl: Option<Duration>,
    ) -> Result<u64, ApiError> {
        self.inner
            .lock_renew(resource.into(), token, ttl.map_or(0, ms))
            .await
    }

    /// Releases the lock held with `token`; the next in line gets it. Returns the release's
    /// revision; `lock_not_held` when the token does not hold it.
    pub async fn lock_release(&self, resource: &str, token: u64) -> Result<u64, ApiError> {
        self.inner.lock_release(resource.into(), token).await
    }

    /// Takes `resource` for this process and keeps it: renewed every third of `ttl` until the
    /// guard is dropped or released.
    pub async fn lock(
        &self,
        resource: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<LockGuard, ApiError> {
        let owner = format!("{}-{:016x}", self.name(), rand::random::<u64>());
        let grant = self.lock_acquire(resource, &owner, ttl, wait).await?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<bool>();
        let lost = Arc::new(AtomicBool::new(false));
        let node = self.clone();
        let res = resource.to_string();
        let lost2 = lost.clone();
        let mut shutdown = self.inner.shutdown.subscribe();
        self.inner.spawn(async move {
            let period = (ttl / 3).max(Duration::from_millis(10));
            loop {
                tokio::select! {
                    r = &mut stopped => {
                        if r.unwrap_or(true) {
                            let _ = node.lock_release(&res, grant.token).await;
                        }
                        return;
                    }
                    // The node stops: the lease runs out on its own.
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(period) => {}
                }
                match node.lock_renew(&res, grant.token, None).await {
                    Ok(_) => {}
                    Err(e) if e.code == ErrorCode::LockNotHeld => {
                        lost2.store(true, Ordering::SeqCst);
                        return;
                    }
                    Err(e) => warn!(resource = %res, error = %e, "lock renewal failed; retrying"),
                }
            }
        });
        Ok(LockGuard {
            resource: resource.to_string(),
            grant,
            lost,
            stop: Some(stop),
        })
    }

    /// Writes `value` under `key`; returns the write's revision.
    pub async fn kv_put(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<u64, ApiError> {
        let done = self.inner.kv_put(key.into(), value.into()).await?;
        Ok(done.revision)
    }

    /// Deletes `key`; returns the revision of the delete, or `None` when there was no such key.
    pub async fn kv_delete(&self, key: &str) -> Result<Option<u64>, ApiError> {
        let (revision, existed) = self.inner.kv_delete(key.into()).await?;
        Ok(existed.then_some(revision))
    }

    /// Writes `value` (deletes when `None`) only if `key` is at `expect` (its `mod_revision`; 0:
    /// absent). `compare_failed` otherwise. Returns the write's revision.
    pub async fn kv_cas(
        &self,
        key: &str,
        expect: u64,
        value: Option<Vec<u8>>,
    ) -> Result<u64, ApiError> {
        self.inner.kv_cas(key.into(), expect, value).await
    }

    /// The value of `key`, if any.
    pub async fn kv_get(&self, key: &str, read: Read) -> Result<Option<KvEntry>, ApiError> {
        let r = self.inner.kv_range(key.into(), false, 1, read).await?;
        Ok(r.entries.into_iter().next().map(|(_, e)| e))
    }

    /// The keys under `prefix`, in order, at most `limit` (0: up to `MAX_RANGE_KEYS`).
    pub async fn kv_range(
        &self,
        prefix: &str,
        limit: u32,
        read: Read,
    ) -> Result<KvRange, ApiError> {
        self.inner.kv_range(prefix.into(), true, limit, read).await
    }

    /// Key-value changes under `prefix` as this node applies them, from revision `from` on
    /// (inclusive), or only new ones when `None`. Resume with the last revision seen + 1 after a
    /// reconnect or a restart: nothing is missed or repeated. `compacted` when `from` is older
    /// than the retained changes.
    pub async fn kv_watch(
        &self,
        prefix: &str,
        from: Option<u64>,
    ) -> Result<mpsc::Receiver<Result<KvEvent, ApiError>>, ApiError> {
        self.inner.kv_watch(prefix.to_string(), from)
    }

    /// This process's `local` lock scope (ekka's `local` lock type).
    pub fn local_locks(&self) -> LocalLocks {
        self.inner.local_locks.clone()
    }
}
