//! Lease locks: acquire (waiting in line, woken by the state machine), renew, release, the
//! leader's expiry ticker, and ekka's process-local lock scope.

use std::sync::Arc;
use std::time::Duration;

use ekka_types::{ApiError, Command, ErrorCode, LockGrant, LockOp, Outcome};
use tracing::warn;

use crate::error::{internal, unavailable};
use crate::runtime::core::{now_ms, Inner};

use super::plane::Data;

impl Data {
    /// Acquires a lock, waiting in line up to `wait` (woken by the state machine, never by
    /// polling the leader).
    pub(crate) async fn lock_acquire(
        self: &Arc<Self>,
        resource: &str,
        owner: &str,
        ttl_ms: u64,
        wait_ms: u64,
    ) -> Result<LockGrant, ApiError> {
        let op = LockOp::Acquire {
            resource: resource.into(),
            owner: owner.into(),
            ttl_ms,
            wait_ms,
        };
        let before = self.core().state.read().revision;
        let resp = match self.propose_data(Command::Lock(op), false).await {
            Ok(r) => r,
            Err(e) => return Err(self.acquire_failed(resource, owner, ttl_ms, before, e)),
        };
        match resp.outcome {
            Outcome::Granted { token, expires_ms } => Ok(LockGrant { token, expires_ms }),
            Outcome::Queued { .. } => {
                self.wait_in_line(resource, owner, wait_ms, resp.revision)
                    .await
            }
            other => Err(internal(format!("unexpected answer to acquire: {other:?}"))),
        }
    }

    /// The error for an acquire whose proposal failed with `e`; when it may still commit, first
    /// sets off its undo.
    fn acquire_failed(
        self: &Arc<Self>,
        resource: &str,
        owner: &str,
        ttl_ms: u64,
        before: u64,
        e: ApiError,
    ) -> ApiError {
        if !matches!(e.code, ErrorCode::Unavailable | ErrorCode::OutcomeUnknown) {
            return e;
        }
        // The entry may still commit once a quorum is back: undo it then, so a failed acquire
        // leaves nothing behind.
        let undo = LockOp::Abandon {
            resource: resource.into(),
            owner: owner.into(),
            after: before,
        };
        self.spawn_undo(undo, ttl_ms);
        // The undo makes the outcome certain: nothing stays held.
        unavailable(format!(
            "{}; the acquire is undone if it commits",
            e.message
        ))
    }

