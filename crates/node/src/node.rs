//! `Node`: one running ekka node (the embedding API), and the join / leave / force-leave / status
//! operations behind the CLI, with ekka's semantics on top of Raft membership changes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ekka_proto::pb;
use ekka_store::{DataDir, Raft, SharedState};
use ekka_types::{
    fmt_id, parse_id, ApiError, ClusterStatus, Command, ErrorCode, NodeId, RemoveReason, Request,
    Response, Status,
};
use openraft::error::{ChangeMembershipError, ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use rand::Rng;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::NodeConfig;
use crate::error::{from_reject, from_status, internal, outcome_unknown, unavailable};
use crate::network::{Network, Peer, Transport};

/// The membership change a prepare callback is told about (ekka's `prepare/1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Join,
    Leave,
    Heal,
}

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

type PrepareFn = Arc<dyn Fn(Action) + Send + Sync>;
type RebootFn = Arc<dyn Fn() + Send + Sync>;

/// One Raft instance with its state machine handles. Replaced as a whole when the node wipes its
/// state (join, leave, removal) or steps down.
pub(crate) struct Core {
    pub raft: Raft,
    pub node_id: NodeId,
    pub state: SharedState,
    pub applied: watch::Receiver<u64>,
    /// The log, for waiting until appended entries are durable.
    pub log: ekka_store::LogStore,
}

impl Core {
    /// How many members this instance's state machine records.
    fn n_members(&self) -> usize {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .members
            .len()
    }
}

enum Reset {
    /// Wipe and wait to be replicated by `intent.to_cluster`, keeping the node id. The intent is
    /// recorded first, so a node stopped from here on resumes the join when it starts.
    Join { intent: ekka_store::JoinIntent },
    /// Wipe and bootstrap a one-node cluster. `keep` keeps the node id and this cluster id.
    Fresh { keep: Option<u64> },
}

pub(crate) struct Inner {
    pub cfg: NodeConfig,
    /// The advertised address.
    pub addr: String,
    pub local_addr: SocketAddr,
    data: DataDir,
    core: RwLock<Arc<Core>>,
    pub transport: Transport,
    cluster_id: Arc<AtomicU64>,
    pub joining: AtomicBool,
    /// The autocluster loop runs while this is set; `leave` clears it.
    pub autocluster: AtomicBool,
    op_lock: tokio::sync::Mutex<()>,
    reset_lock: tokio::sync::Mutex<()>,
    raft_config: Arc<openraft::Config>,
    prepare: Mutex<Vec<PrepareFn>>,
    reboot: Mutex<Vec<RebootFn>>,
    pub shutdown: watch::Sender<bool>,
    /// Every task the node starts, so that `Node::shutdown` waits for them to end.
    tasks: tokio_util::task::TaskTracker,
    /// The storage fault that failed this node (`<data dir>: <cause>`), once there is one.
    pub fault: watch::Sender<Option<String>>,
    /// ekka's `local` lock scope.
    pub local_locks: crate::data::LocalLocks,
    /// The leader's write batcher (lock and key-value commands).
    pub batch_tx: tokio::sync::mpsc::UnboundedSender<crate::data::Pending>,
    /// When this node last took an AppendEntries from a leader (heartbeats included).
    pub leader_heard: Mutex<Option<std::time::Instant>>,
    /// Random per process: tells this process from another one running with the same node id
    /// (a copied data dir). Carried by `Hello` answers and announces.
    pub incarnation: u64,
    /// Set when another process runs as this node (the cluster refused this one): the node has
    /// stopped its Raft core and the embedder should stop it. Shared with the transport, which
    /// sets it when a member refuses one of this node's Raft RPCs for that reason.
    pub conflict: Arc<watch::Sender<Option<String>>>,
    /// Candidates refused as a second process with a member's id: (node id, incarnation).
    duplicates: Mutex<std::collections::HashSet<(NodeId, u64)>>,
}

/// A running ekka node: a Raft member with its gRPC server, status monitor and the cluster API.
///
/// ```
/// # #[tokio::main(flavor = "multi_thread")]
/// # async fn main() -> Result<(), ekka_types::ApiError> {
/// let dir = tempfile::tempdir().unwrap();
/// let mut config = ekka_node::NodeConfig::new("n1", dir.path());
/// config.listen = "127.0.0.1:0".into();
/// let node = ekka_node::Node::start(config).await?;
/// let status = node.status().await?;
/// assert_eq!(status.running_nodes(), vec!["n1".to_string()]);
/// assert_eq!(status.leader.as_deref(), Some("n1"));
/// node.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn random_id() -> u64 {
    rand::thread_rng().gen_range(1..=u64::MAX)
}

pub(crate) fn cfg_err(m: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::InvalidConfig, m.to_string())
}

