//! Proposing lock and key-value commands: on the leader through its write batcher (many commands
//! in one log entry), from a follower forwarded to the leader in one hop.

use std::sync::Arc;

use parking_lot::Mutex;

use ekka_proto::pb;
use ekka_types::limits::MAX_BATCH_BYTES;
use ekka_types::{ApiError, Command, DataCommand, ErrorCode, Outcome, Response};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::error::{internal, outcome_unknown, unavailable};
use crate::runtime::core::Inner;
use crate::runtime::leader::lost_quorum_in_flight;

use super::plane::{Data, Pending};

impl Data {
    /// Proposes a lock or key-value command on the leader (forwarding it when this node is not).
    pub(crate) async fn propose_data(
        self: &Arc<Self>,
        cmd: Command,
        forwarded: bool,
    ) -> Result<Response, ApiError> {
        let valid = match &cmd {
            Command::Lock(op) => op.validate(),
            Command::Kv(op) => op.validate(),
            Command::SetAutoclean { .. } => Ok(()),
            _ => {
                return Err(ApiError::new(
                    ErrorCode::InvalidArgument,
                    "only lock and key-value commands are accepted here",
                ))
            }
        };
        valid.map_err(crate::error::from_reject)?;
        self.check_fault()?;
        // Only one of the two paths runs; the command is encoded only when it is forwarded.
        let slot = Mutex::new(Some(cmd));
        let take = || slot.lock().take();
        let me = self.clone();
        let reply = self
            .rt
            .via_leader(
                forwarded,
                true,
                |core| async move {
                    let cmd = take().ok_or_else(|| internal("the command was taken twice"))?;
                    me.check_quorum(&core)?;
                    match DataCommand::try_from(cmd) {
                        Ok(data) => me.submit(data).await.map(Reply::Local),
                        // SetAutoclean: an entry of its own.
                        Err(cmd) => me.propose_on(&core, cmd).await.map(Reply::Local),
                    }
                },
                |mut p| {
                    // Encoded again on each try (a retry at a new leader is rare).
                    let payload = match slot.lock().as_ref() {
                        Some(cmd) => to_payload(cmd),
                        None => Err(internal("the command was taken")),
                    };
                    async move {
                        let payload = payload.map_err(|e| tonic::Status::internal(e.message))?;
                        p.forward(payload).await.map(|r| r.map(Reply::Remote))
                    }
                },
            )
            .await?;
        reply.into_value()
    }

    /// Hands `cmd` to the leader's batcher and waits for its own result.
    async fn submit(&self, cmd: DataCommand) -> Result<Response, ApiError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.batch_tx
            .send(Pending { cmd, tx })
            .map_err(|_| unavailable("this node is shutting down"))?;
        tokio::select! {
            r = rx => r.map_err(|_| {
                outcome_unknown(
                    "the batcher stopped with the write in hand (shutdown); it may have been \
                     applied",
                )
            })?,
            () = self.quorum_lost() => Err(lost_quorum_in_flight()),
        }
    }
}

/// Batches proposed at once: while they commit, the next batch fills up.
const BATCHES_IN_FLIGHT: usize = 4;

/// The leader's write batcher: concurrent lock and key-value commands go into one log entry
/// (`Command::Batch`, at most `OPS_PER_ENTRY`), so one append, one fsync and one replication
/// round serve them all. Each command keeps its own result and operation revision.
pub(crate) async fn batcher(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT));
    let mut shutdown = inner.shutdown.subscribe();
    // A command that did not fit in the last batch; it opens the next one.
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => tokio::select! {
                p = rx.recv() => match p {
                    Some(p) => p,
                    None => return,
                },
                _ = shutdown.changed() => return,
            },
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.cmd_bytes();
        let mut batch = vec![first];
        while batch.len() < ekka_types::limits::OPS_PER_ENTRY as usize {
            let Some(p) = carry.take().or_else(|| rx.try_recv().ok()) else {
                break;
            };
            if bytes + p.cmd_bytes() > MAX_BATCH_BYTES {
                // Starts the next batch: one entry stays under `MAX_ENTRY_BYTES`.
                carry = Some(p);
                break;
            }
            bytes += p.cmd_bytes();
            batch.push(p);
        }
        let me = inner.clone();
        inner.spawn(async move {
            let _permit = permit;
            let (cmds, txs): (Vec<DataCommand>, Vec<_>) =
                batch.into_iter().map(|p| (p.cmd, p.tx)).unzip();
            let core = me.core();
            match me.propose_on(&core, Command::Batch(cmds)).await {
                Ok(Response {
                    outcome: Outcome::Batch(results),
                    ..
                }) if results.len() == txs.len() => {
                    for (r, tx) in results.into_iter().zip(txs) {
                        let one = match r.rejected {
                            Some(rej) => Err(crate::error::from_reject(rej)),
                            None => Ok(Response {
                                revision: r.revision,
                                rejected: None,
                                outcome: r.outcome,
                            }),
                        };
                        let _ = tx.send(one);
                    }
                }
                Ok(other) => {
                    let e = internal(format!("unexpected answer to a batch: {other:?}"));
                    for tx in txs {
                        let _ = tx.send(Err(e.clone()));
                    }
                }
                Err(e) => {
                    for tx in txs {
                        let _ = tx.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

/// Either a local answer or the leader's encoded one.
pub(crate) enum Reply<T> {
    Local(T),
    Remote(pb::RaftPayload),
}

impl<T: serde::de::DeserializeOwned> Reply<T> {
    /// The local answer, or the leader's, decoded.
    pub(crate) fn into_value(self) -> Result<T, ApiError> {
        match self {
            Reply::Local(r) => Ok(r),
            Reply::Remote(p) => ekka_proto::envelope::open(&p)
                .map_err(|e| internal(format!("unreadable answer from the leader: {e}"))),
        }
    }
}

/// A value as a versioned payload (`ekka_codec`): a forwarded command or read, and the
/// leader's answer.
pub(crate) fn to_payload<T: Serialize>(v: &T) -> Result<pb::RaftPayload, ApiError> {
    ekka_proto::envelope::seal(v).map_err(internal)
}
