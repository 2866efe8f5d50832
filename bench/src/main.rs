//! `ekka-bench`: measures a release `ekka` binary on this machine and runs etcd (Debian
//! `etcd-server`) side by side where there is a peer figure, printing each figure and the ratio;
//! `--out` writes the run as Markdown and a JSON summary, `--compare` sets it against an earlier
//! summary. Not a test: nothing here asserts a timing. `ekka-bench --help` lists the options.

mod bigvalues;
mod etcd;
mod load;
mod proc;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use ekka_client::{Client, Outcome};
use ekka_types::Status;

use crate::proc::{Agent, COOKIE};
use crate::report::{Better, Report};

/// Measures a release `ekka` binary, and etcd beside it where there is a peer figure.
///
/// One invocation without `--only` runs every figure. The ekka binary is `$EKKA_BIN`, else
/// `target/release/ekka` of this workspace; etcd is `$ETCD_BIN`, else `etcd` on the PATH, and
/// its rows are skipped (ratios absent) when it cannot be run.
///
/// Exit status: 0 when every figure group ran; 1 when one failed (the others still ran and the
/// report is still written); 2 on a usage error; 3 when `--fail-on-regression` is given and
/// `--compare` found a regression.
#[derive(Parser, Debug)]
#[command(name = "ekka-bench", version)]
struct Args {
    /// Trials per timed figure (`ekka up`, autocluster and etcd's formation take at most 10).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    trials: u32,

    /// Run only these figure groups (comma-separated); every group when absent.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Group>,

    /// Seconds per data-load case (after a warm-up of a tenth of it).
    #[arg(long, default_value_t = 5.0)]
    secs: f64,

    /// Client counts of the data load, comma-separated, each from 1 to 64.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64",
          value_parser = clap::value_parser!(u16).range(1..=64))]
    clients: Vec<u16>,

    /// Agents in the large idle cluster of the `rss` group (beside the 3-node one); 0 skips it.
    #[arg(long, default_value_t = 50)]
    rss_nodes: usize,

    /// Clients of the `bigvalues` group.
    #[arg(long, default_value_t = 32)]
    big_clients: usize,

    /// Seconds of the `bigvalues` group.
    #[arg(long, default_value_t = 30.0)]
    big_secs: f64,

    /// Write the report to OUT.md and the summary to OUT.json, e.g.
    /// `bench/results/2026-12-02-quiet` (directories are created).
    #[arg(long, value_name = "OUT")]
    out: Option<PathBuf>,

    /// An earlier summary (.json) to compare with: each figure's change, regressions flagged.
    #[arg(long, value_name = "PREVIOUS.json")]
    compare: Option<PathBuf>,

    /// Change in percent beyond which a figure that got worse counts as a regression.
    #[arg(long, default_value_t = 10.0, value_name = "PCT")]
    threshold: f64,

    /// Exit with status 3 when `--compare` found a regression.
    #[arg(long, requires = "compare")]
    fail_on_regression: bool,
}

/// Figure groups, in the order they run.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Group {
    /// `ekka up` formation of 3 and 5 nodes; etcd: 3 members until each takes a put.
    Up,
    /// Join latency to a 1-node seed.
    Join,
    /// Leader SIGKILL until a write through a survivor is acknowledged, ekka and etcd.
    Failover,
    /// A follower killed, stopped or cut off until the leader shows it down.
    Detect,
    /// A down voter replaced by a learner.
    Replace,
    /// Idle RSS per agent (3 nodes, and `--rss-nodes`), etcd's per member.
    Rss,
    /// Agents started at once find each other (static seeds; etcd discovery).
    Autocluster,
    /// Locks and puts at `--clients` closed-loop clients, acquire latency, CPU per operation.
    Data,
    /// 64 KiB values overwritten: RSS, data dir size and put latency around snapshots (ekka
    /// only; runs only when named in `--only`).
    Bigvalues,
}

/// How often the failover loop starts another write while none has been acknowledged. Attempts
/// overlap: one stuck in a dead leader's or an election's queue does not hold the clock back,
/// and the figure's resolution is this interval (a loop of one write at a time with a timeout
/// rounded etcd's figure up to whole timeouts).
const FAILOVER_ATTEMPT_EVERY: Duration = Duration::from_millis(10);

