//! Key-value writes (put, delete, compare-and-set), the autoclean setting, and key change
//! streams.

use std::sync::Arc;

use ekka_types::{ApiError, ClusterState, Command, ErrorCode, KvEvent, KvOp, Outcome};
use tokio::sync::mpsc;

use crate::error::internal;

use super::plane::Data;

/// A put's revision and the revision it replaced (0: the key was new).
pub(crate) struct PutDone {
    pub revision: u64,
    pub prev_revision: u64,
}

impl Data {
    /// Streams key-value changes under `prefix` from revision `from` (inclusive), or only new
    /// ones when `None`.
    pub(crate) fn kv_watch(
        self: &Arc<Self>,
        prefix: String,
        from: Option<u64>,
    ) -> Result<mpsc::Receiver<Result<KvEvent, ApiError>>, ApiError> {
        if !prefix.is_empty() {
            ekka_types::kv::check_key(&prefix)
                .map_err(|m| ApiError::new(ErrorCode::InvalidArgument, m))?;
        }
        self.rt.spawn_watch(
            from,
            |st| st.data_revision(),
            move |st, after| {
                st.kv
                    .events_from(&prefix, after + 1)
                    .ok_or_else(|| kv_compacted(after + 1, st))
            },
            |e: &KvEvent| e.revision,
        )
    }

    pub(crate) async fn set_autoclean_ms(self: &Arc<Self>, ms: u64) -> Result<u64, ApiError> {
        let r = self
            .propose_data(Command::SetAutoclean { ms }, false)
            .await?;
        Ok(r.revision)
    }

    pub(crate) async fn kv_put(
        self: &Arc<Self>,
        key: String,
        value: Vec<u8>,
    ) -> Result<PutDone, ApiError> {
        let op = KvOp::Put { key, value };
        let r = self.propose_data(Command::Kv(op), false).await?;
        let prev_revision = match r.outcome {
            Outcome::Put { prev_revision } => prev_revision,
            other => return Err(internal(format!("unexpected answer to put: {other:?}"))),
        };
        Ok(PutDone {
            revision: r.revision,
            prev_revision,
        })
    }

    /// The delete's revision, and whether the key existed.
    pub(crate) async fn kv_delete(self: &Arc<Self>, key: String) -> Result<(u64, bool), ApiError> {
        let op = KvOp::Delete { key };
        let r = self.propose_data(Command::Kv(op), false).await?;
        match r.outcome {
            Outcome::Deleted { existed } => Ok((r.revision, existed)),
            other => Err(internal(format!("unexpected answer to delete: {other:?}"))),
        }
    }

    /// The write's revision.
    pub(crate) async fn kv_cas(
        self: &Arc<Self>,
        key: String,
        expect: u64,
        value: Option<Vec<u8>>,
    ) -> Result<u64, ApiError> {
        let op = KvOp::Cas { key, expect, value };
        Ok(self.propose_data(Command::Kv(op), false).await?.revision)
    }
}

fn kv_compacted(from: u64, st: &ClusterState) -> ApiError {
    ApiError::new(
        ErrorCode::Compacted,
        format!(
            "revision {from} is older than the oldest retained change ({}); read the keys again \
             (revision {}) and watch from there",
            st.kv.compacted_to + 1,
            st.data_revision()
        ),
    )
}

/// The command that writes `value` under `key` (an offline recovery writes through it too).
pub(crate) fn put_command(key: String, value: Vec<u8>) -> Command {
    Command::Kv(KvOp::Put { key, value })
}
