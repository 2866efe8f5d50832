//! The autocluster loop: lock → discover → join → register → unlock (always), retrying with a
//! delay that doubles from 50 ms up to `retry_interval` (plus jitter), until this node is registered and every discovered live node is
//! in its cluster; then it keeps watching at a tenth of the pace. Decided by cluster identity,
//! not node age:
//!
//! - the largest cluster wins; between equal sizes, the one holding the lowest node name (for
//!   one-node clusters that is the lowest-name bootstrap rule);
//! - a one-node cluster joins the winner (once `bootstrap_expect` nodes are seen, while all are
//!   single);
//! - a cluster of several nodes dissolves into a strictly larger one only with `autoheal`;
//! - never across a recovery: a recovered cluster and the cluster it was recovered from ignore
//!   each other (joining one into the other is the operator's call).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ekka_discovery::{Done, Strategy};
use ekka_proto::pb::HelloReply;
use ekka_types::{fmt_id, ErrorCode};
use rand::Rng;
use tracing::{info, warn};

use crate::runtime::core::Inner;

use super::join::JoinOutcome;

/// What one round concluded.
#[derive(Debug, PartialEq, Eq)]
enum Round {
    /// Registered, and every discovered live node is in this node's cluster.
    Done,
    /// Try again after `retry_interval`; the reason is logged when it changes.
    Again(String),
}