/// Opens the stores of `data` and starts a Raft instance on them.
pub(crate) async fn build_core(
    data: &DataDir,
    node_id: NodeId,
    transport: &Transport,
    raft_config: &Arc<openraft::Config>,
) -> Result<Arc<Core>, ApiError> {
    let (log, sm) = data.open_stores().map_err(internal)?;
    let state = sm.state();
    let applied = sm.subscribe();
    let net = Network {
        transport: transport.clone(),
        state: state.clone(),
        log: log.clone(),
    };
    let raft = Raft::new(node_id, raft_config.clone(), net, log.clone(), sm)
        .await
        .map_err(internal)?;
    Ok(Arc::new(Core {
        raft,
        node_id,
        state,
        applied,
        log,
    }))
}

/// How long a member restarted on a new address stays out of elections while no leader answers
/// its announce.
const ANNOUNCE_GRACE: Duration = Duration::from_secs(2);

/// How long a probe of a member's recorded address waits for its `Hello` answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The address `core`'s committed state (or, before the state has it, its Raft configuration)
/// records for member `id`.
fn recorded_addr(core: &Core, id: NodeId) -> Option<String> {
    let st = core.state.read().unwrap_or_else(|e| e.into_inner());
    if let Some(m) = st.members.get(&id) {
        return Some(m.addr.clone());
    }
    drop(st);
    let m = core.raft.metrics().borrow().membership_config.clone();
    m.membership().get_node(&id).map(|n| n.addr.clone())
}

/// Who answers `Hello` at `addr` within `PROBE_TIMEOUT`; `None` when nothing does.
async fn probe(transport: &Transport, addr: &str) -> Option<pb::HelloReply> {
    let mut p = transport.peer(addr, false).ok()?;
    match tokio::time::timeout(PROBE_TIMEOUT, p.hello(pb::HelloRequest {})).await {
        Ok(Ok(r)) => Some(r.into_inner()),
        _ => None,
    }
}