/// The longest one write of the failover loop stays in flight.
const FAILOVER_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a cluster sits idle before its RSS is read.
const RSS_IDLE: Duration = Duration::from_secs(3);

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return f64::NAN;
    }
    let i = ((s.len() as f64 - 1.0) * p).round() as usize;
    s[i.min(s.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn wait_for<F, Fut>(limit: Duration, mut f: F) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f().await {
            return Ok(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    bail!("condition not reached within {limit:?}")
}

/// Waits until `c`'s status shows member `name` matching `pred`.
async fn wait_member(
    c: &Client,
    name: &str,
    limit: Duration,
    pred: impl Fn(&ekka_types::Member) -> bool,
) -> Result<Duration> {
    wait_for(limit, || async {
        c.status()
            .await
            .is_ok_and(|s| s.member(name).is_some_and(&pred))
    })
    .await
}

/// The leader `c` names, once it names one within `limit`.
async fn leader_of(c: &Client, limit: Duration) -> Result<String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(l) = c.status().await.ok().and_then(|s| s.leader) {
            return Ok(l);
        }
        if Instant::now() >= deadline {
            bail!("no leader within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts n agents and joins them to the first; returns them once all are up.
async fn form(dir: &std::path::Path, n: usize) -> Result<(Vec<Agent>, Duration)> {
    form_with(dir, n, &[]).await
}

/// [`form`] with extra agent flags.
async fn form_with(
    dir: &std::path::Path,
    n: usize,
    extra: &[String],
) -> Result<(Vec<Agent>, Duration)> {
    let t0 = Instant::now();
    let mut agents = Vec::new();
    for i in 1..=n {
        agents.push(Agent::start_with(dir, &format!("n{i}"), "127.0.0.1:0", extra).await?);
    }
    let seed = agents[0].addr.clone();
    for a in &agents[1..] {
        let c = Client::new(&a.addr, COOKIE)?;
        match c.join(&seed).await? {
            Outcome::Done(_) => {}
            Outcome::Ignored(w) => bail!("join ignored: {w}"),
        }
    }
    let c = Client::new(&seed, COOKIE)?;
    wait_for(Duration::from_secs(30 + n as u64), || async {
        c.status()
            .await
            .is_ok_and(|s| s.members.len() == n && s.members.iter().all(|m| m.status == Status::Up))
    })
    .await?;
    Ok((agents, t0.elapsed()))
}

/// `ekka up --nodes 3` and 5; etcd's 3 members until each takes a put (one start attempt each,
/// a failed one is reported and not counted).
async fn bench_up(trials: usize, etcd_ok: bool, rep: &mut Report) -> Result<()> {
    let mut up = Vec::new();
    for n in [3usize, 5] {
        let mut v = Vec::new();
        for _ in 0..trials.min(10) {
            let d = tempfile::tempdir()?;
            v.push(ms(proc::time_up(d.path(), n).await?));
        }
        up.push(v);
    }
    let mut formed = Vec::new();
    if etcd_ok {
        for _ in 0..trials.min(10) {
            let t0 = Instant::now();
            match etcd::Etcd::start_once(3).await {
                Ok(e) => {
                    formed.push(ms(t0.elapsed()));
                    drop(e);
                }
                Err(err) => rep.say(format!("etcd: a start failed, not counted: {err:#}")),
            }
        }
    }
    let etcd = (!formed.is_empty()).then_some(&formed[..]);
    rep.dist(
        "up.formed3_ms",
        "3 nodes: spawned -> formed",
        "ms",
        &up[0],
        etcd,
    );
    rep.dist(
        "up.formed5_ms",
        "5 nodes: spawned -> formed",
        "ms",
        &up[1],
        None,
    );
    Ok(())
}

async fn bench_join(trials: usize, rep: &mut Report) -> Result<()> {
    let d = tempfile::tempdir()?;
    let seed = Agent::start(d.path(), "seed").await?;
    let mut joiner = Agent::start(d.path(), "j").await?;
    let c = Client::new(&joiner.addr, COOKIE)?;
    let mut v = Vec::new();
    for _ in 0..trials {
        let t0 = Instant::now();
        c.join(&seed.addr).await.context("join")?;
        v.push(ms(t0.elapsed()));
        c.leave().await.context("leave")?;
    }
    rep.dist(
        "join_ms",
        "cluster join latency, 1-node seed",
        "ms",
        &v,
        None,
    );
    joiner.kill();
    Ok(())
}

/// Starts a write through `write` every [`FAILOVER_ATTEMPT_EVERY`] (each in flight at most
/// [`FAILOVER_WRITE_TIMEOUT`]) until one is acknowledged; the time from `t0` to that
/// acknowledgement. The same loop for ekka and etcd.
async fn first_ack<F, Fut, T>(t0: Instant, limit: Duration, write: F) -> Result<Duration>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let mut attempts = tokio::task::JoinSet::new();
    let mut next = tokio::time::Instant::now();
    loop {
        if t0.elapsed() > limit {
            bail!("no write acknowledged within {limit:?} of the kill");
        }
        tokio::select! {
            Some(done) = attempts.join_next() => {
                if let Ok(Ok(Ok(_))) = done {
                    return Ok(t0.elapsed()); // dropping the set aborts the other attempts
                }
            }
            _ = tokio::time::sleep_until(next) => {
                attempts.spawn(tokio::time::timeout(FAILOVER_WRITE_TIMEOUT, write()));
                next += FAILOVER_ATTEMPT_EVERY;
            }
        }
    }
}

/// One ekka trial: a fresh 3-node cluster, its leader SIGKILLed; until a put through a survivor
/// is acknowledged, and until the survivor shows the old leader down.
async fn ekka_failover_once() -> Result<(f64, f64)> {
    let d = tempfile::tempdir()?;
    let (mut agents, _) = form(d.path(), 3).await?;
    let old = leader_of(
        &Client::new(&agents[0].addr, COOKIE)?,
        Duration::from_secs(20),
    )
    .await?;
    let idx = agents
        .iter()
        .position(|a| a.name == old)
        .context("leader agent")?;
    let sc = Client::new(&agents[(idx + 1) % 3].addr, COOKIE)?;
    sc.kv_put("failover", b"before".to_vec())
        .await
        .context("a put before the kill")?;
    agents[idx].kill();
    let t0 = Instant::now();
    let acked = first_ack(t0, Duration::from_secs(30), || {
        let sc = sc.clone();
        async move { Ok(sc.kv_put("failover", b"after".to_vec()).await?) }
    })
    .await?;
    wait_member(&sc, &old, Duration::from_secs(20), |m| {
        m.status == Status::Down
    })
    .await?;
    Ok((ms(acked), ms(t0.elapsed())))
}

/// One etcd trial, the same measure: a fresh 3-member cluster, its leader SIGKILLed; until a
/// put through a survivor is acknowledged.
async fn etcd_failover_once(rep: &mut Report) -> Result<f64> {
    let mut e = etcd::Etcd::start_cluster(3, |m| rep.say(m)).await?;
    // The leader is found over the JSON gateway (blocking, short).
    let (leader, survivor) = tokio::task::block_in_place(|| e.leader_and_survivor())?;
    let c = load::EtcdGrpc::connect(&survivor).await?;
    c.put(b"failover", b"before")
        .await
        .context("a put before the kill")?;
    let t0 = e.kill(leader)?;
    let acked = first_ack(t0, Duration::from_secs(30), || {
        let c = c.clone();
        async move { c.put(b"failover", b"after").await }
    })
    .await?;
    drop(e);
    Ok(ms(acked))
}

async fn bench_failover(trials: usize, etcd_ok: bool, rep: &mut Report) -> Result<()> {
    let (mut acked, mut down) = (Vec::new(), Vec::new());
    for _ in 0..trials {
        let (a, d) = ekka_failover_once().await?;
        acked.push(a);
        down.push(d);
    }
    let mut theirs = Vec::new();
    if etcd_ok {
        for _ in 0..trials {
            match etcd_failover_once(rep).await {
                Ok(v) => theirs.push(v),
                Err(err) => rep.say(format!("etcd failover trial failed, not counted: {err:#}")),
            }
        }
    }
    rep.dist(
        "failover.write_acked_ms",
        "leader SIGKILL -> write through a survivor acked",
        "ms",
        &acked,
        (!theirs.is_empty()).then_some(&theirs[..]),
    );
    rep.dist(
        "failover.old_leader_down_ms",
        "leader SIGKILL -> old leader shown down",
        "ms",
        &down,
        None,
    );
    Ok(())
}

async fn bench_detect(trials: usize, rep: &mut Report) -> Result<()> {
    let mut v = Vec::new();
    let d = tempfile::tempdir()?;
    let (mut agents, _) = form(d.path(), 3).await?;
    let c = Client::new(&agents[0].addr, COOKIE)?;
    let leader = c.status().await?.leader.context("no leader")?;
    let victim = agents
        .iter()
        .position(|a| a.name != leader)
        .context("follower")?;
    for _ in 0..trials {
        let name = agents[victim].name.clone();
        agents[victim].kill();
        let t0 = Instant::now();
        wait_member(&c, &name, Duration::from_secs(20), |m| {
            m.status == Status::Down
        })
        .await?;
        v.push(ms(t0.elapsed()));
        agents[victim].restart().await?;
        wait_member(&c, &name, Duration::from_secs(20), |m| {
            m.status == Status::Up
        })
        .await?;
    }
    rep.dist(
        "detect.sigkill_ms",
        "follower SIGKILL -> shown down",
        "ms",
        &v,
        None,
    );

    // Cut off: the process stays but answers nothing (SIGSTOP), as with cut links.
    let mut cut = Vec::new();
    for _ in 0..trials {
        let name = agents[victim].name.clone();
        agents[victim].signal(libc::SIGSTOP);
        let t0 = Instant::now();
        wait_member(&c, &name, Duration::from_secs(20), |m| {
            m.status == Status::Down
        })
        .await?;
        cut.push(ms(t0.elapsed()));
        agents[victim].signal(libc::SIGCONT);
        wait_member(&c, &name, Duration::from_secs(20), |m| {
            m.status == Status::Up
        })
        .await?;
    }
    rep.dist(
        "detect.sigstop_ms",
        "follower cut off (SIGSTOP) -> shown down",
        "ms",
        &cut,
        None,
    );
    drop(agents);

    // Cut off by the network: each agent is reached by its peers only through a loopback proxy
    // that knows which agent opened each connection; the follower's links are cut both ways.
    let d = tempfile::tempdir()?;
    let net = ekka_testkit::proxy::Net::new(3);
    let mut agents = Vec::new();
    for i in 0..3 {
        let p = &net.proxies[i];
        let adv = ["--advertise".to_string(), p.addr.clone()];
        let a = Agent::start_with(d.path(), &format!("n{}", i + 1), "127.0.0.1:0", &adv).await?;
        p.set_target(&a.addr);
        net.set_pid(i, Some(a.pid()));
        agents.push(a);
    }
    for a in &agents[1..] {
        if let Outcome::Ignored(w) = Client::new(&a.addr, COOKIE)?
            .join(&net.proxies[0].addr)
            .await?
        {
            bail!("join ignored: {w}");
        }
    }
    let clients: Vec<Client> = agents
        .iter()
        .map(|a| Client::new(&a.addr, COOKIE))
        .collect::<Result<_, _>>()?;
    let mut cut_net = Vec::new();
    for _ in 0..trials {
        // The victim is a follower of the current leader; the leader's view is the one timed.
        let leader = leader_of(&clients[0], Duration::from_secs(20)).await?;
        let li = agents
            .iter()
            .position(|a| a.name == leader)
            .context("leader agent")?;
        let vi = (li + 1) % agents.len();
        let name = agents[vi].name.clone();
        let up = |m: &ekka_types::Member| m.status == Status::Up;
        let down = |m: &ekka_types::Member| m.status == Status::Down;
        let limit = Duration::from_secs(20);
        wait_member(&clients[li], &name, limit, up)
            .await
            .context("the victim up before the cut")?;
        let others: Vec<usize> = (0..agents.len()).filter(|&i| i != vi).collect();
        net.split(&[&[vi], &others]);
        let t0 = Instant::now();
        wait_member(&clients[li], &name, limit, down)
            .await
            .context("the victim shown down")?;
        cut_net.push(ms(t0.elapsed()));
        net.heal();
        wait_member(&clients[li], &name, limit, up)
            .await
            .context("the victim up after the heal")?;
    }
    rep.dist(
        "detect.links_cut_ms",
        "follower cut off (links cut) -> shown down",
        "ms",
        &cut_net,
        None,
    );
    Ok(())
}

/// 3 voters and a learner with `--replace-down-voter-after 1s`: kill a voter that does not lead;
/// time until the learner holds its seat (the 1 s delay included), per trial.
async fn bench_replace(trials: usize, rep: &mut Report) -> Result<()> {
    let d = tempfile::tempdir()?;
    let flags = ["--replace-down-voter-after".to_string(), "1s".to_string()];
    let (mut agents, _) = form_with(d.path(), 4, &flags).await?;
    let mut v = Vec::new();
    for _ in 0..trials {
        let addr = agents[0].addr.clone();
        let c = Client::new(&addr, COOKIE)?;
        let s = c.status().await?;
        let leader = s.leader.clone().context("no leader")?;
        let learner = s
            .members
            .iter()
            .find(|m| m.role == ekka_types::Role::Learner && m.status == Status::Up)
            .context("no up learner")?
            .name
            .clone();
        let victim = s
            .members
            .iter()
            .find(|m| m.role == ekka_types::Role::Voter && m.name != leader)
            .context("no follower voter")?
            .name
            .clone();
        let vi = agents
            .iter()
            .position(|a| a.name == victim)
            .context("victim")?;
        let la = agents
            .iter()
            .find(|a| a.name == leader)
            .context("leader")?
            .addr
            .clone();
        let lc = Client::new(&la, COOKIE)?;
        agents[vi].kill();
        let t0 = Instant::now();
        wait_member(&lc, &learner, Duration::from_secs(30), |m| {
            m.role == ekka_types::Role::Voter
        })
        .await?;
        v.push(ms(t0.elapsed()));
        agents[vi].restart().await?;
        wait_member(&lc, &victim, Duration::from_secs(30), |m| {
            m.status == Status::Up
        })
        .await?;
    }
    rep.dist(
        "replace.learner_seated_ms",
        "voter SIGKILL -> learner seated, 1s delay incl.",
        "ms",
        &v,
        None,
    );
    Ok(())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts n agents at once with the same discovery settings; time until one cluster with all
/// n up (no command typed).
async fn autocluster_once(n: usize, strategy: &str, flags: &[String]) -> Result<f64> {
    let d = tempfile::tempdir()?;
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect::<Result<_>>()?;
    let seeds: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut args = vec!["--discovery".to_string(), strategy.to_string()];
    if strategy == "static" {
        args.extend(["--seeds".to_string(), seeds.join(",")]);
    }
    // Default retry interval (1 s + jitter): the figure is what a user gets out of the box.
    args.extend(flags.iter().cloned());
    let t0 = Instant::now();
    let mut starts = Vec::new();
    for (i, s) in seeds.iter().enumerate() {
        let (dir, args) = (d.path().to_path_buf(), args.clone());
        let (name, listen) = (format!("n{i}"), s.clone());
        starts.push(tokio::spawn(async move {
            Agent::start_with(&dir, &name, &listen, &args).await
        }));
    }
    let mut agents = Vec::new();
    for s in starts {
        agents.push(s.await??);
    }
    let c = Client::new(&agents[0].addr, COOKIE)?;
    wait_for(Duration::from_secs(60), || async {
        c.status()
            .await
            .is_ok_and(|s| s.members.len() == n && s.members.iter().all(|m| m.status == Status::Up))
    })
    .await?;
    Ok(ms(t0.elapsed()))
}

async fn bench_autocluster(trials: usize, etcd_url: Option<&str>, rep: &mut Report) -> Result<()> {
    for n in [3usize, 5, 10] {
        let mut v = Vec::new();
        for _ in 0..trials.min(10) {
            v.push(autocluster_once(n, "static", &[]).await?);
        }
        rep.dist(
            &format!("autocluster.static{n}_ms"),
            &format!("autocluster static, {n} agents at once -> formed"),
            "ms",
            &v,
            None,
        );
    }
    let Some(url) = etcd_url else {
        rep.say("autocluster with etcd discovery: not measured (no etcd)");
        return Ok(());
    };
    for n in [3usize, 5, 10] {
        let mut v = Vec::new();
        for t in 0..trials.min(10) {
            let args: Vec<String> = [
                "--etcd-endpoints",
                url,
                "--etcd-cluster",
                &format!("bench-{n}-{t}"),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            v.push(autocluster_once(n, "etcd", &args).await?);
        }
        rep.dist(
            &format!("autocluster.etcd{n}_ms"),
            &format!("autocluster etcd discovery, {n} agents at once -> formed"),
            "ms",
            &v,
            None,
        );
    }
    Ok(())
}

/// `field` of `/proc/<pid>/status` of each pid, MiB.
fn status_mib(pids: &[u32], field: &str) -> Vec<f64> {
    pids.iter()
        .map(|&p| proc::status_kib(p, field) as f64 / 1024.0)
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Idle RSS per agent of a 3-node cluster (etcd's per member beside it) and of an
/// `nodes_large`-node one: mean and max of `VmRSS`, and the mean of its anonymous part
/// (`RssAnon`: heap and stacks, private to the process; the rest is mostly the binary's pages,
/// shared by every process that maps it).
async fn bench_rss(etcd: Option<&etcd::Etcd>, nodes_large: usize, rep: &mut Report) -> Result<()> {
    let d = tempfile::tempdir()?;
    let (agents, _) = form(d.path(), 3).await?;
    tokio::time::sleep(RSS_IDLE).await; // idle, as the figure says
    let pids: Vec<u32> = agents.iter().map(|a| a.pid()).collect();
    let etcd_pids = etcd.map(|e| e.pids());
    rss_figures(rep, 3, &pids, etcd_pids.as_deref());
    drop(agents);
    if nodes_large == 0 {
        return Ok(());
    }
    let d = tempfile::tempdir()?;
    let (agents, took) = form(d.path(), nodes_large).await?;
    rep.say(format!(
        "{nodes_large}-node cluster formed by joins in {:.1} s",
        took.as_secs_f64()
    ));
    tokio::time::sleep(RSS_IDLE).await;
    let pids: Vec<u32> = agents.iter().map(|a| a.pid()).collect();
    rss_figures(rep, nodes_large, &pids, None);
    Ok(())
}

/// Prints and keeps the RSS figures `rss.nN.*` of an idle N-node cluster.
fn rss_figures(rep: &mut Report, n: usize, pids: &[u32], etcd: Option<&[u32]>) {
    let rss = status_mib(pids, "VmRSS");
    let anon = status_mib(pids, "RssAnon");
    let e_rss = etcd.map(|p| status_mib(p, "VmRSS"));
    let e_anon = etcd.map(|p| status_mib(p, "RssAnon"));
    rep.dist_line_only(
        &format!("idle RSS per ekka agent, {n}-node cluster (MiB)"),
        &rss,
        "M",
    );
    rep.say(format!(
        "  of which anonymous (RssAnon) mean {:.1} MiB, file-backed (RssFile) mean {:.1} MiB",
        mean(&anon),
        mean(&status_mib(pids, "RssFile"))
    ));
    if let (Some(er), Some(ea)) = (&e_rss, &e_anon) {
        rep.dist_line_only(
            &format!("idle RSS per etcd member, {n}-node cluster (MiB)"),
            er,
            "M",
        );
        rep.say(format!(
            "  of which anonymous (RssAnon) mean {:.1} MiB",
            mean(ea)
        ));
        rep.say(format!(
            "ratio ekka/etcd RSS, {n} nodes: mean {:.2}  max {:.2}  anonymous mean {:.2}",
            mean(&rss) / mean(er),
            pct(&rss, 1.0) / pct(er, 1.0),
            mean(&anon) / mean(ea)
        ));
    }
    let what = format!("idle RSS per agent, {n}-node cluster");
    let figures: [(&str, &str, f64, Option<f64>); 3] = [
        ("mean_mib", "mean", mean(&rss), e_rss.as_deref().map(mean)),
        (
            "max_mib",
            "max",
            pct(&rss, 1.0),
            e_rss.as_deref().map(|v| pct(v, 1.0)),
        ),
        (
            "anon_mean_mib",
            "anonymous part, mean",
            mean(&anon),
            e_anon.as_deref().map(mean),
        ),
    ];
    for (suffix, label, ours, theirs) in figures {
        rep.value(
            &format!("rss.n{n}.{suffix}"),
            &format!("{what}, {label}"),
            "MiB",
            Better::Lower,
            ours,
            theirs,
        );
    }
}

/// Locks and puts at each client count on a 3-node ekka cluster and a 3-node etcd cluster,
/// clients on each leader, one workload at a time; both and the ratio ekka/etcd.
async fn bench_data(
    etcd: Option<&etcd::Etcd>,
    secs: f64,
    clients: &[u16],
    rep: &mut Report,
) -> Result<()> {
    let d = tempfile::tempdir()?;
    let (agents, _) = form(d.path(), 3).await?;
    let leader = leader_of(
        &Client::new(&agents[0].addr, COOKIE)?,
        Duration::from_secs(20),
    )
    .await?;
    let laddr = agents
        .iter()
        .find(|a| a.name == leader)
        .context("leader agent")?
        .addr
        .clone();
    // One connection per 16 clients, as a service with a small pool would have.
    let ekka_clients: Vec<Client> = (0..4)
        .map(|_| Client::new(&laddr, COOKIE))
        .collect::<Result<_, _>>()?;
    let ekka = load::Target::Ekka(ekka_clients, agents.iter().map(|a| a.pid()).collect());
    let etcd = match etcd {
        Some(e) => {
            let ep = tokio::task::block_in_place(|| e.leader_endpoint())?;
            let mut cs = Vec::new();
            for i in 0..64 {
                let c = if i < 4 {
                    load::EtcdGrpc::connect(&ep).await?
                } else {
                    let (c, _): &(load::EtcdGrpc, i64) = &cs[i % 4];
                    c.clone()
                };
                let lease = c.lease_grant(3600).await?;
                cs.push((c, lease));
            }
            Some(load::Target::Etcd(cs, e.pids()))
        }
        None => None,
    };
    rep.say(format!(
        "data load: {secs} s per case, 3 nodes each, clients on the leader"
    ));
    // In microseconds: the goal (under 1 ms) needs more than 0.1 ms resolution.
    let us = |v: Vec<f64>| v.into_iter().map(|ms| ms * 1000.0).collect::<Vec<_>>();
    let a = us(ekka.acquire_latency(secs).await?);
    let b = match &etcd {
        Some(e) => Some(us(e.acquire_latency(secs).await?)),
        None => None,
    };
    rep.dist(
        "data.acquire_us",
        "lock acquire, 1 client",
        "us",
        &a,
        b.as_deref(),
    );
    for &n in clients {
        let n = usize::from(n);
        let ours = ekka.locks(n, secs).await;
        let theirs = match &etcd {
            Some(e) => Some(e.locks(n, secs).await),
            None => None,
        };
        rep.load(
            &format!("data.locks.c{n}"),
            &format!("locks clients={n:<2} (acquire+release)"),
            &ours,
            theirs.as_ref(),
        );
        let ours = ekka.puts(n, secs).await;
        let theirs = match &etcd {
            Some(e) => Some(e.puts(n, secs).await),
            None => None,
        };
        rep.load(
            &format!("data.puts.c{n}"),
            &format!("puts  clients={n:<2}"),
            &ours,
            theirs.as_ref(),
        );
    }
    Ok(())
}

/// What the machine is, for the report.
fn machine(etcd_version: Option<String>) -> report::Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or(String::new(), |(_, v)| v.trim().to_string());
    let mem_total_mib = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024);
    let git = std::process::Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "describe",
            "--always",
            "--dirty",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    report::Machine {
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        cpu,
        mem_total_mib,
        etcd: etcd_version,
        ekka_bin: std::fs::canonicalize(proc::ekka_bin())
            .unwrap_or_else(|_| proc::ekka_bin())
            .display()
            .to_string(),
        git,
        loadavg_start: report::loadavg(),
        loadavg_end: 0.0,
    }
}

/// The command line as typed, with the binary overrides in force; arguments quoted for sh.
fn command_line() -> String {
    let quote = |a: &str| {
        if !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=,:@%+".contains(c))
        {
            a.to_string()
        } else {
            format!("'{}'", a.replace('\'', r"'\''"))
        }
    };
    let mut parts: Vec<String> = ["EKKA_BIN", "ETCD_BIN"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| format!("{k}={}", quote(&v))))
        .collect();
    parts.extend(std::env::args().map(|a| quote(&a)));
    parts.join(" ")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = Args::parse();
    let trials = args.trials as usize;
    if args.only.contains(&Group::Bigvalues) {
        return match bigvalues::bench(args.big_secs, args.big_clients).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let want = |g: Group| args.only.is_empty() || args.only.contains(&g);
    let previous = match args
        .compare
        .as_deref()
        .map(report::read_summary)
        .transpose()
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let etcd_version = etcd::version();
    let mut rep = Report::new(command_line(), machine(etcd_version.as_ref().ok().cloned()));
    let m = rep.summary.machine.clone();
    rep.say(format!("ekka binary: {}", m.ekka_bin));
    rep.say(format!(
        "machine: {} cores, kernel {}, {}, {} MiB",
        m.nproc, m.kernel, m.cpu, m.mem_total_mib
    ));
    let etcd_ok = match &etcd_version {
        Ok(v) => {
            rep.say(format!("etcd: {v} ({})", etcd::etcd_bin().display()));
            true
        }
        Err(e) => {
            rep.say(format!("etcd: not measured, ekka figures only ({e:#})"));
            false
        }
    };

    macro_rules! run {
        ($g:expr, $name:literal, $body:expr) => {
            if want($g) {
                if let Err(e) = $body.await {
                    rep.fail($name, &e);
                }
            }
        };
    }
    run!(Group::Up, "up", bench_up(trials, etcd_ok, &mut rep));
    run!(Group::Join, "join", bench_join(trials, &mut rep));
    run!(
        Group::Failover,
        "failover",
        bench_failover(trials, etcd_ok, &mut rep)
    );
    run!(Group::Detect, "detect", bench_detect(trials, &mut rep));
    run!(Group::Replace, "replace", bench_replace(trials, &mut rep));

    // One etcd cluster serves the last three groups: idle RSS (first, while it is fresh),
    // discovery endpoint, data load.
    let mut shared = None;
    if etcd_ok && (want(Group::Autocluster) || want(Group::Rss) || want(Group::Data)) {
        match etcd::Etcd::start_cluster(3, |m| rep.say(m)).await {
            Ok(e) => shared = Some(e),
            Err(e) => rep.fail("etcd (its rows of autocluster, rss, data)", &e),
        }
    }
    let url = shared.as_ref().map(|e| e.url().to_string());
    run!(
        Group::Rss,
        "rss",
        bench_rss(shared.as_ref(), args.rss_nodes, &mut rep)
    );
    run!(
        Group::Autocluster,
        "autocluster",
        bench_autocluster(trials, url.as_deref(), &mut rep)
    );
    run!(
        Group::Data,
        "data",
        bench_data(shared.as_ref(), args.secs, &args.clients, &mut rep)
    );
    drop(shared);

    rep.summary.machine.loadavg_end = report::loadavg();
    rep.say(format!(
        "load average (1 min): {:.2} at the start, {:.2} at the end",
        rep.summary.machine.loadavg_start, rep.summary.machine.loadavg_end
    ));
    let mut regressed = false;
    let comparison = previous.map(|p| {
        let c = report::compare(&p, &rep.summary, args.threshold);
        print!("{}", c.text);
        regressed = !c.regressions.is_empty();
        c.text
    });
    if let Some(out) = &args.out {
        if let Err(e) = rep.write(out, comparison.as_deref()) {
            eprintln!("error: {e:#}");
            return ExitCode::from(1);
        }
    }
    if !rep.summary.failures.is_empty() {
        eprintln!("{} figure group(s) failed", rep.summary.failures.len());
        return ExitCode::from(1);
    }
    if regressed && args.fail_on_regression {
        return ExitCode::from(3);
    }
    ExitCode::SUCCESS
}
