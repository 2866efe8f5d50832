//! ekka-client: a gRPC client of one ekka agent's `Cluster` service. Any member may be addressed;
//! the agent forwards what needs the leader. Every error is an [`ApiError`] with a CONTRACT.md code.

use std::time::Duration;

use ekka_proto::pb::cluster_client::ClusterClient;
use ekka_proto::{error_from_status, pb, COOKIE_HEADER, ERROR_HEADER};
use ekka_types::limits::MAX_RPC_MESSAGE_BYTES;
use ekka_types::{ApiError, ClusterStatus, ErrorCode, Event};
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

mod data;

pub use data::{KvRange, KvWatcher, LockGrant, LockStatus};
pub use ekka_proto::tls::{Tls, TlsFiles};
pub use ekka_proto::DEFAULT_COOKIE;

/// How long a membership change may take before the client gives up.
const OP_TIMEOUT: Duration = Duration::from_secs(40);
/// How long a status call may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct Auth(AsciiMetadataValue);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert(COOKIE_HEADER, self.0.clone());
        Ok(req)
    }
}

/// The answer to a join or force-leave: done, or ekka's `ignore` with a reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<T> {
    Done(T),
    Ignored(String),
}

/// A client of one agent.
#[derive(Clone)]
pub struct Client {
    addr: String,
    pub(crate) inner: ClusterClient<InterceptedService<Channel, Auth>>,
}

fn invalid(m: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidArgument, m)
}

impl Client {
    /// A client of the agent at `addr` (`HOST:PORT`). Connects lazily: an agent that is not
    /// there shows up as `node_down` on the first call.
    pub fn new(addr: &str, cookie: &str) -> Result<Client, ApiError> {
        Client::with_tls(addr, cookie, None)
    }

    /// As [`Client::new`], over mutual TLS when `tls` is given (load it once with
    /// [`TlsFiles::load`](ekka_proto::tls::TlsFiles::load) and share it between clients).
    pub fn with_tls(addr: &str, cookie: &str, tls: Option<&Tls>) -> Result<Client, ApiError> {
        ekka_types::check::check_addr(addr).map_err(invalid)?;
        let cookie = AsciiMetadataValue::try_from(cookie)
            .map_err(|_| invalid("the cookie must be printable ASCII"))?;
        let ch = ekka_proto::tls::endpoint(addr, tls, Duration::from_secs(2))
            .map_err(invalid)?
            .connect_lazy();
        let inner = ClusterClient::with_interceptor(ch, Auth(cookie))
            .max_decoding_message_size(MAX_RPC_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RPC_MESSAGE_BYTES);
        Ok(Client {
            addr: addr.to_string(),
            inner,
        })
    }

    /// The agent's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub(crate) async fn call<T>(
        &self,
        limit: Duration,
        fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, ApiError> {
        match tokio::time::timeout(limit, fut).await {
            Err(_) => Err(ApiError::new(
                ErrorCode::Unavailable,
                format!("{} did not answer within {limit:?}", self.addr),
            )),
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(st)) => {
                let mut e = error_from_status(&st);
                if e.code == ErrorCode::NodeDown && st.metadata().is_empty() {
                    e.message = format!("nothing answers at {} ({})", self.addr, st.message());
                }
                Err(e)
            }
        }
    }

    /// [`Client::call`] for a request that changes something: once it was sent, a deadline that
    /// passes or a connection that breaks leaves its outcome unknown (`outcome_unknown`, CLI exit
    /// 3), never `unavailable`, `node_down` or `internal`, since the agent may have applied it.
    pub(crate) async fn call_write<T>(
        &self,
        limit: Duration,
        fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, ApiError> {
        match tokio::time::timeout(limit, fut).await {
            Err(_) => Err(ApiError::new(
                ErrorCode::OutcomeUnknown,
                format!(
                    "{} did not answer within {limit:?} after the request was sent; it may have \
                     been applied",
                    self.addr
                ),
            )),
            Ok(Err(st))
                if st.metadata().get(ERROR_HEADER).is_none() && !ekka_proto::never_sent(&st) =>
            {
                Err(ApiError::new(
                    ErrorCode::OutcomeUnknown,
                    format!(
                        "the connection to {} broke after the request was sent ({}); it may \
                         have been applied",
                        self.addr,
                        st.message()
                    ),
                ))
            }
            Ok(r) => self.call(limit, std::future::ready(r)).await,
        }
    }

    /// Members, roles and statuses as the cluster sees them.
    pub async fn status(&self) -> Result<ClusterStatus, ApiError> {
        let mut c = self.inner.clone();
        let r = self
            .call(STATUS_TIMEOUT, c.status(pb::StatusRequest {}))
            .await?;
        ClusterStatus::try_from(r)
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("bad status reply: {e}")))
    }

    /// Makes the agent join the cluster `addr` belongs to; returns the cluster id.
    pub async fn join(&self, addr: &str) -> Result<Outcome<u64>, ApiError> {
        let mut c = self.inner.clone();
        let req = pb::JoinRequest {
            addr: addr.to_string(),
        };
        let r = self.call_write(OP_TIMEOUT, c.join(req)).await?;
        Ok(match r.ignored {
            Some(why) => Outcome::Ignored(why),
            None => Outcome::Done(r.cluster_id),
        })
    }

    /// Makes the agent leave its cluster.
    pub async fn leave(&self) -> Result<(), ApiError> {
        let mut c = self.inner.clone();
        self.call_write(OP_TIMEOUT, c.leave(pb::LeaveRequest {}))
            .await?;
        Ok(())
    }

    /// Removes member `name` (or a 16-digit hex id) from the agent's cluster.
    pub async fn force_leave(&self, name: &str) -> Result<Outcome<()>, ApiError> {
        let mut c = self.inner.clone();
        let req = pb::ForceLeaveRequest {
            name: name.to_string(),
        };
        let r = self.call_write(OP_TIMEOUT, c.force_leave(req)).await?;
        Ok(match r.ignored {
            Some(why) => Outcome::Ignored(why),
            None => Outcome::Done(()),
        })
    }
}