/// The error of a process refused because another one runs with its node id at `addr`.
fn duplicate_node(id: NodeId, addr: &str) -> ApiError {
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
async fn check_identity(
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

impl Node {
    /// Opens the data dir, binds the gRPC server and starts the node. A node with an empty data
    /// dir becomes a one-node cluster; a node that was in a cluster rejoins it (announcing its
    /// possibly new address). Configuration problems are `invalid_config` errors, raised before
    /// anything is bound.
    pub async fn start(cfg: NodeConfig) -> Result<Node, ApiError> {
        cfg.validate()?;
        let raft_config = Arc::new(cfg.raft_config()?);
        let data = DataDir::open(&cfg.data_dir).map_err(cfg_err)?;
        let listener = tokio::net::TcpListener::bind(&cfg.listen)
            .await
            .map_err(|e| cfg_err(format!("listen: cannot bind {}: {e}", cfg.listen)))?;
        let local_addr = listener.local_addr().map_err(internal)?;
        let addr = cfg
            .advertise
            .clone()
            .unwrap_or_else(|| local_addr.to_string());
        let cluster_id = Arc::new(AtomicU64::new(data.cluster_id()));
        let transport = Transport::new(&cfg.cookie, cluster_id.clone()).map_err(cfg_err)?;
        let core = build_core(&data, data.node_id(), &transport, &raft_config).await?;
        // No campaign before this process knows it is the only one with this node id.
        core.raft.runtime_config().elect(false);
        let incarnation = random_id();
        transport.set_sender(incarnation, &addr);
        if let Err(e) = check_identity(&core, &addr, incarnation, &transport).await {
            let _ = tokio::time::timeout(SHUTDOWN_RAFT_LIMIT, core.raft.shutdown()).await;
            return Err(e);
        }
        let (shutdown, _) = watch::channel(false);
        let transport_conflict = transport.conflict.clone();
        let (batch_tx, batch_rx) = tokio::sync::mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            cfg,
            addr,
            local_addr,
            data,
            core: RwLock::new(core),
            transport,
            cluster_id,
            joining: AtomicBool::new(false),
            autocluster: AtomicBool::new(true),
            op_lock: tokio::sync::Mutex::new(()),
            reset_lock: tokio::sync::Mutex::new(()),
            raft_config,
            prepare: Mutex::default(),
            reboot: Mutex::default(),
            shutdown,
            tasks: tokio_util::task::TaskTracker::new(),
            fault: watch::channel(None).0,
            local_locks: Default::default(),
            batch_tx,
            leader_heard: Mutex::new(None),
            incarnation,
            conflict: transport_conflict,
            duplicates: Mutex::default(),
        });
        crate::server::spawn(inner.clone(), listener);
        inner.spawn(crate::fault::watch(inner.clone()));
        inner.spawn(inner.clone().stop_on_conflict());
        inner.after_start().await?;
        inner.spawn(crate::monitor::run(inner.clone()));
        inner.spawn(crate::data::lock_ticker(inner.clone()));
        inner.spawn(crate::data::batcher(inner.clone(), batch_rx));
        inner.spawn(inner.clone().reset_when_removed());
        inner.spawn(crate::compaction::run(inner.clone()));
        if let Some(d) = inner.cfg.discovery.clone() {
            d.0.bind(&inner.addr);
            inner.spawn(crate::autocluster::run(inner.clone(), d.0));
        }
        Ok(Node { inner })
    }

    /// The address the gRPC server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The address given to peers.
    pub fn advertised_addr(&self) -> &str {
        &self.inner.addr
    }

    pub fn name(&self) -> &str {
        &self.inner.cfg.name
    }

    /// Where this node's log and snapshot stand: what the byte budget
    /// (`NodeConfig::snapshot_log_bytes`) and the purges keep bounded.
    pub fn log_stats(&self) -> crate::LogStats {
        crate::LogStats::of(&self.inner.core())
    }

    /// This node's current id (it changes when the node wipes its state: after leave or removal).
    pub fn id(&self) -> NodeId {
        self.inner.core().node_id
    }

    /// Makes this node join the cluster that the node at `addr` belongs to.
    pub async fn join(&self, addr: &str) -> Result<JoinOutcome, ApiError> {
        self.inner.join(addr).await
    }

    /// Makes this node leave its cluster; it then runs alone as a fresh one-node cluster.
    pub async fn leave(&self) -> Result<(), ApiError> {
        self.inner.leave().await
    }

    /// Removes another member, up or down, by name or 16-digit hex id.
    pub async fn force_leave(&self, name: &str) -> Result<ForceLeaveOutcome, ApiError> {
        self.inner.force_leave(name).await
    }

    /// The cluster as this node sees it: from the leader when one is reachable, else local.
    pub async fn status(&self) -> Result<ClusterStatus, ApiError> {
        self.inner.status(false).await
    }

    /// Membership events as this node applies them: from revision `from` on (inclusive), or only
    /// new ones when `None`. Resume after a disconnect with the last revision seen + 1: nothing is
    /// missed or repeated. A revision older than the retained events is a `compacted` error; an
    /// event stream that cannot go on (this node reset itself) ends with an `unavailable` error.
    pub async fn watch(
        &self,
        from: Option<u64>,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<ekka_types::Event, ApiError>>, ApiError> {
        self.inner.watch(from)
    }

    /// Registers a callback run before this node joins, leaves or heals (ekka's `prepare/1`).
    pub fn on_prepare(&self, f: impl Fn(Action) + Send + Sync + 'static) {
        lock(&self.inner.prepare).push(Arc::new(f));
    }

    /// Registers a callback run after this node joined, left or was reset (ekka's `reboot/0`).
    pub fn on_reboot(&self, f: impl Fn() + Send + Sync + 'static) {
        lock(&self.inner.reboot).push(Arc::new(f));
    }

    /// The storage fault that failed this node (`<data dir>: <cause>`), if any. A failed node
    /// answers every request with `storage` (`outcome_unknown` for a write it had proposed); it
    /// stays failed until it is restarted on a working data dir.
    pub fn fault(&self) -> Option<String> {
        self.inner.fault()
    }

    /// Returns once this node has a storage fault (see [`Node::fault`]), with the fault.
    pub async fn wait_fault(&self) -> String {
        let mut rx = self.inner.fault.subscribe();
        let fault = rx.wait_for(Option::is_some).await.map(|f| f.clone());
        match fault {
            Ok(f) => f.unwrap_or_default(),
            // The sender lives in the node, which `self` keeps alive.
            Err(_) => std::future::pending().await,
        }
    }

    /// Returns once the cluster refused this node because another process runs with its node id
    /// (its data dir is a copy of a running member's), with the reason. The node has stopped
    /// taking part in Raft by then; shut it down.
    pub async fn wait_conflict(&self) -> String {
        let mut rx = self.inner.conflict.subscribe();
        let c = rx.wait_for(Option::is_some).await.map(|c| c.clone());
        match c {
            Ok(c) => c.unwrap_or_default(),
            Err(_) => std::future::pending().await,
        }
    }

    /// Stops the server, the monitor and Raft. The node stays a member: peers see it `down`.
    /// Bounded: a Raft core that does not stop within `SHUTDOWN_RAFT_LIMIT` is left behind.
    pub async fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
        let core = self.inner.core();
        match tokio::time::timeout(SHUTDOWN_RAFT_LIMIT, core.raft.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "raft shutdown"),
            Err(_) => warn!("raft did not stop within {SHUTDOWN_RAFT_LIMIT:?}; leaving it"),
        }
        // Every task the node started sees the shutdown signal or a stopped Raft and ends.
        let tasks = &self.inner.tasks;
        tasks.close();
        if tokio::time::timeout(SHUTDOWN_TASKS_LIMIT, tasks.wait())
            .await
            .is_err()
        {
            warn!(
                running = tasks.len(),
                "tasks still running {SHUTDOWN_TASKS_LIMIT:?} after the shutdown; leaving them"
            );
        }
    }

    /// How many of the node's tasks still run: 0 once [`Node::shutdown`] has returned.
    pub fn running_tasks(&self) -> usize {
        self.inner.tasks.len()
    }
}

