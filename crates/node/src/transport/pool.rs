//! The connection pool of the transport: one lazily connected channel per peer address, the
//! outgoing auth headers (cookie, cluster id, sender), and the liveness record the status
//! monitor and the quorum check read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use crate::timings::*;
use ekka_proto::pb::peer_client::PeerClient;
use ekka_proto::tls::Tls;
use ekka_proto::{CLUSTER_HEADER, COOKIE_HEADER, FORWARDED_HEADER, SENDER_HEADER};
use ekka_store::NodeId;
use ekka_types::limits::MAX_RPC_MESSAGE_BYTES;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A peer client whose every call carries the cookie and the cluster id.
pub type Peer = PeerClient<InterceptedService<Channel, Outgoing>>;

/// Adds the cookie, the caller's cluster id and (optionally) the forwarded mark to each call.
#[derive(Clone)]
pub struct Outgoing {
    cookie: AsciiMetadataValue,
    cluster: AsciiMetadataValue,
    forwarded: bool,
    sender: Option<AsciiMetadataValue>,
}

impl tonic::service::Interceptor for Outgoing {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let md = req.metadata_mut();
        md.insert(COOKIE_HEADER, self.cookie.clone());
        md.insert(CLUSTER_HEADER, self.cluster.clone());
        if self.forwarded {
            md.insert(FORWARDED_HEADER, AsciiMetadataValue::from_static("1"));
        }
        if let Some(s) = &self.sender {
            md.insert(SENDER_HEADER, s.clone());
        }
        Ok(req)
    }
}

/// Shared by every connection of a node: channels by address, the cookie, the current cluster id
/// and when each peer last answered.
#[derive(Clone)]
pub struct Transport {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    cookie: AsciiMetadataValue,
    cluster_id: Arc<AtomicU64>,
    last_ok: Arc<Mutex<HashMap<NodeId, Instant>>>,
    /// Set when a member of our cluster answered that this node was removed.
    pub(crate) removed: Arc<tokio::sync::watch::Sender<bool>>,
    /// Refusals ("cluster mismatch") logged, by the refusing address.
    refused: Arc<LogThrottle<String>>,
    /// This process on peer RPCs (`SENDER_HEADER`), once known.
    sender: Arc<Mutex<Option<AsciiMetadataValue>>>,
    /// Set when a member refused this process because another one runs with its node id.
    pub conflict: Arc<tokio::sync::watch::Sender<Option<String>>>,
    /// Mutual TLS for every connection (and the server's side of it), when configured.
    pub(crate) tls: Option<Tls>,
}

/// Lets a log line through at most once per `every` for each key.
pub(crate) struct LogThrottle<K> {
    every: Duration,
    last: Mutex<HashMap<K, Instant>>,
}

impl<K: std::hash::Hash + Eq> LogThrottle<K> {
    pub(crate) fn new(every: Duration) -> Self {
        LogThrottle {
            every,
            last: Mutex::default(),
        }
    }

    /// Whether to log for `key` now (and, if so, not again for `every`).
    pub(crate) fn allow(&self, key: K) -> bool {
        let mut m = self.last.lock();
        let now = Instant::now();
        if m.get(&key)
            .is_some_and(|t| now.duration_since(*t) < self.every)
        {
            return false;
        }
        // A bounded memory, whatever the peers: forgetting makes a line come early, no more.
        if m.len() > 64 {
            m.clear();
        }
        m.insert(key, now);
        true
    }
}

/// Why the transport could not make a client for a peer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("bad address {addr:?}: {reason}")]
    BadAddress { addr: String, reason: String },
    #[error("{what} is not a valid header value: {reason}")]
    BadHeader { what: &'static str, reason: String },
}

