//! The gRPC server: the `Peer` service (Raft RPCs and forwarded membership requests) and the
//! `Cluster` service (the client API), both behind the cookie check.

use std::sync::Arc;

use ekka_proto::pb::cluster_server::{Cluster, ClusterServer};
use ekka_proto::pb::peer_server::{Peer, PeerServer};
use ekka_proto::pb::{self, RaftPayload, SnapshotChunk};
use ekka_proto::{envelope, CLUSTER_HEADER, COOKIE_HEADER, FORWARDED_HEADER};
use ekka_store::{NodeId, TypeConfig};
use ekka_types::limits::{MAX_RPC_MESSAGE_BYTES, MAX_SNAPSHOT_BYTES};
use ekka_types::{fmt_id, parse_id, ApiError, ErrorCode, KvEntry};
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::storage::Snapshot;
use openraft::{SnapshotMeta, Vote};
use serde::Serialize;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::data::{to_payload, Data, Read, ReadQuery};
use crate::error::to_status;
use crate::membership::{ForceLeaveOutcome, JoinOutcome};
use crate::runtime::core::Inner;
use crate::timings::REFUSAL_LOG_EVERY;
use crate::transport::pool::LogThrottle;

/// Starts serving both services on `listener` until the node's shutdown signal.
pub(crate) fn spawn(
    inner: Arc<Inner>,
    data: Arc<Data>,
    listener: tokio::net::TcpListener,
) -> Result<(), ApiError> {
    let cookie = inner.cfg.cookie.clone().into_bytes();
    let check = move |req: Request<()>| check_cookie(&cookie, req);
    let peer = PeerServer::new(PeerSvc {
        inner: inner.clone(),
        data: data.clone(),
        refusals: LogThrottle::new(REFUSAL_LOG_EVERY),
    })
    .max_decoding_message_size(MAX_RPC_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_RPC_MESSAGE_BYTES);
    let cluster = ClusterServer::new(ClusterSvc {
        inner: inner.clone(),
        data,
    })
    .max_decoding_message_size(MAX_RPC_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_RPC_MESSAGE_BYTES);
    let mut shutdown = inner.shutdown.subscribe();
    let span = inner.span.clone();
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &inner.transport.tls {
        builder = builder
            .tls_config(tls.server())
            .map_err(|e| ApiError::new(ErrorCode::InvalidConfig, format!("tls: {e}")))?;
    }
    let router = builder
        .trace_fn(move |_| span.clone())
        .add_service(tonic::service::interceptor::InterceptedService::new(
            peer,
            check.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            cluster, check,
        ));
    let tracker = inner.clone();
    tracker.spawn(async move {
        // No Nagle: small RPC answers must not wait for a delayed ACK (about 40 ms).
        let incoming = TcpListenerStream::new(listener).map(|s| {
            s.inspect(|s| {
                let _ = s.set_nodelay(true);
            })
        });
        let stop = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        if let Err(e) = router.serve_with_incoming_shutdown(incoming, stop).await {
            warn!(error = %e, "grpc server stopped");
        }
    });
    Ok(())
}

/// Constant-time comparison, so the cookie cannot be guessed byte by byte from timings.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[allow(clippy::result_large_err)]
fn check_cookie(cookie: &[u8], req: Request<()>) -> Result<Request<()>, Status> {
    let given = req
        .metadata()
        .get(COOKIE_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if same_secret(given, cookie) {
        return Ok(req);
    }
    let peer = req
        .remote_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "unknown".into());
    warn!(%peer, "refused a request with a wrong cookie");
    Err(to_status(ApiError::new(
        ErrorCode::Unauthenticated,
        "wrong cookie",
    )))
}

fn forwarded<T>(req: &Request<T>) -> bool {
    req.metadata().get(FORWARDED_HEADER).is_some()
}

/// The sending process of a peer RPC (`SENDER_HEADER`): its incarnation and address.
fn sender<T>(req: &Request<T>) -> Option<(u64, String)> {
    let v = req
        .metadata()
        .get(ekka_proto::SENDER_HEADER)?
        .to_str()
        .ok()?;
    let (inc, addr) = v.split_once('@')?;
    Some((parse_id(inc)?, addr.to_string()))
}

struct PeerSvc {
    inner: Arc<Inner>,
    data: Arc<Data>,
    /// Refusals logged, by the sender's cluster id.
    refusals: LogThrottle<Option<u64>>,
}

