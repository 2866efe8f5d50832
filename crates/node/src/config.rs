//! `NodeConfig`: everything a node needs to start, and its validation.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ekka_discovery::Strategy;

use ekka_types::check::{check_addr, check_name};
use ekka_types::limits::{MAX_COOKIE_BYTES, MAX_ENTRY_BYTES, MAX_VOTERS_LIMIT};
use ekka_types::{ApiError, ErrorCode};

pub use ekka_proto::tls::TlsFiles;
pub use ekka_proto::DEFAULT_COOKIE;

/// Default [`NodeConfig::snapshot_log_bytes`]: 64 MiB of log since the last snapshot (about 1,000
/// entries of one 64 KiB value each, where `snapshot_every` alone would allow 5,000).
pub const DEFAULT_SNAPSHOT_LOG_BYTES: u64 = 64 * 1024 * 1024;

/// Smallest [`NodeConfig::snapshot_log_bytes`]: one largest entry.
pub const MIN_SNAPSHOT_LOG_BYTES: u64 = MAX_ENTRY_BYTES as u64;

/// A discovery strategy for the autocluster loop (any [`Strategy`], including your own).
#[derive(Clone)]
pub struct Discovery(pub Arc<dyn Strategy>);

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Discovery({})", self.0.name())
    }
}

/// Configuration of one node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Unique member name.
    pub name: String,
    /// Address to bind the gRPC server to; port 0 picks a free port.
    pub listen: String,
    /// Address given to peers; the bound address when `None`.
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    /// Shared cluster secret; every RPC must carry it.
    pub cookie: String,
    /// `singleton` discovery: never joins and is never joined.
    pub singleton: bool,
    /// Most voters the cluster keeps (odd). Only used when this node bootstraps the cluster.
    pub max_voters: u32,
    pub heartbeat_interval: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// The leader marks a member down after this long without an answer.
    pub down_after: Duration,
    /// How long a join, leave or force-leave may take before it fails with `unavailable`.
    pub op_timeout: Duration,
    /// Build a snapshot every this many log entries, and keep this many entries after it.
    pub snapshot_every: u64,
    /// Also build a snapshot once the log entries written since the last one pass this many
    /// (encoded) bytes; the log is then purged up to the snapshot before it, so it holds at most
    /// about twice this many bytes, whatever the value sizes. See `DEFAULT_SNAPSHOT_LOG_BYTES`.
    pub snapshot_log_bytes: u64,
    /// Peers to cluster with automatically; `None` is ekka's `manual` (and `singleton`).
    pub discovery: Option<Discovery>,
    /// Time between autocluster rounds (a random jitter of up to a half is added).
    pub retry_interval: Duration,
    /// Nodes that must be discovered before single nodes start forming a cluster.
    pub bootstrap_expect: usize,
    /// Let a cluster of several nodes dissolve into a strictly larger one it discovers.
    pub autoheal: bool,
    /// A voter down this long (committed down-since) is replaced by an up learner.
    pub replace_down_voter_after: Duration,
    /// The leader removes members down this long (committed down-since), learners first, never
    /// below quorum; `0` turns it off. The cluster's own setting (`Node::set_autoclean`) wins.
    pub autoclean: Duration,
    /// Mutual TLS on the gRPC port (peers and clients), `None`: plaintext. Peers and clients
    /// must present a certificate the CA signed; the cookie is still checked.
    pub tls: Option<TlsFiles>,
}

impl NodeConfig {
    /// A configuration with the defaults of the `ekka agent` command.
    pub fn new(name: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        NodeConfig {
            name: name.into(),
            listen: "127.0.0.1:4370".into(),
            advertise: None,
            data_dir: data_dir.into(),
            cookie: DEFAULT_COOKIE.into(),
            singleton: false,
            max_voters: ekka_types::limits::DEFAULT_MAX_VOTERS as u32,
            heartbeat_interval: Duration::from_millis(50),
            election_timeout_min: Duration::from_millis(120),
            election_timeout_max: Duration::from_millis(240),
            down_after: Duration::from_millis(500),
            op_timeout: Duration::from_secs(15),
            snapshot_every: 5000,
            snapshot_log_bytes: DEFAULT_SNAPSHOT_LOG_BYTES,
            discovery: None,
            retry_interval: Duration::from_secs(1),
            bootstrap_expect: 1,
            autoheal: true,
            replace_down_voter_after: Duration::from_secs(10),
            autoclean: Duration::from_secs(3600),
            tls: None,
        }
    }

