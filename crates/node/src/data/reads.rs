//! Reads of the key-value space: linearizable through a read-index round on the leader (a
//! follower forwards the query, one hop), or stale from this node's own state.

use std::sync::Arc;

use ekka_types::{ApiError, ClusterState, ErrorCode, KvRange};
use serde::{Deserialize, Serialize};

use crate::error::unavailable;
use crate::runtime::core::Core;

use super::plane::Data;
use super::propose::{to_payload, Reply};

/// How a read is served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Read {
    /// Reflects every write acknowledged before the read started (a read-index round on the
    /// leader). Fails with `unavailable` without a quorum.
    #[default]
    Linearizable,
    /// This node's state as it is, possibly behind; answers even without a quorum.
    Stale,
}

/// A read a follower forwards to the leader.
#[derive(Serialize, Deserialize)]
pub(crate) struct ReadQuery {
    pub key: String,
    pub prefix: bool,
    pub limit: u32,
}

fn read_state(st: &ClusterState, q: &ReadQuery) -> KvRange {
    let limit = match q.limit as usize {
        0 => ekka_types::limits::MAX_RANGE_KEYS,
        n => n.min(ekka_types::limits::MAX_RANGE_KEYS),
    };
    let (entries, more) = if q.prefix {
        let mut v = st.kv.range(&q.key, limit + 1);
        let more = v.len() > limit;
        v.truncate(limit);
        (v, more)
    } else {
        let v = st
            .kv
            .entries
            .get(&q.key)
            .map(|e| vec![(q.key.clone(), e.clone())])
            .unwrap_or_default();
        (v, false)
    };
    KvRange {
        revision: st.data_revision(),
        entries,
        more,
    }
}

fn check_query(q: &ReadQuery) -> Result<(), ApiError> {
    let r = if q.prefix && q.key.is_empty() {
        Ok(())
    } else {
        ekka_types::kv::check_key(&q.key)
    };
    r.map_err(|m| ApiError::new(ErrorCode::InvalidArgument, m))
}

impl Data {
    /// A read served by the leader after confirming it still leads (read index), or by this node
    /// from its own state when `read` is `Stale`.
    pub(crate) async fn read_data(
        self: &Arc<Self>,
        q: ReadQuery,
        read: Read,
        forwarded: bool,
    ) -> Result<KvRange, ApiError> {
        check_query(&q)?;
        self.check_fault()?;
        if read == Read::Stale {
            let core = self.core();
            let st = core.state.read();
            return Ok(read_state(&st, &q));
        }
        let payload = to_payload(&q)?;
        let me = self.clone();
        let reply = self
            .rt
            .via_leader(
                forwarded,
                false,
                |core| async move { me.leader_read(&core, &q).await.map(Reply::Local) },
                |mut p| {
                    let payload = payload.clone();
                    async move { p.read(payload).await.map(|r| r.map(Reply::Remote)) }
                },
            )
            .await?;
        reply.into_value()
    }

    async fn leader_read(&self, core: &Core, q: &ReadQuery) -> Result<KvRange, ApiError> {
        self.check_quorum(core)?;
        let fut = core.raft.ensure_linearizable();
        tokio::select! {
            r = tokio::time::timeout(self.cfg.op_timeout, fut) => r
                .map_err(|_| unavailable("no quorum: the read index was not confirmed in time"))?
                .map_err(|e| unavailable(format!("no linearizable read: {e}")))?,
            () = self.quorum_lost() => {
                return Err(unavailable("no quorum: the leader lost its quorum during the read"))
            }
        };
        let st = core.state.read();
        Ok(read_state(&st, q))
    }

    /// `key` alone, or the keys under it with `prefix`, at most `limit`.
    pub(crate) async fn kv_range(
        self: &Arc<Self>,
        key: String,
        prefix: bool,
        limit: u32,
        read: Read,
    ) -> Result<KvRange, ApiError> {
        let q = ReadQuery { key, prefix, limit };
        self.read_data(q, read, false).await
    }
}