impl PeerSvc {
    /// Raft RPCs are only taken from members of this node's cluster, and of this generation of
    /// it: a cluster made by `ekka cluster recover` has a new id, so members of the old one are
    /// refused here, before anything reaches openraft. The refusal says so in words the sender
    /// logs; it is never "not a member" (which makes a node wipe itself).
    #[allow(clippy::result_large_err)]
    fn check_cluster<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let theirs = req
            .metadata()
            .get(CLUSTER_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_id);
        let ours = self.inner.cluster_id();
        if ours != 0 && theirs == Some(ours) {
            return Ok(());
        }
        let from = self.inner.recovered_from();
        let old_generation = from != 0 && theirs == Some(from);
        let msg = if old_generation {
            format!(
                "cluster mismatch: cluster {} here was recovered from cluster {} by `ekka cluster \
                 recover`; members of {} are refused and keep their data; to move one into {}, \
                 run `ekka cluster join {}` on it",
                fmt_id(ours),
                fmt_id(from),
                fmt_id(from),
                fmt_id(ours),
                self.inner.addr
            )
        } else {
            format!("cluster mismatch: this node is in {}", fmt_id(ours))
        };
        if self.refusals.allow(theirs) {
            let peer = req
                .remote_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|| "unknown".into());
            let sender = theirs.map(fmt_id).unwrap_or_else(|| "none".into());
            if old_generation {
                warn!(%peer, sender_cluster = %sender, cluster = %fmt_id(ours),
                    "refused a Raft message from another cluster: the one this cluster was recovered from");
            } else {
                info!(%peer, sender_cluster = %sender, cluster = %fmt_id(ours),
                    "refused a Raft message from another cluster");
            }
        }
        Err(Status::failed_precondition(msg))
    }
}

#[allow(clippy::result_large_err)]
fn decode<T: serde::de::DeserializeOwned>(version: u32, data: &[u8]) -> Result<T, Status> {
    envelope::decode(version, data).map_err(|e| Status::invalid_argument(e.to_string()))
}

#[allow(clippy::result_large_err)]
fn encode<T: Serialize>(v: &T) -> Result<Response<RaftPayload>, Status> {
    envelope::seal(v)
        .map(Response::new)
        .map_err(|e| Status::internal(e.to_string()))
}

fn api<T>(r: Result<T, ApiError>) -> Result<Response<T>, Status> {
    r.map(Response::new).map_err(to_status)
}

#[tonic::async_trait]
impl Peer for PeerSvc {
    async fn append_entries(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.check_cluster(&req)?;
        let p = req.into_inner();
        let rpc: AppendEntriesRequest<TypeConfig> = decode(p.version, &p.data)?;
        let upto = super::network::append_upto(&rpc);
        let core = self.inner.core();
        let res = core.raft.append_entries(rpc).await;
        if matches!(&res, Ok(r) if r.is_success()) {
            *self.inner.leader_heard.lock() = Some(std::time::Instant::now());
        }
        // openraft answers once the entries are written, before they are flushed (see
        // `ekka_store::LogStore`); the leader may count the answer, so it waits for the flush.
        if let (Ok(_), Some(i)) = (&res, upto) {
            core.log
                .wait_durable(i)
                .await
                .map_err(|e| Status::internal(format!("the log could not be flushed: {e}")))?;
        }
        encode(&res)
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.check_cluster(&req)?;
        let sender = sender(&req);
        let p = req.into_inner();
        let rpc: VoteRequest<NodeId> = decode(p.version, &p.data)?;
        let core = self.inner.core();
        let candidate = rpc.vote.leader_id().voted_for().unwrap_or_default();
        if let Some((incarnation, addr)) = sender {
            // A copy of a member's data dir must not campaign as that member.
            self.inner
                .check_candidate(&core, candidate, incarnation, &addr)
                .await
                .map_err(to_status)?;
        }
        let removed = core.state.read().was_removed(candidate);
        if removed {
            // The candidate was removed while it could not hear it: tell it, so it resets.
            return Err(to_status(ApiError::new(
                ErrorCode::NodeNotInCluster,
                format!("{} was removed from this cluster", fmt_id(candidate)),
            )));
        }
        let res = core.raft.vote(rpc).await;
        encode(&res)
    }

    async fn install_snapshot(
        &self,
        req: Request<tonic::Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.check_cluster(&req)?;
        let mut stream = req.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let (vote, meta): (Vote<NodeId>, SnapshotMeta<NodeId, openraft::BasicNode>) =
            decode(first.version, &first.meta)?;
        let mut data = first.data;
        let mut done = first.done;
        while !done {
            let c = stream
                .message()
                .await?
                .ok_or_else(|| Status::invalid_argument("snapshot stream ended early"))?;
            if c.offset != data.len() as u64 {
                return Err(Status::invalid_argument(format!(
                    "snapshot chunk at offset {}, expected {}",
                    c.offset,
                    data.len()
                )));
            }
            if data.len() + c.data.len() > MAX_SNAPSHOT_BYTES {
                return Err(Status::invalid_argument(format!(
                    "snapshot larger than {MAX_SNAPSHOT_BYTES} bytes"
                )));
            }
            data.extend_from_slice(&c.data);
            done = c.done;
        }
        let snapshot = Snapshot {
            meta,
            snapshot: Box::new(std::io::Cursor::new(data)),
        };
        let res = self
            .inner
            .core()
            .raft
            .install_full_snapshot(vote, snapshot)
            .await;
        encode(&res)
    }

