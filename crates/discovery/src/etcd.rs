//! `etcd`: peers registered under `<prefix>/<cluster>/nodes/` in etcd (v3, through its JSON
//! gateway), a registration kept alive by a lease, and bootstrap coordinated by etcd's lock API.
//!
//! The lock takes its own short lease, so a lock whose holder died or timed out disappears with
//! it; `unlock` releases the key and revokes that lease, and runs even when `lock` failed.

use std::sync::Mutex;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use tracing::warn;

use crate::{clean, DiscoveryError, Done, Strategy};

/// Settings of the etcd strategy.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// `http://host:port` client URLs; tried in turn.
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub cluster: String,
    /// This node's address, the value it registers (see [`Strategy::bind`]).
    pub addr: String,
    /// Registration lease TTL; kept alive every third of it.
    pub ttl: Duration,
    /// How long `lock` waits for etcd's lock.
    pub lock_timeout: Duration,
    /// Any other call.
    pub timeout: Duration,
}

/// The etcd strategy. Keeps its registration lease alive from a background task.
pub struct Etcd {
    cfg: EtcdConfig,
    addr: Mutex<String>,
    http: reqwest::Client,
    lease: Mutex<Option<i64>>,
    lock: Mutex<Option<(String, i64)>>,
    keepalive: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

fn failed(message: String) -> DiscoveryError {
    DiscoveryError::Failed {
        strategy: "etcd",
        message,
    }
}

fn b64(s: &str) -> String {
    B64.encode(s)
}

/// The key range end for a prefix: the prefix with its last byte incremented.
fn prefix_end(p: &str) -> Vec<u8> {
    let mut b = p.as_bytes().to_vec();
    while let Some(last) = b.pop() {
        if last < 0xff {
            b.push(last + 1);
            return b;
        }
    }
    vec![0]
}

/// etcd's gateway writes 64-bit integers as strings.
fn int(v: &Value) -> Option<i64> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_i64())
}

impl Etcd {
    pub fn new(cfg: EtcdConfig) -> Result<Etcd, DiscoveryError> {
        if cfg.endpoints.is_empty() {
            return Err(failed("no endpoints (--etcd-endpoints)".into()));
        }
        for e in &cfg.endpoints {
            if !e.starts_with("http://") {
                return Err(failed(format!("endpoint {e:?} is not http://HOST:PORT")));
            }
        }
        if cfg.ttl < Duration::from_secs(2) {
            return Err(failed("the lease TTL must be at least 2s".into()));
        }
        let http = crate::http_client("etcd", cfg.timeout, None)?;
        Ok(Etcd {
            addr: Mutex::new(cfg.addr.clone()),
            cfg,
            http,
            lease: Mutex::default(),
            lock: Mutex::default(),
            keepalive: Mutex::default(),
        })
    }

    fn dir(&self) -> String {
        format!("{}/{}/", self.cfg.prefix, self.cfg.cluster)
    }

    fn addr(&self) -> String {
        self.addr.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn node_key(&self) -> String {
        format!("{}nodes/{}", self.dir(), self.addr())
    }

    /// POSTs to the first endpoint that answers; an etcd error in the body is an error.
    async fn call(
        &self,
        path: &str,
        body: Value,
        timeout: Duration,
    ) -> Result<Value, DiscoveryError> {
        let mut last = String::new();
        for ep in &self.cfg.endpoints {
            let req = self
                .http
                .post(format!("{ep}{path}"))
                .timeout(timeout)
                .json(&body)
                .send();
            match req.await {
                Err(e) if e.is_timeout() => {
                    return Err(DiscoveryError::Timeout {
                        strategy: "etcd",
                        timeout,
                    })
                }
                Err(e) => last = format!("{ep}: {e}"),
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp
                        .text()
                        .await
                        .map_err(|e| failed(format!("{ep}{path}: {e}")))?;
                    // A stream answer (keepalive) is one JSON object per line: the first counts.
                    let first = text.lines().next().unwrap_or_default();
                    let v: Value =
                        serde_json::from_str(first).map_err(|e| DiscoveryError::BadAnswer {
                            strategy: "etcd",
                            answer: first.chars().take(200).collect(),
                            message: e.to_string(),
                        })?;
                    let err = v
                        .get("error")
                        .or_else(|| v.get("result").and_then(|r| r.get("error")));
                    if !status.is_success() || err.is_some() {
                        return Err(failed(format!("{path}: {status}: {}", err.unwrap_or(&v))));
                    }
                    return Ok(v.get("result").cloned().unwrap_or(v));
                }
            }
        }
        Err(failed(format!("no endpoint answers ({last})")))
    }

    async fn grant(&self, ttl: Duration) -> Result<i64, DiscoveryError> {
        let v = self
            .call(
                "/v3/lease/grant",
                json!({"TTL": ttl.as_secs().max(1)}),
                self.cfg.timeout,
            )
            .await?;
        int(&v["ID"]).ok_or_else(|| DiscoveryError::BadAnswer {
            strategy: "etcd",
            answer: v.to_string(),
            message: "no lease ID".into(),
        })
    }

    async fn revoke(&self, id: i64) -> Result<(), DiscoveryError> {
        self.call(
            "/v3/lease/revoke",
            json!({"ID": id.to_string()}),
            self.cfg.timeout,
        )
        .await
        .map(|_| ())
    }

