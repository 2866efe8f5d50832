//! ekka-discovery: how a node finds its peers. The [`Strategy`] trait mirrors ekka's
//! `ekka_cluster_strategy` (discover / lock / unlock / register / unregister); each strategy lives
//! in its own module. A library user can plug in their own by implementing the trait.
//!
//! Every call has a timeout, every bad answer is a [`DiscoveryError`] naming what was wrong, and
//! nothing here panics on what a peer, a DNS server or a command returns.

mod dns;
mod etcd;
mod exec;
mod k8s;
mod mcast;
mod static_seeds;

use std::time::Duration;

pub use dns::{Dns, DnsRecord};
pub use etcd::{Etcd, EtcdConfig};
pub use exec::Exec;
pub use k8s::{AddressType, K8s, K8sConfig};
pub use mcast::{Mcast, McastConfig};
pub use static_seeds::Static;

/// The default time a strategy call may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// ekka's `ok | ignore`: the call did its job, or the strategy has nothing to do for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Done {
    Ok,
    Ignore,
}

/// Why a strategy call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    #[error("{strategy}: {message}")]
    Failed {
        strategy: &'static str,
        message: String,
    },
    #[error("{strategy}: no answer within {timeout:?}")]
    Timeout {
        strategy: &'static str,
        timeout: Duration,
    },
    #[error("{strategy}: bad answer {answer:?}: {message}")]
    BadAnswer {
        strategy: &'static str,
        answer: String,
        message: String,
    },
}

/// A way to find the other nodes of a cluster.
///
/// `discover` returns peer addresses (`HOST:PORT`, possibly including this node's own); the
/// others coordinate bootstrap (`lock`/`unlock`) and announce this node (`register` /
/// `unregister`). Strategies that have nothing to do for a call return [`Done::Ignore`].
#[async_trait::async_trait]
pub trait Strategy: Send + Sync + 'static {
    /// Short name for logs: `static`, `dns`, ...
    fn name(&self) -> &'static str;

    /// Told this node's advertised address once the node is bound (it may have asked for port 0).
    fn bind(&self, _addr: &str) {}

    async fn discover(&self) -> Result<Vec<String>, DiscoveryError>;

    async fn lock(&self) -> Result<Done, DiscoveryError> {
        Ok(Done::Ignore)
    }

    async fn unlock(&self) -> Result<Done, DiscoveryError> {
        Ok(Done::Ignore)
    }

    async fn register(&self) -> Result<Done, DiscoveryError> {
        Ok(Done::Ignore)
    }

    async fn unregister(&self) -> Result<Done, DiscoveryError> {
        Ok(Done::Ignore)
    }
}

/// An HTTP client for the strategies that speak HTTP (etcd, k8s). TLS is rustls with the ring
/// provider, installed here once for the process (a second install is a harmless no-op).
pub(crate) fn http_client(
    strategy: &'static str,
    timeout: Duration,
    ca_pem: Option<&[u8]>,
) -> Result<reqwest::Client, DiscoveryError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let failed = |message: String| DiscoveryError::Failed { strategy, message };
    let mut b = reqwest::Client::builder().timeout(timeout);
    if let Some(pem) = ca_pem {
        let cert = reqwest::Certificate::from_pem(pem).map_err(|e| failed(format!("CA: {e}")))?;
        b = b.tls_certs_only([cert]);
    }
    b.build().map_err(|e| failed(format!("http client: {e}")))
}

/// Sorts, deduplicates and validates discovered addresses.
pub(crate) fn clean(
    strategy: &'static str,
    addrs: impl IntoIterator<Item = String>,
) -> Result<Vec<String>, DiscoveryError> {
    let mut out = Vec::new();
    for a in addrs {
        ekka_types::check::check_addr(&a).map_err(|message| DiscoveryError::BadAnswer {
            strategy,
            answer: a.clone(),
            message,
        })?;
        out.push(a);
    }
    out.sort();
    out.dedup();
    Ok(out)
}
