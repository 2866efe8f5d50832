//! `recover`: offline disaster recovery. Turns a surviving node's data dir into a one-node cluster
//! when quorum is lost for good. Never automatic.
//!
//! The recovered cluster is a new generation: it gets a new cluster id (the node keeps its id),
//! and the data dir records the old one as `recovered_from`. Every Raft RPC carries the sender's
//! cluster id and is refused unless it is the receiver's (`server.rs`), so members of the old
//! generation that come back can neither vote in nor append to the recovered cluster (its fresh
//! log starts again at term 1, which an old leader's higher term would otherwise overrule), and
//! the recovered node never answers them "not a member" (which would make them wipe themselves).
//! They keep their data until an operator joins them to the recovered cluster (`cluster join`,
//! which a recovered node's hello allows for members of the cluster it was recovered from).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use ekka_store::{DataDir, Raft};
use ekka_types::{ApiError, ClusterState, Command, ErrorCode, Member, NodeId, Request};
use openraft::{BasicNode, ServerState};

use crate::config::NodeConfig;
use crate::error::{internal, unavailable};
use crate::runtime::core::{build_core, cfg_err, now_ms};
use crate::transport::pool::Transport;

/// What `recover` kept and what it threw away.
#[derive(Clone, Debug)]
pub struct RecoverReport {
    /// The new generation's cluster id.
    pub cluster_id: u64,
    /// The cluster id before the recovery (members still on it are refused).
    pub recovered_from: u64,
    pub kept: Member,
    pub discarded: Vec<Member>,
    /// Keys carried over into the recovered cluster (with new revisions).
    pub kept_keys: usize,
    /// Locks dropped: leases do not survive a recovery.
    pub dropped_locks: usize,
}

/// Rewrites the data dir at `dir` as a one-node cluster. Fails (changing nothing) while an agent
/// holds the data dir, or when the dir holds no member record of its own node.
pub async fn recover(dir: &Path) -> Result<RecoverReport, ApiError> {
    let data = DataDir::open(dir).map_err(cfg_err)?;
    let node_id = data.node_id();
    let cluster_id = data.cluster_id();
    let cfg = NodeConfig::new("recover", dir);
    let config = Arc::new(cfg.raft_config()?);
    let transport = Transport::new(&cfg.cookie, Arc::new(AtomicU64::new(cluster_id)), None)
        .map_err(internal)?;

    commit_whole_log(&data).await?;
    let Replayed {
        st,
        keys,
        dropped_locks,
    } = replay(&data, node_id, &transport, &config).await?;
    let Some(me) = st.members.get(&node_id).cloned() else {
        return Err(ApiError::new(
            ErrorCode::NodeNotInCluster,
            "this data dir holds no committed member record of its own node; nothing to recover",
        ));
    };
    let discarded: Vec<Member> = st
        .members
        .values()
        .filter(|m| m.id != node_id)
        .cloned()
        .collect();

    let new_cluster_id = new_generation_id(&data, st.cluster_id, cluster_id);
    data.reset().map_err(internal)?;
    data.set_node_id(node_id).map_err(internal)?;
    data.set_recovered(new_cluster_id, st.cluster_id)
        .map_err(internal)?;
    let raft = build_core(&data, node_id, &transport, &config)
        .await?
        .raft
        .clone();
    bootstrap_alone(&raft, &cfg, node_id, &me, new_cluster_id, st.max_voters).await?;
    let kept_keys = keys.len();
    carry_keys(&raft, &keys).await?;
    raft.shutdown().await.map_err(internal)?;
    Ok(RecoverReport {
        cluster_id: new_cluster_id,
        recovered_from: st.cluster_id,
        kept: me,
        discarded,
        kept_keys,
        dropped_locks,
    })
}

/// What replaying the old log left in the state machine.
struct Replayed {
    /// The membership part of the state.
    st: ClusterState,
    /// Every key with its value.
    keys: Vec<(String, Vec<u8>)>,
    /// How many locks were held.
    dropped_locks: usize,
}

/// Marks everything this node's log holds as committed.
///
/// This is what etcd's --force-new-cluster does: the on-disk committed pointer may lag the last
/// acknowledged writes, and with the rest of the cluster gone for good, what this node has is
/// all there is.
async fn commit_whole_log(data: &DataDir) -> Result<(), ApiError> {
    use openraft::storage::RaftLogStorage;
    let (mut log, _) = data.open_stores().map_err(internal)?;
    let last = log.get_log_state().await.map_err(internal)?.last_log_id;
    if last.is_some() {
        log.save_committed(last).await.map_err(internal)?;
        log.append_flushed(std::iter::empty())
            .await
            .map_err(internal)?;
    }
    Ok(())
}

/// Replays the log into the state machine, without talking to anyone, and reads what it holds.
async fn replay(
    data: &DataDir,
    node_id: NodeId,
    transport: &Transport,
    config: &Arc<openraft::Config>,
) -> Result<Replayed, ApiError> {
    let core = build_core(data, node_id, transport, config).await?;
    core.raft.runtime_config().elect(false);
    let replayed = {
        let st = core.state.read();
        let keys: Vec<(String, Vec<u8>)> = st
            .kv
            .entries
            .iter()
            .map(|(k, e)| (k.clone(), e.value.to_vec()))
            .collect();
        Replayed {
            st: st.membership(),
            keys,
            dropped_locks: st.locks.locks.len(),
        }
    };
    core.raft.shutdown().await.map_err(internal)?;
    Ok(replayed)
}

/// A new generation's cluster id: one that neither the old cluster nor anything before it had.
fn new_generation_id(data: &DataDir, replayed: u64, on_disk: u64) -> u64 {
    loop {
        let id = rand::random::<u64>();
        if id != 0 && id != replayed && id != on_disk && id != data.recovered_from() {
            break id;
        }
    }
}

/// Makes `raft` the leader of a one-node cluster of `me` (node `node_id`) and commits its
/// bootstrap as cluster `new_cluster_id`.
async fn bootstrap_alone(
    raft: &Raft,
    cfg: &NodeConfig,
    node_id: NodeId,
    me: &Member,
    new_cluster_id: u64,
    max_voters: u32,
) -> Result<(), ApiError> {
    let mut nodes = BTreeMap::new();
    nodes.insert(
        node_id,
        BasicNode {
            addr: me.addr.clone(),
        },
    );
    raft.initialize(nodes).await.map_err(internal)?;
    raft.wait(Some(cfg.op_timeout))
        .state(ServerState::Leader, "recovered leader")
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let req = Request {
        now_ms: now_ms(),
        cmd: Command::Bootstrap {
            cluster_id: new_cluster_id,
            id: node_id,
            name: me.name.clone(),
            addr: me.addr.clone(),
            max_voters,
        },
    };
    raft.client_write(req).await.map_err(internal)?;
    Ok(())
}

/// Writes the key-value space into the recovered cluster, key by key, 256 at a time (new
/// revisions: watchers resync).
async fn carry_keys(raft: &Raft, keys: &[(String, Vec<u8>)]) -> Result<(), ApiError> {
    for chunk in keys.chunks(256) {
        let mut writes = tokio::task::JoinSet::new();
        for (key, value) in chunk {
            let raft = raft.clone();
            let cmd = crate::data::put_command(key.clone(), value.clone());
            writes.spawn(async move {
                raft.client_write(Request {
                    now_ms: now_ms(),
                    cmd,
                })
                .await
            });
        }
        while let Some(r) = writes.join_next().await {
            r.map_err(internal)?.map_err(internal)?;
        }
    }
    Ok(())
}