impl Client {
    /// Sets the cluster's autoclean delay (zero turns it off).
    pub async fn set_autoclean(&self, delay: Duration) -> Result<(), ApiError> {
        let mut c = self.inner.clone();
        let req = pb::SetAutocleanRequest {
            ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        };
        self.call_write(OP_TIMEOUT, c.set_autoclean(req)).await?;
        Ok(())
    }
}

/// A stream of membership events from [`Client::watch`].
pub struct Watcher {
    inner: tonic::Streaming<pb::WatchEvent>,
}

impl Watcher {
    /// The next event; `None` when the agent ended the stream, an error when it failed.
    pub async fn next(&mut self) -> Option<Result<Event, ApiError>> {
        match self.inner.message().await {
            Ok(None) => None,
            Ok(Some(e)) => Some(
                Event::try_from(e)
                    .map_err(|e| ApiError::new(ErrorCode::Internal, format!("bad event: {e}"))),
            ),
            Err(st) => Some(Err(error_from_status(&st))),
        }
    }
}

impl Client {
    /// Membership events from revision `from` on (inclusive), or only new ones when `None`.
    pub async fn watch(&self, from: Option<u64>) -> Result<Watcher, ApiError> {
        let mut c = self.inner.clone();
        let req = pb::WatchRequest {
            from_revision: from,
        };
        let inner = self.call(STATUS_TIMEOUT, c.watch(req)).await?;
        Ok(Watcher { inner })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_addresses_and_cookies_are_invalid_arguments() {
        assert_eq!(
            Client::new("nowhere", "c").err().map(|e| e.code),
            Some(ErrorCode::InvalidArgument)
        );
        assert_eq!(
            Client::new("127.0.0.1:1", "bad\ncookie")
                .err()
                .map(|e| e.code),
            Some(ErrorCode::InvalidArgument)
        );
    }

    #[tokio::test]
    async fn nothing_listening_is_node_down() {
        // Bind then drop a listener to get a port with nothing behind it.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let c = Client::new(&addr, DEFAULT_COOKIE).unwrap();
        let e = c.status().await.unwrap_err();
        assert_eq!(e.code, ErrorCode::NodeDown, "{e}");
        // A write that could not even connect was never sent: node_down, not outcome_unknown.
        let e = c.kv_put("k", b"v".to_vec()).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::NodeDown, "{e}");
    }

    #[tokio::test]
    async fn a_write_whose_connection_breaks_after_sending_is_outcome_unknown() {
        // A server that reads the request, then drops the connection without an answer.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    use tokio::io::AsyncReadExt;
                    let mut buf = vec![0u8; 4096];
                    let _ = tokio::time::timeout(Duration::from_millis(300), async {
                        while s.read(&mut buf).await.is_ok_and(|n| n > 0) {}
                    })
                    .await;
                });
            }
        });
        let c = Client::new(&addr, DEFAULT_COOKIE).unwrap();
        let e = c.kv_put("k", b"v".to_vec()).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::OutcomeUnknown, "{e}");
    }
}
