//! Closed-loop load, the same for ekka and etcd: N clients, each on its own key or lock, each
//! issuing its next operation as soon as the last one answered, for a fixed time.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ekka_client::Client;
use tonic::transport::{Channel, Endpoint};

use crate::ms;

/// Generated etcd v3 client (just the RPCs driven here).
#[allow(clippy::all, missing_docs)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}
#[allow(clippy::all, missing_docs)]
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

/// What one run measured.
pub struct LoadResult {
    pub ops: usize,
    pub errors: usize,
    pub secs: f64,
    /// Latencies of the successful operations, ms.
    pub lat: Vec<f64>,
    /// CPU time the servers used over the measured time, seconds.
    pub server_cpu: f64,
    /// CPU time this process (the clients) used meanwhile, seconds.
    pub client_cpu: f64,
}

impl LoadResult {
    pub fn per_sec(&self) -> f64 {
        self.ops as f64 / self.secs
    }

    /// Server CPU per operation, microseconds: the cost of one operation to the whole cluster.
    pub fn cpu_us_per_op(&self) -> f64 {
        self.server_cpu * 1e6 / self.ops.max(1) as f64
    }

    /// The clients' (this process's) CPU per operation, microseconds.
    pub fn client_cpu_us_per_op(&self) -> f64 {
        self.client_cpu * 1e6 / self.ops.max(1) as f64
    }
}

/// Runs `clients` loops of `op(client index)` for `secs` after a warm-up of a tenth of it, and
/// the CPU time the `servers` (pids) used meanwhile.
pub async fn run<F, Fut>(clients: usize, secs: f64, servers: &[u32], op: F) -> LoadResult
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    let op = Arc::new(op);
    let warm = Duration::from_secs_f64(secs / 10.0);
    let total = warm + Duration::from_secs_f64(secs);
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..clients {
        let op = op.clone();
        tasks.spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0usize);
            while t0.elapsed() < total {
                let start = Instant::now();
                let ok = op(i).await.is_ok();
                if start >= t0 + warm {
                    if ok {
                        lat.push(ms(start.elapsed()));
                    } else {
                        errors += 1;
                    }
                }
            }
            (lat, errors)
        });
    }
    let cpu = || {
        servers
            .iter()
            .map(|&p| crate::proc::cpu_secs(p))
            .sum::<f64>()
    };
    let me = std::process::id();
    tokio::time::sleep_until((t0 + warm).into()).await;
    let (cpu0, mine0) = (cpu(), crate::proc::cpu_secs(me));
    tokio::time::sleep_until((t0 + total).into()).await;
    let mut r = LoadResult {
        ops: 0,
        errors: 0,
        secs,
        lat: Vec::new(),
        server_cpu: cpu() - cpu0,
        client_cpu: crate::proc::cpu_secs(me) - mine0,
    };
    while let Some(Ok((lat, errors))) = tasks.join_next().await {
        r.ops += lat.len();
        r.errors += errors;
        r.lat.extend(lat);
    }
    r
}

/// An etcd client on one endpoint: KV, Lease and Lock over native gRPC.
#[derive(Clone)]
pub struct EtcdGrpc {
    ch: Channel,
}

impl EtcdGrpc {
    pub async fn connect(endpoint: &str) -> Result<EtcdGrpc> {
        let ch = Endpoint::from_shared(format!("http://{endpoint}"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connecting to etcd at {endpoint}"))?;
        Ok(EtcdGrpc { ch })
    }

    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut c = etcdserverpb::kv_client::KvClient::new(self.ch.clone());
        c.put(etcdserverpb::PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ..Default::default()
        })
        .await?;
        Ok(())
    }

    pub async fn lease_grant(&self, ttl_s: i64) -> Result<i64> {
        let mut c = etcdserverpb::lease_client::LeaseClient::new(self.ch.clone());
        let r = c
            .lease_grant(etcdserverpb::LeaseGrantRequest { ttl: ttl_s, id: 0 })
            .await?;
        Ok(r.into_inner().id)
    }