    /// Checks every field; the error is an `invalid_config` one naming the field.
    pub fn validate(&self) -> Result<(), ApiError> {
        let bad = |m: String| Err(ApiError::new(ErrorCode::InvalidConfig, m));
        if let Err(e) = check_name(&self.name) {
            return bad(format!("name: {e}"));
        }
        if let Err(e) = self.listen.parse::<std::net::SocketAddr>() {
            return bad(format!("listen: {:?} is not IP:PORT ({e})", self.listen));
        }
        if let Some(a) = &self.advertise {
            if let Err(e) = check_addr(a) {
                return bad(format!("advertise: {e}"));
            }
        }
        if self.cookie.is_empty() || self.cookie.len() > MAX_COOKIE_BYTES {
            return bad(format!("cookie: must be 1..={MAX_COOKIE_BYTES} bytes"));
        }
        if self.cookie.bytes().any(|b| !(0x20..0x7f).contains(&b)) {
            return bad("cookie: only printable ASCII is allowed".into());
        }
        let mv = self.max_voters as usize;
        if mv == 0 || mv.is_multiple_of(2) || mv > MAX_VOTERS_LIMIT {
            return bad(format!("max_voters: must be odd, 1..={MAX_VOTERS_LIMIT}"));
        }
        if self.retry_interval.is_zero() {
            return bad("retry_interval: must be more than 0".into());
        }
        if self.bootstrap_expect == 0 {
            return bad("bootstrap_expect: must be at least 1".into());
        }
        if self.singleton && self.discovery.is_some() {
            return bad("discovery: singleton takes no strategy".into());
        }
        if self.snapshot_every == 0 {
            return bad("snapshot_every: must be at least 1".into());
        }
        if self.snapshot_log_bytes < MIN_SNAPSHOT_LOG_BYTES {
            return bad(format!(
                "snapshot_log_bytes: must be at least {MIN_SNAPSHOT_LOG_BYTES}"
            ));
        }
        if self.heartbeat_interval.is_zero()
            || self.election_timeout_min <= self.heartbeat_interval
            || self.election_timeout_max <= self.election_timeout_min
        {
            return bad("timing: need 0 < heartbeat < election_min < election_max".into());
        }
        if let Some(t) = &self.tls {
            t.load()
                .map_err(|e| ApiError::new(ErrorCode::InvalidConfig, e.to_string()))?;
        }
        self.raft_config().map(|_| ())
    }

    pub(crate) fn raft_config(&self) -> Result<openraft::Config, ApiError> {
        let c = openraft::Config {
            cluster_name: "ekka".into(),
            heartbeat_interval: self.heartbeat_interval.as_millis() as u64,
            election_timeout_min: self.election_timeout_min.as_millis() as u64,
            election_timeout_max: self.election_timeout_max.as_millis() as u64,
            install_snapshot_timeout: 5_000,
            snapshot_max_chunk_size: ekka_types::limits::SNAPSHOT_CHUNK_BYTES,
            max_payload_entries: 256,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.snapshot_every,
            ..Default::default()
        };
        c.validate()
            .map_err(|e| ApiError::new(ErrorCode::InvalidConfig, format!("raft: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_fields_are_named() {
        let c = NodeConfig::new("n1", "/tmp/x");
        c.validate().unwrap();
        c.raft_config().unwrap();
        let mut b = c.clone();
        b.listen = "nowhere".into();
        assert!(b.validate().unwrap_err().message.starts_with("listen"));
        let mut b = c.clone();
        b.max_voters = 4;
        assert!(b.validate().unwrap_err().message.starts_with("max_voters"));
        let mut b = c;
        b.name = "a b".into();
        assert!(b.validate().unwrap_err().message.starts_with("name"));
    }
}