    /// Keeps `lease` alive every third of the TTL until the task is aborted.
    fn spawn_keepalive(&self, lease: i64) -> tokio::task::JoinHandle<()> {
        let http = self.http.clone();
        let endpoints = self.cfg.endpoints.clone();
        let every = self.cfg.ttl / 3;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let mut ok = false;
                for ep in &endpoints {
                    let r = http
                        .post(format!("{ep}/v3/lease/keepalive"))
                        .json(&json!({"ID": lease.to_string()}))
                        .send()
                        .await;
                    if r.is_ok_and(|r| r.status().is_success()) {
                        ok = true;
                        break;
                    }
                }
                if !ok {
                    warn!(lease, "etcd lease keepalive failed; will retry");
                }
            }
        })
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(h) = self
            .keepalive
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            h.abort();
        }
    }
}

#[async_trait::async_trait]
impl Strategy for Etcd {
    fn name(&self) -> &'static str {
        "etcd"
    }

    fn bind(&self, addr: &str) {
        *self.addr.lock().unwrap_or_else(|e| e.into_inner()) = addr.to_string();
    }

    async fn discover(&self) -> Result<Vec<String>, DiscoveryError> {
        let dir = format!("{}nodes/", self.dir());
        let body = json!({"key": b64(&dir), "range_end": B64.encode(prefix_end(&dir))});
        let v = self.call("/v3/kv/range", body, self.cfg.timeout).await?;
        let mut out = Vec::new();
        for kv in v["kvs"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let raw = kv["value"].as_str().unwrap_or_default();
            let bytes = B64.decode(raw).map_err(|e| DiscoveryError::BadAnswer {
                strategy: "etcd",
                answer: raw.into(),
                message: e.to_string(),
            })?;
            out.push(String::from_utf8_lossy(&bytes).into_owned());
        }
        clean("etcd", out)
    }

    async fn lock(&self) -> Result<Done, DiscoveryError> {
        let lease = self
            .grant(self.cfg.lock_timeout + Duration::from_secs(5))
            .await?;
        // Recorded before waiting, so unlock revokes it whatever happens next.
        *self.lock.lock().unwrap_or_else(|e| e.into_inner()) = Some((String::new(), lease));
        let name = format!("{}lock", self.dir());
        let body = json!({"name": b64(&name), "lease": lease.to_string()});
        let v = self
            .call("/v3/lock/lock", body, self.cfg.lock_timeout)
            .await?;
        let key = v["key"].as_str().unwrap_or_default().to_string();
        *self.lock.lock().unwrap_or_else(|e| e.into_inner()) = Some((key, lease));
        Ok(Done::Ok)
    }

    async fn unlock(&self) -> Result<Done, DiscoveryError> {
        let held = self.lock.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some((key, lease)) = held else {
            return Ok(Done::Ignore);
        };
        let mut result = Ok(Done::Ok);
        if !key.is_empty() {
            if let Err(e) = self
                .call("/v3/lock/unlock", json!({"key": key}), self.cfg.timeout)
                .await
            {
                result = Err(e);
            }
        }
        // Revoking the lease also drops a lock key whose unlock failed.
        if let Err(e) = self.revoke(lease).await {
            result = Err(e);
        }
        result
    }

    async fn register(&self) -> Result<Done, DiscoveryError> {
        let current = *self.lease.lock().unwrap_or_else(|e| e.into_inner());
        let lease = match current {
            Some(l) => l,
            None => {
                let l = self.grant(self.cfg.ttl).await?;
                *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = Some(l);
                let h = self.spawn_keepalive(l);
                if let Some(old) = self
                    .keepalive
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .replace(h)
                {
                    old.abort();
                }
                l
            }
        };
        let body = json!({
            "key": b64(&self.node_key()),
            "value": b64(&self.addr()),
            "lease": lease.to_string(),
        });
        match self.call("/v3/kv/put", body, self.cfg.timeout).await {
            Ok(_) => Ok(Done::Ok),
            Err(e) => {
                // The lease may have expired (etcd was down): take a new one next time.
                *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = None;
                Err(e)
            }
        }
    }

    async fn unregister(&self) -> Result<Done, DiscoveryError> {
        if let Some(h) = self
            .keepalive
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            h.abort();
        }
        let lease = self.lease.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.call(
            "/v3/kv/deleterange",
            json!({"key": b64(&self.node_key())}),
            self.cfg.timeout,
        )
        .await?;
        if let Some(l) = lease {
            self.revoke(l).await?;
        }
        Ok(Done::Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end("ekka/x/"), b"ekka/x0".to_vec());
    }

    #[test]
    fn bad_settings_are_refused() {
        let cfg = EtcdConfig {
            endpoints: vec![],
            prefix: "ekka".into(),
            cluster: "c".into(),
            addr: "127.0.0.1:1".into(),
            ttl: Duration::from_secs(10),
            lock_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
        };
        assert!(Etcd::new(cfg.clone()).is_err());
        let mut c = cfg.clone();
        c.endpoints = vec!["127.0.0.1:2379".into()];
        assert!(Etcd::new(c).is_err());
        let mut c = cfg;
        c.endpoints = vec!["http://127.0.0.1:2379".into()];
        c.ttl = Duration::from_secs(1);
        assert!(Etcd::new(c).is_err());
    }
}