    /// etcd's lock: blocks until held; returns the lock key (the ownership proof).
    pub async fn lock(&self, name: &[u8], lease: i64) -> Result<Vec<u8>> {
        let mut c = v3lockpb::lock_client::LockClient::new(self.ch.clone());
        let r = c
            .lock(v3lockpb::LockRequest {
                name: name.to_vec(),
                lease,
            })
            .await?;
        Ok(r.into_inner().key)
    }

    pub async fn unlock(&self, key: Vec<u8>) -> Result<()> {
        let mut c = v3lockpb::lock_client::LockClient::new(self.ch.clone());
        c.unlock(v3lockpb::UnlockRequest { key }).await?;
        Ok(())
    }
}

/// The four workloads, for one system.
/// Each with the pids of its servers, whose CPU time is reported.
pub enum Target {
    Ekka(Vec<Client>, Vec<u32>),
    Etcd(Vec<(EtcdGrpc, i64)>, Vec<u32>),
}

const VALUE: [u8; 256] = [b'v'; 256];

fn key(i: usize) -> String {
    format!("k{i:07}")
}

impl Target {
    /// One lock acquire + release per operation, each client on its own lock.
    pub async fn locks(&self, clients: usize, secs: f64) -> LoadResult {
        match self {
            Target::Ekka(cs, pids) => {
                let cs = cs.clone();
                run(clients, secs, pids, move |i| {
                    let c = cs[i % cs.len()].clone();
                    async move {
                        let res = format!("lock-{i}");
                        let g = c
                            .lock_acquire(&res, &key(i), Duration::from_secs(10), Duration::ZERO)
                            .await?;
                        c.lock_release(&res, g.token).await?;
                        Ok(())
                    }
                })
                .await
            }
            Target::Etcd(cs, pids) => {
                let cs = cs.clone();
                run(clients, secs, pids, move |i| {
                    let (c, lease) = cs[i % cs.len()].clone();
                    async move {
                        let k = c.lock(format!("lock-{i}").as_bytes(), lease).await?;
                        c.unlock(k).await
                    }
                })
                .await
            }
        }
    }

    /// One lock acquire per operation (its latency), released untimed before the next.
    pub async fn acquire_latency(&self, secs: f64) -> Result<Vec<f64>> {
        let t0 = Instant::now();
        let mut lat = Vec::new();
        while t0.elapsed().as_secs_f64() < secs {
            let start = Instant::now();
            match self {
                Target::Ekka(cs, _) => {
                    let g = cs[0]
                        .lock_acquire("solo", "solo", Duration::from_secs(10), Duration::ZERO)
                        .await?;
                    lat.push(ms(start.elapsed()));
                    cs[0].lock_release("solo", g.token).await?;
                }
                Target::Etcd(cs, _) => {
                    let (c, lease) = &cs[0];
                    let k = c.lock(b"solo", *lease).await?;
                    lat.push(ms(start.elapsed()));
                    c.unlock(k).await?;
                }
            }
        }
        Ok(lat)
    }

    /// One put of an 8-byte key and a 256-byte value per operation, each client on its own key.
    pub async fn puts(&self, clients: usize, secs: f64) -> LoadResult {
        match self {
            Target::Ekka(cs, pids) => {
                let cs = cs.clone();
                run(clients, secs, pids, move |i| {
                    let c = cs[i % cs.len()].clone();
                    async move {
                        c.kv_put(&key(i), VALUE.to_vec()).await?;
                        Ok(())
                    }
                })
                .await
            }
            Target::Etcd(cs, pids) => {
                let cs = cs.clone();
                run(clients, secs, pids, move |i| {
                    let (c, _) = cs[i % cs.len()].clone();
                    async move { c.put(key(i).as_bytes(), &VALUE).await }
                })
                .await
            }
        }
    }
}
