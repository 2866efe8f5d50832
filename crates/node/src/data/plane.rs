//! `Data`: the data plane of one node, over its runtime.

use std::ops::Deref;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::runtime::core::Inner;

use ekka_types::{ApiError, DataCommand, KvOp, Response};

use super::local::LocalLocks;

/// The data plane of one node: the runtime it proposes through, the leader's write batcher and
/// the process-local locks.
pub(crate) struct Data {
    pub(crate) rt: Arc<Inner>,
    /// ekka's `local` lock scope.
    pub(crate) local_locks: LocalLocks,
    /// The leader's write batcher (lock and key-value commands).
    pub(crate) batch_tx: mpsc::UnboundedSender<Pending>,
}

impl Data {
    /// The data plane over `rt`, and the receiving end of its batcher (for [`batcher`]).
    pub(crate) fn new(rt: Arc<Inner>) -> (Arc<Data>, mpsc::UnboundedReceiver<Pending>) {
        let (batch_tx, batch_rx) = mpsc::unbounded_channel();
        let data = Data {
            rt,
            local_locks: LocalLocks::default(),
            batch_tx,
        };
        (Arc::new(data), batch_rx)
    }
}

impl Deref for Data {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.rt
    }
}

/// A lock or key-value command waiting for the leader's next batch.
pub(crate) struct Pending {
    pub(crate) cmd: DataCommand,
    pub(crate) tx: tokio::sync::oneshot::Sender<Result<Response, ApiError>>,
}

impl Pending {
    /// Key and value bytes the command carries (what makes an entry large).
    pub(crate) fn cmd_bytes(&self) -> usize {
        match &self.cmd {
            DataCommand::Kv(op) => {
                op.key().len()
                    + match op {
                        KvOp::Put { value, .. }
                        | KvOp::Cas {
                            value: Some(value), ..
                        } => value.len(),
                        _ => 0,
                    }
            }
            DataCommand::Lock(_) => 0,
        }
    }
}
