//! The node's runtime state: one Raft instance with its state machine (`Core`, replaced as a
//! whole on a reset) and `Inner`, what every part of the node shares: configuration, the data
//! dir, the transport, the task tracker and the shutdown signal.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use ekka_store::{DataDir, Raft, SharedState};
use ekka_types::{ApiError, ErrorCode, NodeId};
use rand::Rng;
use tokio::sync::watch;
use tracing::Instrument;

use crate::config::NodeConfig;
use crate::error::internal;
use crate::transport::network::Network;
use crate::transport::pool::Transport;

/// The membership change a prepare callback is told about (ekka's `prepare/1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Join,
    Leave,
    Heal,
}

pub(crate) type PrepareFn = Arc<dyn Fn(Action) + Send + Sync>;
pub(crate) type RebootFn = Arc<dyn Fn() + Send + Sync>;

/// One Raft instance with its state machine handles. Replaced as a whole when the node wipes its
/// state (join, leave, removal) or steps down.
pub(crate) struct Core {
    pub(crate) raft: Raft,
    pub(crate) node_id: NodeId,
    pub(crate) state: SharedState,
    pub(crate) applied: watch::Receiver<u64>,
    /// The log, for waiting until appended entries are durable.
    pub(crate) log: ekka_store::LogStore,
}

impl Core {
    /// How many members this instance's state machine records.
    pub(crate) fn n_members(&self) -> usize {
        self.state.read().members.len()
    }
}

pub(crate) struct Inner {
    pub(crate) cfg: NodeConfig,
    /// The advertised address.
    pub(crate) addr: String,
    pub(crate) local_addr: SocketAddr,
    pub(crate) data: DataDir,
    pub(crate) core: RwLock<Arc<Core>>,
    pub(crate) transport: Transport,
    pub(crate) cluster_id: Arc<AtomicU64>,
    pub(crate) joining: AtomicBool,
    /// The autocluster loop runs while this is set; `leave` clears it.
    pub(crate) autocluster: AtomicBool,
    pub(crate) op_lock: tokio::sync::Mutex<()>,
    pub(crate) reset_lock: tokio::sync::Mutex<()>,
    pub(crate) raft_config: Arc<openraft::Config>,
    pub(crate) prepare: Mutex<Vec<PrepareFn>>,
    pub(crate) reboot: Mutex<Vec<RebootFn>>,
    pub(crate) shutdown: watch::Sender<bool>,
    /// Bumped while this node does not lead or leads without a quorum (`watch_quorum`): wakes
    /// the writes and reads in flight on it (`quorum_lost`).
    pub(crate) quorum_gone: watch::Sender<u64>,
    /// Every task the node starts, so that `Node::shutdown` waits for them to end.
    pub(crate) tasks: tokio_util::task::TaskTracker,
    /// The storage fault that failed this node (`<data dir>: <cause>`), once there is one.
    pub(crate) fault: watch::Sender<Option<String>>,
    /// When this node last took an AppendEntries from a leader (heartbeats included).
    pub(crate) leader_heard: Mutex<Option<std::time::Instant>>,
    /// Random per process: tells this process from another one running with the same node id
    /// (a copied data dir). Carried by `Hello` answers and announces.
    pub(crate) incarnation: u64,
    /// Set when another process runs as this node (the cluster refused this one): the node has
    /// stopped its Raft core and the embedder should stop it. Shared with the transport, which
    /// sets it when a member refuses one of this node's Raft RPCs for that reason.
    pub(crate) conflict: Arc<watch::Sender<Option<String>>>,
    /// Candidates refused as a second process with a member's id: (node id, incarnation).
    pub(crate) duplicates: Mutex<std::collections::HashSet<(NodeId, u64)>>,
    /// This node's span (`node` = its name): its tasks, requests and API calls log inside it, so
    /// the lines of nodes sharing a process say which node wrote them.
    pub(crate) span: tracing::Span,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn random_id() -> u64 {
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

impl Inner {
    /// Starts a task of this node's, which `Node::shutdown` waits for. Every task must end on
    /// the shutdown signal (or once Raft has stopped).
    pub(crate) fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(task.instrument(self.span.clone()))
    }

    pub(crate) fn core(&self) -> Arc<Core> {
        self.core.read().clone()
    }

    pub(crate) fn cluster_id(&self) -> u64 {
        self.cluster_id.load(Ordering::SeqCst)
    }

    /// The cluster id `ekka cluster recover` replaced on this node (0 if none).
    pub(crate) fn recovered_from(&self) -> u64 {
        self.data.recovered_from()
    }

    pub(crate) fn run_prepare(&self, a: Action) {
        let cbs: Vec<PrepareFn> = self.prepare.lock().clone();
        for f in cbs {
            f(a);
        }
    }

    pub(crate) fn run_reboot(&self) {
        let cbs: Vec<RebootFn> = self.reboot.lock().clone();
        for f in cbs {
            f();
        }
    }
}
