//! The data API of `Node`: lease locks (and the guard that keeps one), the key-value space and
//! the autoclean setting, each a call into the data module.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ekka_types::{millis as ms, ApiError, ErrorCode, KvEntry, KvEvent, KvRange, LockGrant};
use tokio::sync::mpsc;
use tracing::warn;

use crate::data::{LocalLocks, Read};

use super::Node;
use crate::timings::*;

/// A lock held by this process through [`Node::lock`]: renewed in the background until dropped
/// or released. Dropping it releases the lock (best effort; the lease ends it otherwise).
pub struct LockGuard {
    resource: String,
    grant: LockGrant,
    lost: Arc<AtomicBool>,
    stop: Option<tokio::sync::oneshot::Sender<bool>>,
}

impl LockGuard {
    /// The fencing token: pass it to whatever the lock protects.
    pub fn token(&self) -> u64 {
        self.grant.token
    }

    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// Whether a renewal found the lock no longer held (the lease ran out, e.g. while cut off).
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Stops renewing and releases the lock now.
    pub async fn release(mut self, node: &Node) -> Result<(), ApiError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(false);
        }
        node.lock_release(&self.resource, self.grant.token).await?;
        Ok(())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
    }
}

impl Node {
    /// Sets the cluster's autoclean delay, for every present and future leader (zero: off).
    pub async fn set_autoclean(&self, delay: Duration) -> Result<(), ApiError> {
        self.data.set_autoclean_ms(ms(delay)).await.map(|_| ())
    }

    /// Takes the lease lock `resource` for `owner` for `ttl`, waiting in line up to `wait` while
    /// another owner holds it (`lock_held` when the wait runs out). The same owner acquiring
    /// again gets the same token and a renewed lease.
    pub async fn lock_acquire(
        &self,
        resource: &str,
        owner: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<LockGrant, ApiError> {
        self.data
            .lock_acquire(resource, owner, ms(ttl), ms(wait))
            .await
    }

    /// Extends the lease held with `token` (by its own ttl when `ttl` is `None`); returns the new
    /// end of the lease. `lock_not_held` when the token no longer holds it.
    pub async fn lock_renew(
        &self,
        resource: &str,
        token: u64,
        ttl: Option<Duration>,
    ) -> Result<u64, ApiError> {
        self.data
            .lock_renew(resource.into(), token, ttl.map_or(0, ms))
            .await
    }

    /// Releases the lock held with `token`; the next in line gets it. Returns the release's
    /// revision; `lock_not_held` when the token does not hold it.
    pub async fn lock_release(&self, resource: &str, token: u64) -> Result<u64, ApiError> {
        self.data.lock_release(resource.into(), token).await
    }

    /// Takes `resource` for this process and keeps it: renewed every third of `ttl` until the
    /// guard is dropped or released.
    pub async fn lock(
        &self,
        resource: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<LockGuard, ApiError> {
        let owner = format!("{}-{:016x}", self.name(), rand::random::<u64>());
        let grant = self.lock_acquire(resource, &owner, ttl, wait).await?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<bool>();
        let lost = Arc::new(AtomicBool::new(false));
        let node = self.clone();
        let res = resource.to_string();
        let lost2 = lost.clone();
        let mut shutdown = self.inner.shutdown.subscribe();
        self.inner.spawn(async move {
            let period = (ttl / 3).max(RENEW_MIN_PERIOD);
            loop {
                tokio::select! {
                    r = &mut stopped => {
                        if r.unwrap_or(true) {
                            let _ = node.lock_release(&res, grant.token).await;
                        }
                        return;
                    }
                    // The node stops: the lease runs out on its own.
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(period) => {}
                }
                match node.lock_renew(&res, grant.token, None).await {
                    Ok(_) => {}
                    Err(e) if e.code == ErrorCode::LockNotHeld => {
                        lost2.store(true, Ordering::SeqCst);
                        return;
                    }
                    Err(e) => warn!(resource = %res, error = %e, "lock renewal failed; retrying"),
                }
            }
        });
        Ok(LockGuard {
            resource: resource.to_string(),
            grant,
            lost,
            stop: Some(stop),
        })
    }

    /// Writes `value` under `key`; returns the write's revision.
    pub async fn kv_put(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<u64, ApiError> {
        let done = self.data.kv_put(key.into(), value.into()).await?;
        Ok(done.revision)
    }

    /// Deletes `key`; returns the revision of the delete, or `None` when there was no such key.
    pub async fn kv_delete(&self, key: &str) -> Result<Option<u64>, ApiError> {
        let (revision, existed) = self.data.kv_delete(key.into()).await?;
        Ok(existed.then_some(revision))
    }

    /// Writes `value` (deletes when `None`) only if `key` is at `expect` (its `mod_revision`; 0:
    /// absent). `compare_failed` otherwise. Returns the write's revision.
    pub async fn kv_cas(
        &self,
        key: &str,
        expect: u64,
        value: Option<Vec<u8>>,
    ) -> Result<u64, ApiError> {
        self.data.kv_cas(key.into(), expect, value).await
    }

    /// The value of `key`, if any.
    pub async fn kv_get(&self, key: &str, read: Read) -> Result<Option<KvEntry>, ApiError> {
        let r = self.data.kv_range(key.into(), false, 1, read).await?;
        Ok(r.entries.into_iter().next().map(|(_, e)| e))
    }

    /// The keys under `prefix`, in order, at most `limit` (0: up to `MAX_RANGE_KEYS`).
    pub async fn kv_range(
        &self,
        prefix: &str,
        limit: u32,
        read: Read,
    ) -> Result<KvRange, ApiError> {
        self.data.kv_range(prefix.into(), true, limit, read).await
    }

    /// Key-value changes under `prefix` as this node applies them, from revision `from` on
    /// (inclusive), or only new ones when `None`. Resume with the last revision seen + 1 after a
    /// reconnect or a restart: nothing is missed or repeated. `compacted` when `from` is older
    /// than the retained changes.
    pub async fn kv_watch(
        &self,
        prefix: &str,
        from: Option<u64>,
    ) -> Result<mpsc::Receiver<Result<KvEvent, ApiError>>, ApiError> {
        self.data.kv_watch(prefix.to_string(), from)
    }

    /// This process's `local` lock scope (ekka's `local` lock type).
    pub fn local_locks(&self) -> LocalLocks {
        self.data.local_locks.clone()
    }
}