/// Runs until disabled (`leave`) or shutdown. Once done it keeps watching, ten times slower, so
/// a cluster that formed apart still finds (and merges with) a larger one later.
pub(crate) async fn run(inner: Arc<Inner>, strategy: Arc<dyn Strategy>) {
    let mut shutdown = inner.shutdown.subscribe();
    let mut last = String::new();
    // Rounds since the outcome last changed: the delay doubles from 50 ms up to retry_interval,
    // so a forming cluster converges fast and a stuck one settles at the configured pace.
    let mut same = 0u32;
    loop {
        if !inner.autocluster.load(Ordering::SeqCst) {
            info!("autocluster disabled");
            return;
        }
        let (done, now) = match round(&inner, strategy.as_ref()).await {
            Round::Done => (true, "done".to_string()),
            Round::Again(why) => (false, why),
        };
        if now == last {
            same = same.saturating_add(1);
        } else {
            if done {
                info!(strategy = strategy.name(), "autocluster done; watching");
            } else {
                info!(strategy = strategy.name(), reason = %now, "autocluster will retry");
            }
            last = now;
            same = 0;
        }
        let ramp = Duration::from_millis(50).saturating_mul(1u32 << same.min(10));
        let base = if done {
            inner.cfg.retry_interval * 10
        } else {
            ramp.min(inner.cfg.retry_interval)
        };
        let jitter = rand::thread_rng().gen_range(0..=base.as_millis() as u64 / 2);
        tokio::select! {
            _ = tokio::time::sleep(base + Duration::from_millis(jitter)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn round(inner: &Arc<Inner>, s: &dyn Strategy) -> Round {
    let locked = s.lock().await;
    if let Ok(Done::Ignore) = locked {
        // No lock to coordinate with: a little jitter spreads simultaneous starters apart.
        let ms = rand::thread_rng().gen_range(0..50);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let r = match &locked {
        Err(e) => Round::Again(format!("lock: {e}")),
        Ok(_) => discover_and_join(inner, s).await,
    };
    // ekka#148: always unlock, even when lock failed.
    if let Err(e) = s.unlock().await {
        warn!(error = %e, "autocluster unlock");
    }
    let registered = match s.register().await {
        Ok(_) => true,
        Err(e) => {
            warn!(error = %e, "autocluster register");
            false
        }
    };
    match r {
        Round::Done if !registered => Round::Again("not registered yet".into()),
        other => other,
    }
}

/// A cluster seen through discovery.
struct Seen {
    size: u32,
    lowest_name: String,
    addr: String,
}

/// One round's work under the lock: discovers the live nodes, picks the cluster to be in, and
/// joins it when this node should.
async fn discover_and_join(inner: &Arc<Inner>, s: &dyn Strategy) -> Round {
    let peers = match s.discover().await {
        Ok(p) => p,
        Err(e) => return Round::Again(format!("discover: {e}")),
    };
    let me = inner.hello().await;
    let mut hellos = futures_hello(inner, peers, me.node_id).await;
    // Never across a recovery (`ekka cluster recover`), either way: a recovered node does not
    // rejoin the generation it replaced, and a member of that old generation is not wiped into
    // the recovered one; an operator joins it on purpose.
    let seen = hellos.len();
    hellos.retain(|(_, h)| same_generation(&me, h));
    if let Some(r) = nothing_to_join(&me, &hellos, seen) {
        return r;
    }
    let clusters = clusters_seen(inner, &me, &hellos);
    let (best_id, best) = largest(&clusters);
    let heal = me.n_members > 1;
    if let Some(r) = hold_back(inner, &me, hellos.len() + 1, heal, best_id, best) {
        return r;
    }
    join_cluster(inner, &best.addr, heal).await
}

/// Whether `h` is of the same generation as this node (`me`): neither the cluster this one was
/// recovered from, nor one recovered from this one.
fn same_generation(me: &HelloReply, h: &HelloReply) -> bool {
    let older = me.recovered_from != 0 && h.cluster_id == me.recovered_from;
    let newer = h.recovered_from != 0 && h.recovered_from == me.cluster_id;
    !older && !newer
}

/// The round's end when the live nodes of this generation (`hellos`, out of `seen` discovered)
/// leave nothing to join: none, one still joining, or all already in this node's cluster.
fn nothing_to_join(me: &HelloReply, hellos: &[(String, HelloReply)], seen: usize) -> Option<Round> {
    if hellos.len() < seen && hellos.is_empty() {
        return Some(Round::Again(
            "only nodes of another generation of this cluster (cluster recover) discovered".into(),
        ));
    }
    if hellos.is_empty() {
        return Some(Round::Again("no other live node discovered".into()));
    }
    if hellos.iter().any(|(_, h)| h.joining || h.cluster_id == 0) {
        return Some(Round::Again(
            "a discovered node is joining a cluster".into(),
        ));
    }
    if hellos.iter().all(|(_, h)| h.cluster_id == me.cluster_id) {
        return Some(Round::Done);
    }
    None
}

/// Every cluster seen, this node's own included, by cluster id: its largest reported size and
/// the address of its lowest-named node.
fn clusters_seen(
    inner: &Arc<Inner>,
    me: &HelloReply,
    hellos: &[(String, HelloReply)],
) -> BTreeMap<u64, Seen> {
    let mut clusters: BTreeMap<u64, Seen> = BTreeMap::new();
    clusters.insert(
        me.cluster_id,
        Seen {
            size: me.n_members,
            lowest_name: me.name.clone(),
            addr: inner.addr.clone(),
        },
    );
    for (addr, h) in hellos {
        let e = clusters.entry(h.cluster_id).or_insert_with(|| Seen {
            size: h.n_members,
            lowest_name: h.name.clone(),
            addr: addr.clone(),
        });
        e.size = e.size.max(h.n_members);
        if h.name < e.lowest_name {
            e.lowest_name = h.name.clone();
            e.addr = addr.clone();
        }
    }
    clusters
}

/// The winning cluster: the largest, and between equal sizes the one holding the lowest name.
fn largest(clusters: &BTreeMap<u64, Seen>) -> (u64, &Seen) {
    let (&best_id, best) = clusters
        .iter()
        .max_by(|(_, a), (_, b)| {
            a.size
                .cmp(&b.size)
                .then_with(|| b.lowest_name.cmp(&a.lowest_name))
        })
        .expect("holds this node's cluster");
    (best_id, best)
}

/// Why this node (`me`, seeing `live` nodes) does not join `best` yet, if it does not: the
/// winner is its own cluster, too few nodes for a bootstrap, or (with `heal`: it would leave a
/// cluster of several) a merge without `autoheal` into a strictly larger cluster. Logs the
/// AUTOHEAL warning when it does heal.
fn hold_back(
    inner: &Arc<Inner>,
    me: &HelloReply,
    live: usize,
    heal: bool,
    best_id: u64,
    best: &Seen,
) -> Option<Round> {
    if best_id == me.cluster_id {
        return Some(Round::Again(
            "waiting for other nodes to join this cluster".into(),
        ));
    }
    if best.size == 1 && live < inner.cfg.bootstrap_expect {
        return Some(Round::Again(format!(
            "{live} nodes seen, bootstrap_expect is {}",
            inner.cfg.bootstrap_expect
        )));
    }
    if heal {
        if !(inner.cfg.autoheal && best.size > me.n_members) {
            return Some(Round::Again(format!(
                "cluster {} ({} nodes) sees cluster {} ({} nodes); not merging",
                fmt_id(me.cluster_id),
                me.n_members,
                fmt_id(best_id),
                best.size
            )));
        }
        warn!(
            from = %fmt_id(me.cluster_id), from_size = me.n_members,
            to = %fmt_id(best_id), to_size = best.size,
            "AUTOHEAL: this node leaves its cluster for a larger one it discovered"
        );
    }
    None
}

/// Joins the cluster of the node at `addr` (with `heal`, leaving this node's own cluster of
/// several) and says how the round ends.
async fn join_cluster(inner: &Arc<Inner>, addr: &str, heal: bool) -> Round {
    match inner.join_as(addr, heal, true).await {
        Ok(JoinOutcome::Joined { cluster_id }) => {
            info!(cluster = %fmt_id(cluster_id), via = %addr, "autocluster joined");
            Round::Again("joined; checking the rest".into())
        }
        Ok(JoinOutcome::Ignored(why)) => Round::Again(why),
        Err(e) if e.code == ErrorCode::AlreadyInCluster => Round::Again("already joined".into()),
        Err(e) => Round::Again(format!("join {addr}: {e}")),
    }
}

/// Hello from every discovered address except this node itself; unreachable nodes are left out.
async fn futures_hello(
    inner: &Arc<Inner>,
    peers: Vec<String>,
    my_id: u64,
) -> Vec<(String, HelloReply)> {
    let mut set = tokio::task::JoinSet::new();
    for addr in peers {
        if addr == inner.addr || addr == inner.local_addr.to_string() {
            continue;
        }
        let inner = inner.clone();
        set.spawn(async move {
            let h = inner.hello_at(&addr).await;
            (addr, h)
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok((addr, Ok(h))) = r {
            if h.node_id != my_id {
                out.push((addr, h));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}
