//! `--only bigvalues`: memory, disk and put latency with 64 KiB values on a 3-node cluster.
//!
//! 1. One client overwrites one 64 KiB key 2,500 times (the state stays at one key): peak and
//!    final RSS of the agents, peak and final `du` of their data dirs.
//! 2. `--clients` (default 32) clients overwrite their own 64 KiB key for `--secs` seconds: RSS,
//!    disk, and put latency of the puts that overlapped a snapshot build on any agent against
//!    the others (builds are seen in openraft's own log lines, so an older binary shows them too).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ekka_client::{Client, Outcome};

use crate::proc::{du_bytes, status_kib, Agent, COOKIE};

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}
use crate::{ms, pct, wait_for};

const VALUE_BYTES: usize = 64 * 1024;
const OVERWRITES: usize = 2_500;

/// Peak RSS (KiB) and disk (bytes) per agent, sampled in the background.
#[derive(Default)]
struct Peaks {
    rss_kib: Vec<u64>,
    disk: Vec<u64>,
}

fn sampler(pids: Vec<u32>, dirs: Vec<PathBuf>) -> (Arc<Mutex<Peaks>>, Arc<AtomicBool>) {
    let peaks = Arc::new(Mutex::new(Peaks {
        rss_kib: vec![0; pids.len()],
        disk: vec![0; dirs.len()],
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let (p, s) = (peaks.clone(), stop.clone());
    tokio::spawn(async move {
        let mut tick = 0u64;
        while !s.load(Ordering::Relaxed) {
            {
                let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
                for (i, pid) in pids.iter().enumerate() {
                    p.rss_kib[i] = p.rss_kib[i].max(rss_kib(*pid));
                }
                if tick.is_multiple_of(5) {
                    for (i, d) in dirs.iter().enumerate() {
                        p.disk[i] = p.disk[i].max(du_bytes(d));
                    }
                }
            }
            tick += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    (peaks, stop)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn value(seed: u64) -> Vec<u8> {
    let mut v = vec![b'x'; VALUE_BYTES];
    v[..8].copy_from_slice(&seed.to_be_bytes());
    v
}

fn print_resources(what: &str, agents: &[Agent], peaks: &Peaks) {
    let rss_now: Vec<u64> = agents.iter().map(|a| rss_kib(a.pid())).collect();
    let disk_now: Vec<u64> = agents.iter().map(|a| du_bytes(a.data_dir())).collect();
    let max_mib = |v: &[u64], kib: bool| {
        v.iter()
            .map(|&x| if kib { x as f64 / 1024.0 } else { mib(x) })
            .fold(0.0, f64::max)
    };
    println!(
        "{what}: RSS per agent peak {:.0} MiB, now {:.0} MiB; data dir peak {:.0} MiB, now {:.0} MiB (largest of 3 agents)",
        max_mib(&peaks.rss_kib, true),
        max_mib(&rss_now, true),
        max_mib(&peaks.disk, false),
        max_mib(&disk_now, false),
    );
}

pub async fn bench(secs: f64, clients: usize) -> Result<()> {
    let d = tempfile::tempdir()?;
    let mut agents = Vec::new();
    for i in 1..=3 {
        agents.push(Agent::start_watching_snapshots(d.path(), &format!("n{i}")).await?);
    }
    let seed = agents[0].addr.clone();
    for a in &agents[1..] {
        match Client::new(&a.addr, COOKIE)?.join(&seed).await? {
            Outcome::Done(_) => {}
            Outcome::Ignored(w) => bail!("join ignored: {w}"),
        }
    }
    let c = Client::new(&seed, COOKIE)?;
    wait_for(Duration::from_secs(30), || async {
        c.status().await.is_ok_and(|s| {
            s.members.len() == 3 && s.members.iter().all(|m| m.status == ekka_types::Status::Up)
        })
    })
    .await?;
    let leader = c.status().await?.leader.context("no leader")?;
    let laddr = agents
        .iter()
        .find(|a| a.name == leader)
        .context("leader agent")?
        .addr
        .clone();
    let pids: Vec<u32> = agents.iter().map(Agent::pid).collect();
    let dirs: Vec<PathBuf> = agents.iter().map(|a| a.data_dir().to_path_buf()).collect();
    println!("bigvalues: 3 nodes, {VALUE_BYTES}-byte values, clients on the leader");

    // 1. One key, overwritten.
    let (peaks, stop) = sampler(pids.clone(), dirs.clone());
    let client = Client::new(&laddr, COOKIE)?;
    let t0 = Instant::now();
    let mut errors = 0;
    for i in 0..OVERWRITES {
        if client.kv_put("big", value(i as u64)).await.is_err() {
            errors += 1;
        }
    }
    let took = t0.elapsed();
    // Let the followers catch up and any snapshot in progress end.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    println!(
        "one key overwritten {OVERWRITES} times: {:.1} s, {errors} errors, {} snapshot builds",
        took.as_secs_f64(),
        builds(&agents).len()
    );
    print_resources(
        "  after one-key overwrites",
        &agents,
        &peaks.lock().unwrap_or_else(|e| e.into_inner()),
    );

    // 2. Many clients, one key each.
    let (peaks, stop) = sampler(pids, dirs);
    let conns: Vec<Client> = (0..4)
        .map(|_| Client::new(&laddr, COOKIE))
        .collect::<Result<_, _>>()?;
    let t0 = Instant::now();
    let total = Duration::from_secs_f64(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..clients {
        let c = conns[i % conns.len()].clone();
        tasks.spawn(async move {
            let (mut ops, mut errors) = (Vec::new(), 0usize);
            let mut first_error = None;
            let mut n = 0u64;
            while t0.elapsed() < total {
                let start = Instant::now();
                n += 1;
                match c.kv_put(&format!("big-{i:02}"), value(n)).await {
                    Ok(_) => ops.push((start, Instant::now())),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e.to_string());
                    }
                }
            }
            (ops, errors, first_error)
        });
    }
    let (mut ops, mut errors, mut first_error) = (Vec::new(), 0, None);
    while let Some(r) = tasks.join_next().await {
        let (o, e, f) = r?;
        ops.extend(o);
        errors += e;
        first_error = first_error.or(f);
    }
    if let Some(e) = &first_error {
        println!("  first error: {e}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let windows: Vec<(Instant, Instant)> = builds(&agents)
        .into_iter()
        .filter(|(_, e)| *e >= t0)
        .collect();
    let (mut during, mut normal) = (Vec::new(), Vec::new());
    for (s, e) in &ops {
        let lat = ms(*e - *s);
        if windows.iter().any(|(ws, we)| s <= we && e >= ws) {
            during.push(lat);
        } else {
            normal.push(lat);
        }
    }
    println!(
        "{clients} clients, {secs} s: {:.0} puts/s, {errors} errors, {} snapshot builds (longest {:.0} ms)",
        ops.len() as f64 / secs,
        windows.len(),
        windows
            .iter()
            .map(|(s, e)| ms(*e - *s))
            .fold(0.0, f64::max)
    );
    let show = |what: &str, v: &[f64]| {
        println!(
            "  put latency {what:<16} n={:<6} p50 {:>8.1} ms  p99 {:>8.1} ms  max {:>8.1} ms",
            v.len(),
            pct(v, 0.5),
            pct(v, 0.99),
            pct(v, 1.0)
        )
    };
    show("normal", &normal);
    show("during snapshot", &during);
    if !during.is_empty() && !normal.is_empty() {
        println!(
            "  ratio p99 during snapshot / normal: {:.2}",
            pct(&during, 0.99) / pct(&normal, 0.99)
        );
    }
    print_resources(
        &format!("  after {clients} clients"),
        &agents,
        &peaks.lock().unwrap_or_else(|e| e.into_inner()),
    );
    Ok(())
}

/// Snapshot builds seen so far on any agent, as (start, end); a build still running ends now.
fn builds(agents: &[Agent]) -> Vec<(Instant, Instant)> {
    let mut out = Vec::new();
    for a in agents {
        let seen = a.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        let mut start = None;
        for &(t, is_start) in seen.iter() {
            match (is_start, start) {
                (true, _) => start = Some(t),
                (false, Some(s)) => {
                    out.push((s, t));
                    start = None;
                }
                (false, None) => {}
            }
        }
        if let Some(s) = start {
            out.push((s, Instant::now()));
        }
    }
    out.sort();
    out
}
