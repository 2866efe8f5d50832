//! `Node`: one running ekka node, the embedding API. It starts every part of the node (the
//! runtime, membership, data and transport modules) and stops them all on `shutdown`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use ekka_store::DataDir;
use ekka_types::{ApiError, ClusterStatus, NodeId};
use tokio::sync::watch;
use tracing::{warn, Instrument};

use crate::config::NodeConfig;
use crate::data::Data;
use crate::error::internal;
use crate::membership::identity::check_identity;
use crate::membership::{ForceLeaveOutcome, JoinOutcome};
use crate::runtime::core::{build_core, cfg_err, random_id, Action, Inner};
use crate::timings::*;
use crate::transport::pool::Transport;

pub(crate) mod data_api;

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
    pub(crate) data: Arc<Data>,
}

impl Node {
    /// Binds `cfg.listen`, opens the data dir and starts the node. A node with an empty data dir
    /// becomes a one-node cluster; a node that was in a cluster rejoins it (announcing its
    /// possibly new address). Configuration problems are `invalid_config` errors, raised before
    /// anything is bound; a port in use is one too, raised before the data dir is touched.
    pub async fn start(cfg: NodeConfig) -> Result<Node, ApiError> {
        cfg.validate()?;
        let listener = Node::bind(&cfg).await?;
        Node::start_on(cfg, listener).await
    }

    /// Binds the gRPC listener `cfg.listen` names (`invalid_config` when it cannot).
    pub async fn bind(cfg: &NodeConfig) -> Result<tokio::net::TcpListener, ApiError> {
        tokio::net::TcpListener::bind(&cfg.listen)
            .await
            .map_err(|e| cfg_err(format!("listen: cannot bind {}: {e}", cfg.listen)))
    }

    /// As [`Node::start`], serving on `listener`, which the caller bound (`cfg.listen` is not
    /// used): an embedder that binds everything first fails on a port in use before any state
    /// is written. The listener is the node's from here on, closed by [`Node::shutdown`].
    pub async fn start_on(
        cfg: NodeConfig,
        listener: tokio::net::TcpListener,
    ) -> Result<Node, ApiError> {
        let span = tracing::info_span!("node", node = %cfg.name);
        Self::start_in(cfg, listener, span.clone())
            .instrument(span)
            .await
    }

    async fn start_in(
        cfg: NodeConfig,
        listener: tokio::net::TcpListener,
        span: tracing::Span,
    ) -> Result<Node, ApiError> {
        cfg.validate()?;
        let raft_config = Arc::new(cfg.raft_config()?);
        let dir = DataDir::open(&cfg.data_dir).map_err(cfg_err)?;
        let local_addr = listener.local_addr().map_err(internal)?;
        let addr = cfg
            .advertise
            .clone()
            .unwrap_or_else(|| local_addr.to_string());
        let cluster_id = Arc::new(AtomicU64::new(dir.cluster_id()));
        let tls = match &cfg.tls {
            Some(t) => Some(t.load().map_err(cfg_err)?),
            None => None,
        };
        let transport = Transport::new(&cfg.cookie, cluster_id.clone(), tls).map_err(cfg_err)?;
        let core = build_core(&dir, dir.node_id(), &transport, &raft_config).await?;
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
        let inner = Arc::new(Inner {
            cfg,
            addr,
            local_addr,
            data: dir,
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
            leader_heard: Mutex::new(None),
            incarnation,
            conflict: transport_conflict,
            duplicates: Mutex::default(),
            span,
        });
        let (data, batch_rx) = Data::new(inner.clone());
        crate::transport::server::spawn(inner.clone(), data.clone(), listener)?;
        inner.spawn(crate::runtime::fault::watch(inner.clone()));
        inner.spawn(inner.clone().stop_on_conflict());
        inner.after_start().await?;
        inner.spawn(crate::membership::monitor::run(inner.clone()));
        inner.spawn(crate::data::lock_ticker(inner.clone()));
        inner.spawn(inner.clone().watch_quorum());
        inner.spawn(crate::data::batcher(inner.clone(), batch_rx));
        inner.spawn(inner.clone().reset_when_removed());
        inner.spawn(crate::runtime::compaction::run(inner.clone()));
        if let Some(d) = inner.cfg.discovery.clone() {
            d.0.bind(&inner.addr);
            inner.spawn(crate::membership::autocluster::run(inner.clone(), d.0));
        }
        Ok(Node { inner, data })
    }

    fn span(&self) -> tracing::Span {
        self.inner.span.clone()
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
    pub fn log_stats(&self) -> crate::runtime::compaction::LogStats {
        crate::runtime::compaction::LogStats::of(&self.inner.core())
    }

    /// This node's current id (it changes when the node wipes its state: after leave or removal).
    pub fn id(&self) -> NodeId {
        self.inner.core().node_id
    }

    /// Makes this node join the cluster that the node at `addr` belongs to.
    pub async fn join(&self, addr: &str) -> Result<JoinOutcome, ApiError> {
        self.inner.join(addr).instrument(self.span()).await
    }

    /// Makes this node leave its cluster; it then runs alone as a fresh one-node cluster.
    pub async fn leave(&self) -> Result<(), ApiError> {
        self.inner.leave().instrument(self.span()).await
    }

    /// Removes another member, up or down, by name or 16-digit hex id.
    pub async fn force_leave(&self, name: &str) -> Result<ForceLeaveOutcome, ApiError> {
        self.inner.force_leave(name).instrument(self.span()).await
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
        self.inner.prepare.lock().push(Arc::new(f));
    }

    /// Registers a callback run after this node joined, left or was reset (ekka's `reboot/0`).
    pub fn on_reboot(&self, f: impl Fn() + Send + Sync + 'static) {
        self.inner.reboot.lock().push(Arc::new(f));
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
