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

mod events;
mod identity;
mod join;
mod leader;
mod members;

use identity::{check_identity, recorded_addr};

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
    /// Bumped while this node does not lead or leads without a quorum (`watch_quorum`): wakes
    /// the writes and reads in flight on it (`quorum_lost`).
    pub quorum_gone: watch::Sender<u64>,
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
            quorum_gone: watch::channel(0).0,
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
        inner.spawn(inner.clone().watch_quorum());
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

    // ----- the addressed node's side -----

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