    async fn hello(
        &self,
        _req: Request<pb::HelloRequest>,
    ) -> Result<Response<pb::HelloReply>, Status> {
        Ok(Response::new(self.inner.hello().await))
    }

    async fn add_member(
        &self,
        req: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::AddMemberReply>, Status> {
        let fwd = forwarded(&req);
        api(self.inner.add_member(req.into_inner(), fwd).await)
    }

    async fn announce(
        &self,
        req: Request<pb::AnnounceRequest>,
    ) -> Result<Response<pb::AnnounceReply>, Status> {
        self.check_cluster(&req)?;
        let fwd = forwarded(&req);
        api(self.inner.announce(req.into_inner(), fwd).await)
    }

    async fn remove_member(
        &self,
        req: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberReply>, Status> {
        self.check_cluster(&req)?;
        let fwd = forwarded(&req);
        api(self.inner.remove_member(req.into_inner(), fwd).await)
    }

    async fn removed(
        &self,
        req: Request<pb::RemovedNotice>,
    ) -> Result<Response<pb::RemovedAck>, Status> {
        self.check_cluster(&req)?;
        let id = req.into_inner().node_id;
        let inner = self.inner.clone();
        let tracker = inner.clone();
        tracker.spawn(async move { inner.removed(id).await });
        Ok(Response::new(pb::RemovedAck {}))
    }

    async fn forward(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.check_cluster(&req)?;
        let fwd = forwarded(&req);
        let p = req.into_inner();
        let cmd: ekka_types::Command = decode(p.version, &p.data)?;
        let r = self.data.propose_data(cmd, fwd).await;
        api(r.and_then(|r| to_payload(&r)))
    }

    async fn read(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.check_cluster(&req)?;
        let fwd = forwarded(&req);
        let p = req.into_inner();
        let q: ReadQuery = decode(p.version, &p.data)?;
        let r = self.data.read_data(q, Read::Linearizable, fwd).await;
        api(r.and_then(|r| to_payload(&r)))
    }
}

struct ClusterSvc {
    inner: Arc<Inner>,
    data: Arc<Data>,
}

type WatchStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;
type KvWatchStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::KvEvent, Status>> + Send>>;

fn kv_entry(key: String, e: KvEntry) -> pb::KvEntry {
    pb::KvEntry {
        key,
        value: e.value.to_vec(),
        create_revision: e.create_revision,
        mod_revision: e.mod_revision,
        version: e.version,
    }
}

#[tonic::async_trait]
impl Cluster for ClusterSvc {
    type WatchStream = WatchStream;
    type KvWatchStream = KvWatchStream;

    async fn set_autoclean(
        &self,
        req: Request<pb::SetAutocleanRequest>,
    ) -> Result<Response<pb::SetAutocleanReply>, Status> {
        let set = self.data.set_autoclean_ms(req.into_inner().ms).await;
        api(set.map(|revision| pb::SetAutocleanReply { revision }))
    }

    async fn lock_acquire(
        &self,
        req: Request<pb::LockAcquireRequest>,
    ) -> Result<Response<pb::LockAcquireReply>, Status> {
        let r = req.into_inner();
        let g = self
            .data
            .lock_acquire(&r.resource, &r.owner, r.ttl_ms, r.wait_ms)
            .await;
        api(g.map(|g| pb::LockAcquireReply {
            token: g.token,
            expires_ms: g.expires_ms,
        }))
    }

    async fn lock_renew(
        &self,
        req: Request<pb::LockRenewRequest>,
    ) -> Result<Response<pb::LockRenewReply>, Status> {
        let r = req.into_inner();
        let renewed = self.data.lock_renew(r.resource, r.token, r.ttl_ms).await;
        api(renewed.map(|expires_ms| pb::LockRenewReply { expires_ms }))
    }

    async fn lock_release(
        &self,
        req: Request<pb::LockReleaseRequest>,
    ) -> Result<Response<pb::LockReleaseReply>, Status> {
        let r = req.into_inner();
        let released = self.data.lock_release(r.resource, r.token).await;
        api(released.map(|revision| pb::LockReleaseReply { revision }))
    }

    async fn lock_status(
        &self,
        req: Request<pb::LockStatusRequest>,
    ) -> Result<Response<pb::LockStatusReply>, Status> {
        let r = req.into_inner();
        ekka_types::lock::check_resource(&r.resource)
            .map_err(|m| to_status(ApiError::new(ErrorCode::InvalidArgument, m)))?;
        let core = self.inner.core();
        let st = core.state.read();
        let mut reply = pb::LockStatusReply {
            revision: st.revision,
            ..Default::default()
        };
        if let Some(l) = st.locks.locks.get(&r.resource) {
            reply.owner = l.owner.clone();
            reply.token = l.token;
            reply.expires_ms = l.expires_ms;
            reply.waiters = l.waiters.iter().map(|w| w.owner.clone()).collect();
        }
        Ok(Response::new(reply))
    }

    async fn kv_put(
        &self,
        req: Request<pb::KvPutRequest>,
    ) -> Result<Response<pb::KvPutReply>, Status> {
        let r = req.into_inner();
        let put = self.data.kv_put(r.key, r.value).await;
        api(put.map(|p| pb::KvPutReply {
            revision: p.revision,
            prev_revision: p.prev_revision,
        }))
    }

    async fn kv_delete(
        &self,
        req: Request<pb::KvDeleteRequest>,
    ) -> Result<Response<pb::KvDeleteReply>, Status> {
        let deleted = self.data.kv_delete(req.into_inner().key).await;
        api(deleted.map(|(revision, existed)| pb::KvDeleteReply { revision, existed }))
    }

    async fn kv_cas(
        &self,
        req: Request<pb::KvCasRequest>,
    ) -> Result<Response<pb::KvCasReply>, Status> {
        let r = req.into_inner();
        let cas = self.data.kv_cas(r.key, r.expect_revision, r.value).await;
        api(cas.map(|revision| pb::KvCasReply { revision }))
    }

    async fn kv_range(
        &self,
        req: Request<pb::KvRangeRequest>,
    ) -> Result<Response<pb::KvRangeReply>, Status> {
        let r = req.into_inner();
        let read = if r.stale {
            Read::Stale
        } else {
            Read::Linearizable
        };
        let got = self.data.kv_range(r.key, r.prefix, r.limit, read).await;
        api(got.map(|g| pb::KvRangeReply {
            revision: g.revision,
            entries: g.entries.into_iter().map(|(k, e)| kv_entry(k, e)).collect(),
            more: g.more,
        }))
    }

    async fn kv_watch(
        &self,
        req: Request<pb::KvWatchRequest>,
    ) -> Result<Response<KvWatchStream>, Status> {
        let r = req.into_inner();
        let rx = self
            .data
            .kv_watch(r.prefix, r.from_revision)
            .map_err(to_status)?;
        let out = tokio_stream::wrappers::ReceiverStream::new(rx).map(|r| {
            r.map(|e| pb::KvEvent {
                revision: e.revision,
                key: e.key,
                value: e.value.map(|v| v.to_vec()),
            })
            .map_err(to_status)
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn watch(&self, req: Request<pb::WatchRequest>) -> Result<Response<WatchStream>, Status> {
        let from = req.into_inner().from_revision;
        let rx = self.inner.watch(from).map_err(to_status)?;
        let out = tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(|r| r.map(|e| pb::WatchEvent::from(&e)).map_err(to_status));
        Ok(Response::new(Box::pin(out)))
    }

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        // A forwarded status request is answered locally: one hop at most.
        let local = forwarded(&req);
        let s = self.inner.status(local).await.map_err(to_status)?;
        Ok(Response::new(pb::StatusReply::from(&s)))
    }

    async fn join(&self, req: Request<pb::JoinRequest>) -> Result<Response<pb::JoinReply>, Status> {
        let addr = req.into_inner().addr;
        info!(%addr, "join requested");
        let out = self.inner.join(&addr).await.map_err(to_status)?;
        Ok(Response::new(match out {
            JoinOutcome::Joined { cluster_id } => pb::JoinReply {
                cluster_id,
                ignored: None,
            },
            JoinOutcome::Ignored(why) => pb::JoinReply {
                cluster_id: self.inner.cluster_id(),
                ignored: Some(why),
            },
        }))
    }

    async fn leave(
        &self,
        _req: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::LeaveReply>, Status> {
        info!("leave requested");
        self.inner.leave().await.map_err(to_status)?;
        Ok(Response::new(pb::LeaveReply {}))
    }

    async fn force_leave(
        &self,
        req: Request<pb::ForceLeaveRequest>,
    ) -> Result<Response<pb::ForceLeaveReply>, Status> {
        let name = req.into_inner().name;
        info!(%name, "force-leave requested");
        let out = self.inner.force_leave(&name).await.map_err(to_status)?;
        Ok(Response::new(pb::ForceLeaveReply {
            ignored: match out {
                ForceLeaveOutcome::Removed => None,
                ForceLeaveOutcome::Ignored(why) => Some(why),
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(!same_secret(b"", b"a"));
    }
}
