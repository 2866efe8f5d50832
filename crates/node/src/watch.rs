//! Membership event streams (`Node::watch`) and the generic applied-state stream under them.

use std::sync::Arc;

use ekka_types::{ApiError, ErrorCode};

use crate::error::unavailable;
use crate::runtime::core::Inner;
use crate::timings::*;

impl Inner {
    pub(crate) fn watch(
        self: &Arc<Self>,
        from: Option<u64>,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<ekka_types::Event, ApiError>>, ApiError> {
        self.spawn_watch(
            from,
            |st| st.revision,
            |st, after| {
                st.events_after(after)
                    .ok_or_else(|| compacted(after + 1, st))
            },
            |e: &ekka_types::Event| e.revision,
        )
    }

    /// Streams what `fetch(state, after)` returns past revision `after` as entries apply, from
    /// revision `from` (inclusive) or, when `None`, only what comes after `current(state)`. `fetch` fails (and the
    /// stream ends with its error) when revisions after `after` were already dropped.
    pub(crate) fn spawn_watch<T, F, R>(
        self: &Arc<Self>,
        from: Option<u64>,
        current: fn(&ekka_types::ClusterState) -> u64,
        fetch: F,
        revision: R,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<T, ApiError>>, ApiError>
    where
        T: Send + 'static,
        F: Fn(&ekka_types::ClusterState, u64) -> Result<Vec<T>, ApiError> + Send + 'static,
        R: Fn(&T) -> u64 + Send + 'static,
    {
        let core = self.core();
        let mut after = {
            let st = core.state.read();
            let after = match from {
                Some(n) => n.saturating_sub(1),
                None => current(&st),
            };
            fetch(&st, after)?;
            after
        };
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let inner = self.clone();
        let mut shutdown = self.shutdown.subscribe();
        self.spawn(async move {
            let mut applied = core.applied.clone();
            loop {
                if !Arc::ptr_eq(&core, &inner.core()) {
                    let _ = tx
                        .send(Err(unavailable(
                            "this node reset its state (join, leave or removal); resync",
                        )))
                        .await;
                    return;
                }
                let items = {
                    let st = core.state.read();
                    fetch(&st, after)
                };
                match items {
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                    Ok(items) => {
                        for item in items {
                            after = revision(&item);
                            if tx.send(Ok(item)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                tokio::select! {
                    r = applied.changed() => if r.is_err() {
                        // This Raft instance is gone; the next round reports the reset.
                        tokio::time::sleep(RETRY_PAUSE).await;
                    },
                    _ = tokio::time::sleep(WATCH_IDLE_CHECK) => {}
                    _ = tx.closed() => return,
                    _ = shutdown.changed() => return,
                }
            }
        });
        Ok(rx)
    }
}

fn compacted(from: u64, st: &ekka_types::ClusterState) -> ApiError {
    let oldest = st.events.front().map_or(st.revision + 1, |e| e.revision);
    ApiError::new(
        ErrorCode::Compacted,
        format!(
            "revision {from} is older than the oldest retained event ({oldest}); resync from \
             cluster status (revision {}) and watch from there",
            st.revision
        ),
    )
}
