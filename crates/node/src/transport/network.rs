//! openraft's network over tonic: `Network` (its factory) and `PeerConn` (one target), on the
//! connection pool.

// openraft's RPCError is large by design: it is what the RaftNetwork trait returns.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use ekka_proto::pb::{RaftPayload, SnapshotChunk};
use ekka_proto::{envelope, PAYLOAD_VERSION};
use ekka_store::{LogStore, NodeId, SharedState, TypeConfig};
use ekka_types::limits::SNAPSHOT_CHUNK_BYTES;
use ekka_types::ErrorCode;
use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed,
    StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::storage::Snapshot;
use openraft::{BasicNode, OptionalSend, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::pool::{Peer, Transport};
use crate::timings::*;

/// openraft's network factory for one Raft instance. Addresses come from the committed members
/// (so a member that restarted on a new address is reached there), falling back to the address
/// in the Raft membership.
pub struct Network {
    pub transport: Transport,
    pub state: SharedState,
    /// This node's log: a follower's answer counts only once the leader's own copy is durable.
    pub log: LogStore,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConn;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerConn {
        PeerConn {
            target,
            fallback_addr: node.addr.clone(),
            transport: self.transport.clone(),
            state: self.state.clone(),
            log: self.log.clone(),
        }
    }
}

/// The connection to one replication target.
pub struct PeerConn {
    target: NodeId,
    fallback_addr: String,
    transport: Transport,
    state: SharedState,
    log: LogStore,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

impl PeerConn {
    fn addr(&self) -> String {
        let st = self.state.read();
        st.members
            .get(&self.target)
            .map(|m| m.addr.clone())
            .unwrap_or_else(|| self.fallback_addr.clone())
    }

    fn decode<T: DeserializeOwned, E: std::error::Error + DeserializeOwned>(
        &self,
        payload: RaftPayload,
    ) -> Result<T, RpcErr<E>> {
        let res: Result<T, RaftError<NodeId, E>> =
            envelope::open(&payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.transport.record_ok(self.target);
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    fn status_err<E: std::error::Error>(&self, st: tonic::Status) -> RpcErr<E> {
        self.transport.note_refused(&self.addr(), &st);
        let code = ekka_proto::ekka_code(&st);
        if code == Some(ErrorCode::NodeNotInCluster) {
            self.transport.removed.send_replace(true);
        }
        // Another process runs with this node's id (`identity.rs`).
        if code == Some(ErrorCode::InvalidConfig) {
            let msg = st.message().to_string();
            self.transport.conflict.send_if_modified(|c| {
                let first = c.is_none();
                if first {
                    *c = Some(msg);
                }
                first
            });
        }
        match st.code() {
            // Nothing answered, or the peer is not (yet) in our cluster: back off.
            tonic::Code::Unavailable
            | tonic::Code::FailedPrecondition
            | tonic::Code::Unauthenticated => RPCError::Unreachable(Unreachable::new(&st)),
            _ => RPCError::Network(NetworkError::new(&st)),
        }
    }

    async fn unary<T, E>(
        &self,
        opt: &RPCOption,
        call: impl std::future::Future<Output = Result<tonic::Response<RaftPayload>, tonic::Status>>,
    ) -> Result<T, RpcErr<E>>
    where
        T: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        match tokio::time::timeout(opt.hard_ttl(), call).await {
            Err(_) => Err(RPCError::Network(NetworkError::new(&Msg(format!(
                "no answer from {} within {:?}",
                ekka_types::fmt_id(self.target),
                opt.hard_ttl()
            ))))),
            Ok(Err(st)) => Err(self.status_err(st)),
            Ok(Ok(resp)) => self.decode(resp.into_inner()),
        }
    }

    fn client<E: std::error::Error>(&self) -> Result<Peer, RpcErr<E>> {
        self.transport
            .peer(&self.addr(), false)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }
}

/// The last log index an AppendEntries request covers: its last entry, or the entry before them.
pub(crate) fn append_upto(rpc: &AppendEntriesRequest<TypeConfig>) -> Option<u64> {
    rpc.entries
        .last()
        .map(|e| e.log_id.index)
        .or(rpc.prev_log_id.map(|l| l.index))
}

fn payload<T: Serialize, E: std::error::Error>(v: &T) -> Result<RaftPayload, RpcErr<E>> {
    envelope::seal(v).map_err(|e| RPCError::Network(NetworkError::new(&e)))
}

impl RaftNetwork<TypeConfig> for PeerConn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        let upto = append_upto(&rpc);
        let mut c = self.client()?;
        let p = payload(&rpc)?;
        // The leader's flush of these entries runs while they travel (see `ekka_store::LogStore`).
        if let Some(i) = upto {
            self.log.request_durable(i);
        }
        let resp = self.unary(&option, c.append_entries(p)).await?;
        // The leader reports its appends to openraft before they are flushed (see
        // `ekka_store::LogStore`), so this answer may count toward a commit only once the
        // leader's own copy of what it covers is durable. The flush asked for above ran while
        // the request travelled, so this rarely waits.
        if let Some(i) = upto {
            self.log
                .wait_durable(i)
                .await
                .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        }
        Ok(resp)
    }

    /// Not used: [`PeerConn::full_snapshot`] streams whole snapshots instead of openraft's
    /// chunk-per-RPC default, which is the only caller of this method.
    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        Err(RPCError::Network(NetworkError::new(&Msg(
            "snapshots are sent whole by full_snapshot".into(),
        ))))
    }

    /// Streams the snapshot over one client-streaming RPC in `SNAPSHOT_CHUNK_BYTES` pieces.
    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let net = |e: &dyn std::fmt::Display| {
            StreamingError::Network(NetworkError::new(&Msg(e.to_string())))
        };
        let mut c = self
            .transport
            .peer(&self.addr(), false)
            .map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))?;
        let meta = envelope::encode(&(&vote, &snapshot.meta)).map_err(|e| net(&e))?;
        let data = snapshot.snapshot.into_inner();
        let total = data.len() as u64;
        let step = SNAPSHOT_CHUNK_BYTES as usize;
        let mut chunks = Vec::with_capacity(data.len() / step + 1);
        let mut offset = 0usize;
        loop {
            let end = (offset + step).min(data.len());
            chunks.push(SnapshotChunk {
                version: PAYLOAD_VERSION,
                meta: if offset == 0 {
                    meta.clone()
                } else {
                    Vec::new()
                },
                offset: offset as u64,
                data: data[offset..end].to_vec(),
                done: end == data.len(),
            });
            if end == data.len() {
                break;
            }
            offset = end;
        }
        // A second per MiB on top of the usual deadline.
        let limit = option.hard_ttl().max(SNAPSHOT_SEND_MIN) + Duration::from_secs(total >> 20);
        let call = tokio::time::timeout(limit, c.install_snapshot(tokio_stream::iter(chunks)));
        let resp = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            r = call => r,
        };
        let payload = match resp {
            Err(_) => {
                return Err(net(&format!(
                    "snapshot of {total} bytes not installed within {limit:?}"
                )))
            }
            Ok(Err(st)) => {
                return Err(match self.status_err::<Fatal<NodeId>>(st) {
                    RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                    other => net(&other),
                })
            }
            Ok(Ok(r)) => r.into_inner(),
        };
        let res: Result<SnapshotResponse<NodeId>, Fatal<NodeId>> =
            envelope::open(&payload).map_err(|e| net(&e))?;
        self.transport.record_ok(self.target);
        res.map_err(|e| StreamingError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        let mut c = self.client()?;
        let p = payload(&rpc)?;
        self.unary(&option, c.vote(p)).await
    }
}