/// How long a request that finds no leader waits for an election before it fails.
const LEADER_WAIT: Duration = Duration::from_secs(1);
/// How long a request that could not reach the leader waits for the next one before failing:
/// a few election timeouts.
const FAILOVER_WAIT: Duration = Duration::from_secs(2);
/// The answer of a member asked to lead a forwarded request it no longer leads.
const NOT_LEADER: &str = "this node is not the leader";

/// How long `Node::shutdown` waits for the Raft core to stop.
const SHUTDOWN_RAFT_LIMIT: Duration = Duration::from_secs(3);
/// How long `Node::shutdown` then waits for the node's tasks to end.
const SHUTDOWN_TASKS_LIMIT: Duration = Duration::from_secs(3);

fn compacted(from: u64, st: &ekka_types::ClusterState) -> ApiError {
    let oldest = st.events.front().map_or(st.revision + 1, |e| e.revision);
    ApiError::new(
        ErrorCode::Compacted,
        format!(
            "revision {from} is older than the oldest retained event ({oldest}); resync from \
             cluster status (revision {}) and watch from there",
            st.revision
        ),
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn raft_err<E: std::fmt::Display>(e: RaftError<NodeId, E>) -> ApiError {
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
fn retryable(e: &ApiError) -> bool {
    matches!(e.code, ErrorCode::Unavailable | ErrorCode::OutcomeUnknown)
}

fn write_err(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> ApiError {
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

impl Inner {
    /// Starts a task of this node's, which `Node::shutdown` waits for. Every task must end on
    /// the shutdown signal (or once Raft has stopped).
    pub(crate) fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(task)
    }

    pub(crate) fn core(&self) -> Arc<Core> {
        self.core.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn cluster_id(&self) -> u64 {
        self.cluster_id.load(Ordering::SeqCst)
    }

    /// The cluster id `ekka cluster recover` replaced on this node (0 if none).
    pub(crate) fn recovered_from(&self) -> u64 {
        self.data.recovered_from()
    }

    fn run_prepare(&self, a: Action) {
        let cbs: Vec<PrepareFn> = lock(&self.prepare).clone();
        for f in cbs {
            f(a);
        }
    }

    fn run_reboot(&self) {
        let cbs: Vec<RebootFn> = lock(&self.reboot).clone();
        for f in cbs {
            f();
        }
    }

    async fn after_start(self: &Arc<Self>) -> Result<(), ApiError> {
        let core = self.core();
        let initialized = core.raft.is_initialized().await.map_err(internal)?;
        if let Some(j) = self.data.join_intent().map_err(internal)? {
            if self.cluster_id() == j.to_cluster && !self.is_member(&core) {
                // Stopped in the middle of a join, after the wipe: the cluster may have added
                // this node or not. Ask again (an add of a member is answered as done).
                info!(target = %j.target, cluster = %fmt_id(j.to_cluster), "resuming a join that was interrupted");
                core.raft.runtime_config().elect(true);
                self.joining.store(true, Ordering::SeqCst);
                self.spawn(self.clone().resume_join(j));
                return Ok(());
            }
            // Either the wipe never happened (still the old cluster) or the join completed.
            self.data.set_join_intent(None).map_err(internal)?;
            if !initialized && self.cluster_id() != j.to_cluster {
                // Wiped, but the cluster was never asked: a one-node cluster again.
                core.raft.runtime_config().elect(true);
                return self.bootstrap(&core, Some(j.from_cluster)).await;
            }
        }
        if !initialized && self.cluster_id() == 0 {
            core.raft.runtime_config().elect(true);
            return self.bootstrap(&core, None).await;
        }
        if initialized {
            let n_members = core.n_members();
            let only_self = {
                let m = core.raft.metrics().borrow().membership_config.clone();
                let ids: Vec<NodeId> = m.membership().nodes().map(|(id, _)| *id).collect();
                ids == [core.node_id]
            };
            if n_members == 0 && only_self {
                // Crashed between initialize and the Bootstrap entry: finish it.
                core.raft.runtime_config().elect(true);
                return self.bootstrap(&core, Some(self.cluster_id())).await;
            }
            if n_members > 1 {
                let moved = recorded_addr(&core, core.node_id).is_some_and(|a| a != self.addr);
                if !moved {
                    core.raft.runtime_config().elect(true);
                }
                // On a new address, this node campaigns only once the cluster took its
                // announce (another process may run with its id at the old one), or after
                // `ANNOUNCE_GRACE` without an answer (no leader to ask).
                self.spawn(self.clone().announce_loop(moved));
                return Ok(());
            }
        }
        core.raft.runtime_config().elect(true);
        Ok(())
    }

    /// Once a member refused this process because another one runs with its node id: stops
    /// taking part in Raft (the embedder is told through `Node::wait_conflict`).
    async fn stop_on_conflict(self: Arc<Self>) {
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
        let mut dup = lock(&self.duplicates).contains(&(candidate, incarnation));
        if !dup {
            dup = probe(&self.transport, &recorded).await.is_some_and(|h| {
                h.node_id == candidate
                    && h.cluster_id == self.cluster_id()
                    && h.incarnation != incarnation
            });
            // Only a refusal is remembered: a probe that found no one (or timed out on a loaded
            // machine) is tried again at the next vote request.
            if dup {
                let mut m = lock(&self.duplicates);
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

    /// Whether `core`'s state has this node as a member of its cluster.
    fn is_member(&self, core: &Core) -> bool {
        let st = core.state.read().unwrap_or_else(|e| e.into_inner());
        st.cluster_id == self.cluster_id() && st.members.contains_key(&core.node_id)
    }

    /// Finishes a join interrupted by a stop after this node wiped itself: asks `j.target` to add
    /// it again until that is done (or until the node is a member anyway, the cluster having
    /// added it before the stop), then waits to be up. If the cluster refuses it for good, or
    /// `j.target` belongs to another cluster now, it becomes its one-node cluster again.
    async fn resume_join(self: Arc<Self>, j: ekka_store::JoinIntent) {
        let mut shutdown = self.shutdown.subscribe();
        let mut delay = Duration::from_millis(50);
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
            delay = (delay * 2).min(Duration::from_secs(2));
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

    /// Makes `core` a one-node cluster and commits its Bootstrap entry.
    async fn bootstrap(&self, core: &Core, keep: Option<u64>) -> Result<(), ApiError> {
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
        let bootstrapped = core
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .cluster_id
            != 0;
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

    /// Tells the cluster this member runs at `self.addr`, until one leader accepts it. With
    /// `gated`, elections stay off until then (or `ANNOUNCE_GRACE`). A refusal because another
    /// process runs with this node id stops this node's Raft core and raises `conflict`.
    async fn announce_loop(self: Arc<Self>, gated: bool) {
        let mut shutdown = self.shutdown.subscribe();
        let mut gated = gated;
        let open_gate = |core: &Core, gated: &mut bool| {
            if *gated {
                core.raft.runtime_config().elect(true);
                *gated = false;
            }
        };
        if gated {
            // Opens the gate after ANNOUNCE_GRACE however long the announces take (a refusal
            // stops the Raft core first).
            let core = self.core();
            let mut shutdown = self.shutdown.subscribe();
            self.spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(ANNOUNCE_GRACE) => {}
                    _ = shutdown.changed() => return,
                }
                core.raft.runtime_config().elect(true);
            });
        }
        // The Raft instance whose membership this loop announces. Once the node resets (a join,
        // e.g. of a cluster recovered from this one, a leave or a removal) the announcement is
        // moot, and an answer to it says nothing about the node's new cluster.
        let mine = self.core();
        loop {
            if !Arc::ptr_eq(&self.core(), &mine) {
                return;
            }
            let core = mine.clone();
            let log_end = core
                .raft
                .metrics()
                .borrow()
                .last_log_index
                .map_or(0, |i| i + 1);
            let req = pb::AnnounceRequest {
                node_id: core.node_id,
                addr: self.addr.clone(),
                incarnation: self.incarnation,
                log_end,
            };
            let peers = self.peer_addrs(&core);
            for addr in peers {
                let Ok(mut p) = self.transport.peer(&addr, false) else {
                    continue;
                };
                match tokio::time::timeout(Duration::from_secs(2), p.announce(req.clone())).await {
                    Ok(Ok(_)) => {
                        info!(%addr, "announced this member's address");
                        open_gate(&core, &mut gated);
                        return;
                    }
                    Ok(Err(st)) if from_status(&st).code == ErrorCode::NodeNotInCluster => {
                        open_gate(&core, &mut gated);
                        if Arc::ptr_eq(&self.core(), &mine) && !self.joining.load(Ordering::SeqCst)
                        {
                            warn!(
                                "the cluster no longer has this member: resetting to a fresh node"
                            );
                            self.run_prepare(Action::Heal);
                            match self
                                .reset_if(Some(&mine), Reset::Fresh { keep: None })
                                .await
                            {
                                Ok(true) => self.run_reboot(),
                                Ok(false) => {}
                                Err(e) => warn!(error = %e, "reset after removal failed"),
                            }
                        }
                        return;
                    }
                    Ok(Err(st)) if from_status(&st).code == ErrorCode::InvalidConfig => {
                        // `stop_on_conflict` stops the Raft core.
                        self.conflict.send_replace(Some(from_status(&st).message));
                        return;
                    }
                    // Another cluster (e.g. one recovered from ours) answers there: say so, keep
                    // everything, try the others.
                    Ok(Err(st)) => self.transport.note_refused(&addr, &st),
                    _ => {}
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Addresses of the other members, the leader's first.
    fn peer_addrs(&self, core: &Core) -> Vec<String> {
        let leader = core.raft.metrics().borrow().current_leader;
        let st = core.state.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<(bool, String)> = st
            .members
            .values()
            .filter(|m| m.id != core.node_id)
            .map(|m| (Some(m.id) != leader, m.addr.clone()))
            .collect();
        v.sort();
        v.into_iter().map(|(_, a)| a).collect()
    }

    pub(crate) fn is_leader(&self, core: &Core) -> bool {
        let m = core.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(core.node_id)
    }

    /// The current leader's id and address, if known.
    pub(crate) fn leader(&self, core: &Core) -> Option<(NodeId, String)> {
        let m = core.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let st = core.state.read().unwrap_or_else(|e| e.into_inner());
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
            () = self.quorum_lost(core) => return Err(lost_quorum_in_flight()),
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
    /// (or no longer leads): what it has in flight will not commit while that lasts. Checked
    /// every half `down_after`, so a request waits at most about `1.5 × down_after` past the
    /// cut instead of its whole deadline.
    pub(crate) async fn quorum_lost(&self, core: &Core) {
        let every = self.cfg.down_after / 2;
        loop {
            tokio::time::sleep(every).await;
            if !self.is_leader(core) || self.check_quorum(core).is_err() {
                return;
            }
        }
    }

    /// Commits `change`, retrying while a previous change is still in progress. With `retain`,
    /// voters taken out stay as learners; without, they leave the configuration.
    async fn change_membership(
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

    fn in_raft_config(core: &Core, id: NodeId) -> bool {
        let m = core.raft.metrics().borrow().membership_config.clone();
        m.membership().get_node(&id).is_some()
    }

    /// Takes `id` out of the Raft configuration following `plan`.
    async fn remove_from_raft(
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
            let heard = *lock(&self.leader_heard);
            let limit = self.cfg.down_after;
            if write && heard.is_some_and(|t| t.elapsed() > limit) {
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
                Err(_) if write => {
                    return Err(outcome_unknown(format!(
                        "the leader at {addr} did not answer in time; the write may have been \
                         applied"
                    )))
                }
                Err(_) => return Err(unavailable(format!("the leader at {addr} did not answer"))),
                Ok(Ok(r)) => return Ok(r.into_inner()),
                Ok(Err(st)) => st,
            };
            let coded = st.metadata().get(ekka_proto::ERROR_HEADER).is_some();
            let err = if coded {
                from_status(&st)
            } else if write && !ekka_proto::never_sent(&st) {
                return Err(outcome_unknown(format!(
                    "the connection to the leader at {addr} broke after the write was sent ({}); \
                     it may have been applied",
                    st.message()
                )));
            } else {
                unavailable(format!(
                    "the leader at {addr} is unreachable: {}",
                    st.message()
                ))
            };
            // Nothing was done there (it was never reached, or it no longer leads): once
            // another leader is known, go there.
            let untouched = !coded || (err.code == ErrorCode::Unavailable && !write) || {
                err.code == ErrorCode::Unavailable && err.message == NOT_LEADER
            };
            if untouched && self.await_other_leader(&core, leader, deadline).await {
                continue;
            }
            return Err(err);
        }
    }

    /// Waits until this node knows a leader other than `old`, at most `FAILOVER_WAIT` (and not
    /// past `deadline`). False when none turned up.
    async fn await_other_leader(&self, core: &Core, old: NodeId, deadline: Instant) -> bool {
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
    async fn leader_replaced(&self, core: &Core, old: NodeId) {
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

    async fn leader_add_member(
        self: &Arc<Self>,
        core: Arc<Core>,
        req: pb::AddMemberRequest,
    ) -> Result<pb::AddMemberReply, ApiError> {
        let guard = self.op_lock.lock().await;
        let st = core
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .membership();
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
        let old = st
            .member_by_name(&req.name)
            .filter(|m| m.id != req.node_id)
            .cloned();
        if let Some(o) = &old {
            if o.status != Status::Down {
                return Err(from_reject(ekka_types::Reject::NameInUse {
                    name: req.name.clone(),
                }));
            }
        }
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
        drop(guard);
        info!(name = %req.name, id = %fmt_id(req.node_id), addr = %req.addr, "added learner");
        self.spawn(
            self.clone()
                .finish_join(core, req.node_id, added.log_id.index),
        );
        Ok(reply(resp.revision))
    }

    /// Once the new learner has caught up: promote learners if a voter seat is free, then mark
    /// the new member up (so when the joiner sees itself up, roles are settled).
    async fn finish_join(self: Arc<Self>, core: Arc<Core>, id: NodeId, log_idx: u64) {
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
        let mut st = core
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .membership();
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
                let known = core
                    .state
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .members
                    .contains_key(&r2.node_id);
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

    /// Refuses an announce from a process that is not the one the cluster knows as that member:
    /// this leader itself (same id, another incarnation), or, for an address change, a process
    /// with that id still answering at the recorded address.
    async fn check_announcer(
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
        let st = core
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .membership();
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
                revision: core
                    .state
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .revision,
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
                    let _ = tokio::time::timeout(Duration::from_secs(2), p.removed(n)).await;
                }
            });
        }
        Ok(pb::RemoveMemberReply {
            revision: resp.revision,
        })
    }

    // ----- the addressed node's side -----

    pub(crate) async fn hello(&self) -> pb::HelloReply {
        let core = self.core();
        let n = core
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .members
            .len();
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
            .map_err(|e| ApiError::new(ErrorCode::InvalidArgument, e))?;
        match tokio::time::timeout(Duration::from_secs(3), p.hello(pb::HelloRequest {})).await {
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
    async fn try_join(
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
        if hello.cluster_id != 0 && hello.cluster_id == my_cluster {
            return Err(ApiError::new(
                ErrorCode::AlreadyInCluster,
                format!(
                    "{} and {} are already in the same cluster {}",
                    self.cfg.name,
                    hello.name,
                    fmt_id(my_cluster)
                ),
            ));
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
        let heal = heal || superseded;
        let (n_members, has_target) = {
            let st = core.state.read().unwrap_or_else(|e| e.into_inner());
            (st.members.len(), st.members.contains_key(&hello.node_id))
        };
        if has_target && !heal {
            // The target joined this node's cluster while our hello was in flight. (When
            // healing, this node's view of its old cluster is stale and says nothing.)
            return Err(ApiError::new(
                ErrorCode::AlreadyInCluster,
                format!(
                    "{} and {} are already in the same cluster {}",
                    self.cfg.name,
                    hello.name,
                    fmt_id(my_cluster)
                ),
            ));
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

    async fn join_holding_flag(
        self: &Arc<Self>,
        addr: &str,
        my_cluster: u64,
        heal: bool,
    ) -> Result<JoinOutcome, ApiError> {
        // Let any add of another node to this one finish, then look again.
        drop(self.op_lock.lock().await);
        let core = self.core();
        if !heal
            && core
                .state
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .members
                .len()
                > 1
        {
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
        let mut unknown = false;
        let added = loop {
            match self.add_at(addr, req.clone()).await {
                Err(e) if retryable(&e) && Instant::now() < deadline => {
                    unknown |= e.code == ErrorCode::OutcomeUnknown;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => break other,
            }
        };
        match &added {
            // The cluster may have added this node: restoring the one-node cluster would leave
            // a member that never comes. Finish the join in the background, as after a restart.
            Err(ref e) if unknown || e.code == ErrorCode::OutcomeUnknown => {
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
            }
            _ => {}
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

    async fn add_at(
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

    async fn wait_self_up(&self, deadline: Instant) -> Result<(), ApiError> {
        let core = self.core();
        let mut rx = core.applied.clone();
        let up = async {
            loop {
                let is_up = core
                    .state
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
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
        let st = core
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .membership();
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
            let st = core.state.read().unwrap_or_else(|e| e.into_inner());
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

    async fn remove_with_retry(self: &Arc<Self>, id: NodeId, leave: bool) -> Result<(), ApiError> {
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
                    tokio::time::sleep(Duration::from_millis(50)).await;
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

    /// A member answered one of this node's Raft RPCs with "you were removed" (it was removed
    /// while unreachable): start over as a fresh node; autocluster then rejoins under a new id.
    async fn reset_when_removed(self: Arc<Self>) {
        let mut sig = self.transport.removed_signal();
        let mut shutdown = self.shutdown.subscribe();
        loop {
            tokio::select! {
                r = sig.wait_for(|r| *r) => if r.is_err() { return },
                _ = shutdown.changed() => return,
            }
            warn!(
                "a member says this node was removed from the cluster: resetting to a fresh node"
            );
            if let Err(e) = self
                .reset_and_reboot(Action::Heal, Reset::Fresh { keep: None })
                .await
            {
                warn!(error = %e, "reset after removal failed");
            }
            self.transport.clear_removed();
        }
    }

    /// The leader told this node it was removed: start over as a fresh one-node cluster.
    pub(crate) async fn removed(self: &Arc<Self>, node_id: NodeId) {
        if node_id != self.core().node_id {
            return;
        }
        warn!("this node was removed from the cluster: resetting to a fresh node");
        if let Err(e) = self
            .reset_and_reboot(Action::Leave, Reset::Fresh { keep: None })
            .await
        {
            warn!(error = %e, "reset after removal failed");
        }
    }

    async fn reset_and_reboot(self: &Arc<Self>, a: Action, how: Reset) -> Result<(), ApiError> {
        self.run_prepare(a);
        self.reset(how).await?;
        self.run_reboot();
        Ok(())
    }

    /// Stops Raft, wipes the data dir's Raft and state-machine data and starts a new instance.
    async fn reset(self: &Arc<Self>, how: Reset) -> Result<(), ApiError> {
        self.reset_if(None, how).await.map(|_| ())
    }

    /// As [`Inner::reset`]; with `expect`, only while that is still this node's Raft instance
    /// and no join is under way (`false`, nothing changed, otherwise).
    async fn reset_if(
        self: &Arc<Self>,
        expect: Option<&Arc<Core>>,
        how: Reset,
    ) -> Result<bool, ApiError> {
        let _r = self.reset_lock.lock().await;
        let old = self.core();
        if let Some(e) = expect {
            if !Arc::ptr_eq(&old, e) || self.joining.load(Ordering::SeqCst) {
                return Ok(false);
            }
        }
        old.raft.shutdown().await.map_err(internal)?;
        let (node_id, fresh, keep) = match how {
            Reset::Join { intent } => {
                let cluster_id = intent.to_cluster;
                self.data.set_join_intent(Some(&intent)).map_err(internal)?;
                self.data.reset().map_err(internal)?;
                self.data.set_node_id(old.node_id).map_err(internal)?;
                self.data.set_cluster_id(cluster_id).map_err(internal)?;
                self.cluster_id.store(cluster_id, Ordering::SeqCst);
                (old.node_id, false, None)
            }
            Reset::Fresh { keep: Some(c) } => {
                self.data.set_join_intent(None).map_err(internal)?;
                self.data.reset().map_err(internal)?;
                self.data.set_node_id(old.node_id).map_err(internal)?;
                (old.node_id, true, Some(c))
            }
            Reset::Fresh { keep: None } => {
                self.data.set_join_intent(None).map_err(internal)?;
                let id = self.data.reset().map_err(internal)?;
                (id, true, None)
            }
        };
        let new = build_core(&self.data, node_id, &self.transport, &self.raft_config).await?;
        *self.core.write().unwrap_or_else(|e| e.into_inner()) = new.clone();
        if fresh {
            self.bootstrap(&new, keep).await?;
        }
        Ok(true)
    }

    pub(crate) fn watch(
        self: &Arc<Self>,
        from: Option<u64>,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<ekka_types::Event, ApiError>>, ApiError> {
        self.spawn_watch(
            from,
            |st| st.revision,
            |st, after| {
                st.events_after(after)
                    .ok_or_else(|| compacted(after + 1, st))
            },
            |e: &ekka_types::Event| e.revision,
        )
    }

    /// Streams what `fetch(state, after)` returns past revision `after` as entries apply, from
    /// revision `from` (inclusive) or, when `None`, only what comes after `current(state)`. `fetch` fails (and the
    /// stream ends with its error) when revisions after `after` were already dropped.
    pub(crate) fn spawn_watch<T, F, R>(
        self: &Arc<Self>,
        from: Option<u64>,
        current: fn(&ekka_types::ClusterState) -> u64,
        fetch: F,
        revision: R,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<T, ApiError>>, ApiError>
    where
        T: Send + 'static,
        F: Fn(&ekka_types::ClusterState, u64) -> Result<Vec<T>, ApiError> + Send + 'static,
        R: Fn(&T) -> u64 + Send + 'static,
    {
        let core = self.core();
        let mut after = {
            let st = core.state.read().unwrap_or_else(|e| e.into_inner());
            let after = match from {
                Some(n) => n.saturating_sub(1),
                None => current(&st),
            };
            fetch(&st, after)?;
            after
        };
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let inner = self.clone();
        let mut shutdown = self.shutdown.subscribe();
        self.spawn(async move {
            let mut applied = core.applied.clone();
            loop {
                if !Arc::ptr_eq(&core, &inner.core()) {
                    let _ = tx
                        .send(Err(unavailable(
                            "this node reset its state (join, leave or removal); resync",
                        )))
                        .await;
                    return;
                }
                let items = {
                    let st = core.state.read().unwrap_or_else(|e| e.into_inner());
                    fetch(&st, after)
                };
                match items {
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                    Ok(items) => {
                        for item in items {
                            after = revision(&item);
                            if tx.send(Ok(item)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                tokio::select! {
                    r = applied.changed() => if r.is_err() {
                        // This Raft instance is gone; the next round reports the reset.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    },
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = tx.closed() => return,
                    _ = shutdown.changed() => return,
                }
            }
        });
        Ok(rx)
    }

    /// When no leader is known, waits up to `LEADER_WAIT` for one: an election is under way (a
    /// restarted node always holds one, see `LogStore::read_vote`), and a moment's wait beats an
    /// answer without a leader.
    async fn await_leader(&self, core: &Core) {
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
        let r = tokio::time::timeout(Duration::from_secs(1), c.status(pb::StatusRequest {}))
            .await
            .map_err(|_| unavailable("leader did not answer"))?
            .map_err(|s| from_status(&s))?;
        ClusterStatus::try_from(r.into_inner()).map_err(internal)
    }

    pub(crate) fn local_status(&self, core: &Core) -> ClusterStatus {
        let m = core.raft.metrics().borrow().clone();
        let st = core.state.read().unwrap_or_else(|e| e.into_inner());
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