impl Transport {
    /// `cookie` must be printable ASCII (checked by `NodeConfig::validate`).
    pub fn new(
        cookie: &str,
        cluster_id: Arc<AtomicU64>,
        tls: Option<Tls>,
    ) -> Result<Self, TransportError> {
        let cookie =
            AsciiMetadataValue::try_from(cookie).map_err(|e| TransportError::BadHeader {
                what: "the cookie",
                reason: e.to_string(),
            })?;
        Ok(Transport {
            channels: Arc::default(),
            cookie,
            cluster_id,
            last_ok: Arc::default(),
            removed: Arc::new(tokio::sync::watch::channel(false).0),
            refused: Arc::new(LogThrottle::new(REFUSAL_LOG_EVERY)),
            sender: Arc::default(),
            conflict: Arc::new(tokio::sync::watch::channel(None).0),
            tls,
        })
    }

    /// Names this process on every peer RPC from now on: its incarnation and address.
    pub fn set_sender(&self, incarnation: u64, addr: &str) {
        let v = AsciiMetadataValue::try_from(format!("{}@{addr}", ekka_types::fmt_id(incarnation)))
            .ok();
        *self.sender.lock() = v;
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id.load(Ordering::SeqCst)
    }

    fn channel(&self, addr: &str) -> Result<Channel, TransportError> {
        let mut map = self.channels.lock();
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let ep = ekka_proto::tls::endpoint(addr, self.tls.as_ref(), CONNECT_TIMEOUT)
            .map_err(|reason| TransportError::BadAddress {
                addr: addr.to_string(),
                reason,
            })?
            .http2_keep_alive_interval(KEEPALIVE_EVERY)
            .keep_alive_while_idle(true);
        let ch = ep.connect_lazy();
        map.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }

    /// The auth headers of an outgoing call: cookie, current cluster id, forwarded mark.
    fn outgoing(&self, forwarded: bool) -> Result<Outgoing, TransportError> {
        let cluster =
            AsciiMetadataValue::try_from(ekka_types::fmt_id(self.cluster_id())).map_err(|e| {
                TransportError::BadHeader {
                    what: "the cluster id",
                    reason: e.to_string(),
                }
            })?;
        Ok(Outgoing {
            cookie: self.cookie.clone(),
            cluster,
            forwarded,
            sender: self.sender.lock().clone(),
        })
    }

    /// A peer client for `addr`; `forwarded` marks a call made on behalf of another node.
    pub fn peer(&self, addr: &str, forwarded: bool) -> Result<Peer, TransportError> {
        Ok(
            PeerClient::with_interceptor(self.channel(addr)?, self.outgoing(forwarded)?)
                .max_decoding_message_size(MAX_RPC_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_RPC_MESSAGE_BYTES),
        )
    }

    /// The channel and auth interceptor for a client of another service at `addr`.
    pub fn channel_with_auth(&self, addr: &str) -> Result<(Channel, Outgoing), TransportError> {
        Ok((self.channel(addr)?, self.outgoing(true)?))
    }

    /// Fires when a member answers that this node was removed from the cluster.
    pub fn removed_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.removed.subscribe()
    }

    /// Re-arms the removed signal (after the node has reset).
    pub fn clear_removed(&self) {
        self.removed.send_replace(false);
    }

    /// Logs (at most every ten seconds per address) that the node at `addr` refused this
    /// node's messages because it is in another cluster, e.g. one `ekka cluster recover` made
    /// from this node's. Nothing else happens: this node keeps its data and its cluster.
    pub fn note_refused(&self, addr: &str, st: &tonic::Status) {
        if st.code() != tonic::Code::FailedPrecondition
            || !st.message().starts_with("cluster mismatch")
        {
            return;
        }
        if !self.refused.allow(addr.to_string()) {
            return;
        }
        tracing::warn!(
            %addr,
            cluster = %ekka_types::fmt_id(self.cluster_id()),
            reason = %st.message(),
            "refused by a node of another cluster; this node keeps its data and its cluster"
        );
    }

    pub fn record_ok(&self, id: NodeId) {
        let mut m = self.last_ok.lock();
        m.insert(id, Instant::now());
    }

    /// When `id` last answered a Raft RPC, if ever.
    pub fn last_ok(&self, id: NodeId) -> Option<Instant> {
        let m = self.last_ok.lock();
        m.get(&id).copied()
    }
}