    /// Proposes `undo` in the background, every 200 ms until it commits, the lease (`ttl_ms`)
    /// would have ended anyway, or this node shuts down.
    fn spawn_undo(self: &Arc<Self>, undo: LockOp, ttl_ms: u64) {
        let me = self.clone();
        let give_up = std::time::Instant::now() + Duration::from_millis(ttl_ms);
        let tracker = me.clone();
        tracker.spawn(async move {
            // Until it commits, or the lease would have ended anyway.
            while me
                .propose_data(Command::Lock(undo.clone()), false)
                .await
                .is_err()
                && std::time::Instant::now() < give_up
                && !*me.shutdown.borrow()
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }

    /// Waits in line (queued at revision `queued_at`) until `owner` holds `resource` or the wait
    /// runs out; leaves the line if the caller goes away or no answer comes in time.
    async fn wait_in_line(
        self: &Arc<Self>,
        resource: &str,
        owner: &str,
        wait_ms: u64,
        queued_at: u64,
    ) -> Result<LockGrant, ApiError> {
        // Should the caller go away while in line, leave the line and give back a lock granted
        // meanwhile instead of holding it for a whole lease.
        let mut gone = LeaveLine {
            inner: Some(self.clone()),
            resource: resource.to_string(),
            owner: owner.to_string(),
            queued_at,
        };
        let local_deadline = Duration::from_millis(wait_ms) + self.cfg.op_timeout;
        let r = tokio::time::timeout(
            local_deadline,
            self.wait_for_grant(resource, owner, queued_at),
        )
        .await;
        gone.inner = None;
        match r {
            Ok(r) => r,
            Err(_) => {
                // The state never said either way (cut off?): leave the line, and give back a
                // hold granted meanwhile.
                let op = LockOp::Abandon {
                    resource: resource.into(),
                    owner: owner.into(),
                    after: queued_at,
                };
                let _ = self.propose_data(Command::Lock(op), false).await;
                Err(unavailable(format!(
                    "no answer about {resource} within the wait"
                )))
            }
        }
    }

    /// Waits until the local state, at or after `from_rev`, shows `owner` holding `resource`
    /// (granted) or out of its line (the wait ran out).
    async fn wait_for_grant(
        &self,
        resource: &str,
        owner: &str,
        from_rev: u64,
    ) -> Result<LockGrant, ApiError> {
        let core = self.core();
        let mut applied = core.applied.clone();
        loop {
            {
                let st = core.state.read();
                if st.data_revision() >= from_rev {
                    match st.locks.locks.get(resource) {
                        Some(l) if l.owner == owner => {
                            return Ok(LockGrant {
                                token: l.token,
                                expires_ms: l.expires_ms,
                            })
                        }
                        Some(l) if l.waiters.iter().any(|w| w.owner == owner) => {}
                        _ => {
                            return Err(ApiError::new(
                                ErrorCode::LockHeld,
                                format!("{resource} was not acquired within the wait"),
                            ))
                        }
                    }
                }
            }
            if applied.changed().await.is_err() {
                return Err(unavailable("this node reset its state while waiting"));
            }
        }
    }

    /// The new end of the lease held with `token` (`ttl_ms` 0: its own ttl again).
    pub(crate) async fn lock_renew(
        self: &Arc<Self>,
        resource: String,
        token: u64,
        ttl_ms: u64,
    ) -> Result<u64, ApiError> {
        let op = LockOp::Renew {
            resource,
            token,
            ttl_ms,
        };
        match self.propose_data(Command::Lock(op), false).await?.outcome {
            Outcome::Renewed { expires_ms } => Ok(expires_ms),
            other => Err(internal(format!("unexpected answer to renew: {other:?}"))),
        }
    }

    /// The release's revision.
    pub(crate) async fn lock_release(
        self: &Arc<Self>,
        resource: String,
        token: u64,
    ) -> Result<u64, ApiError> {
        let op = LockOp::Release { resource, token };
        Ok(self.propose_data(Command::Lock(op), false).await?.revision)
    }
}

/// Armed while an acquirer waits in line; dropped armed (the caller went away), it cancels the
/// wait and releases a lock granted meanwhile.
struct LeaveLine {
    inner: Option<Arc<Data>>,
    resource: String,
    owner: String,
    queued_at: u64,
}

impl Drop for LeaveLine {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        let (resource, owner, queued_at) = (
            std::mem::take(&mut self.resource),
            std::mem::take(&mut self.owner),
            self.queued_at,
        );
        let tracker = inner.clone();
        tracker.spawn(async move {
            let op = LockOp::Abandon {
                resource,
                owner,
                after: queued_at,
            };
            let _ = inner.propose_data(Command::Lock(op), false).await;
        });
    }
}

/// Runs on every node; while it leads, proposes `ExpireLocks` when a lease or a wait runs out.
pub(crate) async fn lock_ticker(inner: Arc<Inner>) {
    let mut shutdown = inner.shutdown.subscribe();
    loop {
        let core = inner.core();
        let mut applied = core.applied.clone();
        // Seen: wake on the next change only (a clone starts at the sender's first value).
        applied.borrow_and_update();
        let next = if inner.is_leader(&core) {
            let st = core.state.read();
            st.locks.next_deadline()
        } else {
            None
        };
        let now = now_ms();
        if let Some(due) = next.filter(|d| *d <= now) {
            if let Err(e) = inner.propose_on(&core, Command::ExpireLocks).await {
                warn!(error = %e, due, "expiring locks");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            continue;
        }
        let sleep = next.map_or(Duration::from_secs(1), |d| {
            Duration::from_millis(d - now).min(Duration::from_secs(1))
        });
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            r = applied.changed() => if r.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            },
            _ = shutdown.changed() => return,
        }
    }
}
