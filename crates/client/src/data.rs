//! Locks and the key-value space over the `Cluster` service.

use std::time::Duration;

use ekka_proto::pb;
use ekka_types::{millis as ms, ApiError, ErrorCode, KvEntry, KvEvent};
pub use ekka_types::{KvRange, LockGrant};

use crate::{Client, OP_TIMEOUT, STATUS_TIMEOUT};

/// A lock as one agent sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockStatus {
    pub revision: u64,
    /// Owner, token and end of lease of the holder, if any.
    pub holder: Option<(String, u64, u64)>,
    /// Owners in line, first first.
    pub waiters: Vec<String>,
}

fn entry(e: pb::KvEntry) -> (String, KvEntry) {
    (
        e.key,
        KvEntry {
            value: e.value.into(),
            create_revision: e.create_revision,
            mod_revision: e.mod_revision,
            version: e.version,
        },
    )
}

impl Client {
    /// Takes lock `resource` for `owner` for `ttl`, waiting in line up to `wait`.
    pub async fn lock_acquire(
        &self,
        resource: &str,
        owner: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<LockGrant, ApiError> {
        let mut c = self.inner.clone();
        let req = pb::LockAcquireRequest {
            resource: resource.into(),
            owner: owner.into(),
            ttl_ms: ms(ttl),
            wait_ms: ms(wait),
        };
        let r = self
            .call_write(OP_TIMEOUT + wait, c.lock_acquire(req))
            .await?;
        Ok(LockGrant {
            token: r.token,
            expires_ms: r.expires_ms,
        })
    }

    /// Extends the lease held with `token` (by its own ttl when `None`); the new end of the lease.
    pub async fn lock_renew(
        &self,
        resource: &str,
        token: u64,
        ttl: Option<Duration>,
    ) -> Result<u64, ApiError> {
        let mut c = self.inner.clone();
        let req = pb::LockRenewRequest {
            resource: resource.into(),
            token,
            ttl_ms: ttl.map_or(0, ms),
        };
        Ok(self
            .call_write(OP_TIMEOUT, c.lock_renew(req))
            .await?
            .expires_ms)
    }

    /// Releases the lock held with `token`; returns the release's revision.
    pub async fn lock_release(&self, resource: &str, token: u64) -> Result<u64, ApiError> {
        let mut c = self.inner.clone();
        let req = pb::LockReleaseRequest {
            resource: resource.into(),
            token,
        };
        Ok(self
            .call_write(OP_TIMEOUT, c.lock_release(req))
            .await?
            .revision)
    }

    /// Who holds `resource` and who waits for it, as the addressed agent's state has it.
    pub async fn lock_status(&self, resource: &str) -> Result<LockStatus, ApiError> {
        let mut c = self.inner.clone();
        let req = pb::LockStatusRequest {
            resource: resource.into(),
        };
        let r = self.call(STATUS_TIMEOUT, c.lock_status(req)).await?;
        Ok(LockStatus {
            revision: r.revision,
            holder: (!r.owner.is_empty()).then_some((r.owner, r.token, r.expires_ms)),
            waiters: r.waiters,
        })
    }

    /// Writes `value` under `key`; returns the write's revision.
    pub async fn kv_put(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<u64, ApiError> {
        let mut c = self.inner.clone();
        let req = pb::KvPutRequest {
            key: key.into(),
            value: value.into(),
        };
        Ok(self.call_write(OP_TIMEOUT, c.kv_put(req)).await?.revision)
    }

    /// Deletes `key`; the delete's revision, or `None` when there was no such key.
    pub async fn kv_delete(&self, key: &str) -> Result<Option<u64>, ApiError> {
        let mut c = self.inner.clone();
        let req = pb::KvDeleteRequest { key: key.into() };
        let r = self.call_write(OP_TIMEOUT, c.kv_delete(req)).await?;
        Ok(r.existed.then_some(r.revision))
    }

    /// Writes `value` (deletes when `None`) only if `key` is at revision `expect` (0: absent).
    pub async fn kv_cas(
        &self,
        key: &str,
        expect: u64,
        value: Option<Vec<u8>>,
    ) -> Result<u64, ApiError> {
        let mut c = self.inner.clone();
        let req = pb::KvCasRequest {
            key: key.into(),
            expect_revision: expect,
            value,
        };
        Ok(self.call_write(OP_TIMEOUT, c.kv_cas(req)).await?.revision)
    }

    /// The value of `key` (`key_not_found` when there is none). `stale` reads the agent's own
    /// state instead of checking with the leader.
    pub async fn kv_get(&self, key: &str, stale: bool) -> Result<KvEntry, ApiError> {
        let r = self.range(key, false, 1, stale).await?;
        r.entries
            .into_iter()
            .next()
            .map(|(_, e)| e)
            .ok_or_else(|| ApiError::new(ErrorCode::KeyNotFound, format!("no key {key}")))
    }

    /// Keys under `prefix`, in order, at most `limit` (0: the server's maximum).
    pub async fn kv_range(
        &self,
        prefix: &str,
        limit: u32,
        stale: bool,
    ) -> Result<KvRange, ApiError> {
        self.range(prefix, true, limit, stale).await
    }

    async fn range(
        &self,
        key: &str,
        prefix: bool,
        limit: u32,
        stale: bool,
    ) -> Result<KvRange, ApiError> {
        let mut c = self.inner.clone();
        let req = pb::KvRangeRequest {
            key: key.into(),
            prefix,
            limit,
            stale,
        };
        let r = self.call(OP_TIMEOUT, c.kv_range(req)).await?;
        Ok(KvRange {
            revision: r.revision,
            entries: r.entries.into_iter().map(entry).collect(),
            more: r.more,
        })
    }

    /// Key-value changes under `prefix` from revision `from` on (inclusive), or only new ones.
    pub async fn kv_watch(&self, prefix: &str, from: Option<u64>) -> Result<KvWatcher, ApiError> {
        let mut c = self.inner.clone();
        let req = pb::KvWatchRequest {
            prefix: prefix.into(),
            from_revision: from,
        };
        let inner = self.call(STATUS_TIMEOUT, c.kv_watch(req)).await?;
        Ok(KvWatcher { inner })
    }
}

/// A stream of key-value changes from [`Client::kv_watch`].
pub struct KvWatcher {
    inner: tonic::Streaming<pb::KvEvent>,
}

impl KvWatcher {
    /// The next change; `None` when the agent ended the stream, an error when it failed.
    pub async fn next(&mut self) -> Option<Result<KvEvent, ApiError>> {
        match self.inner.message().await {
            Ok(None) => None,
            Ok(Some(e)) => Some(Ok(KvEvent {
                revision: e.revision,
                key: e.key,
                value: e.value.map(Into::into),
            })),
            Err(st) => Some(Err(ekka_proto::error_from_status(&st))),
        }
    }
}
