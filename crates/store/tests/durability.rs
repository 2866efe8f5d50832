//! The store on disk: reopen, snapshot install, reset, a kill -9 while a one-node Raft appends,
//! and refusing data dirs that are locked, foreign or corrupt.
//!
//! The multi-process tests re-run this test binary as a child (`child_process`, driven by the
//! `EKKA_STORE_TEST_CHILD` variable; without it the child test does nothing).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ekka_store::{DataDir, LogStore, Raft, StoreError, TypeConfig};
use ekka_types::{Command as Cmd, Request};
use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftLogReader,
    RaftSnapshotBuilder, ServerState, Vote,
};

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entry(index: u64, cmd: Cmd) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Normal(Request { now_ms: index, cmd }),
    }
}

fn bootstrap_cmd() -> Cmd {
    Cmd::Bootstrap {
        cluster_id: 7,
        id: 1,
        name: "n1".into(),
        addr: "127.0.0.1:1".into(),
        max_voters: 5,
    }
}

fn add_cmd(id: u64) -> Cmd {
    Cmd::AddMember {
        id,
        name: format!("n{id}"),
        addr: format!("127.0.0.1:{id}"),
    }
}

fn bootstrap(index: u64) -> Entry<TypeConfig> {
    entry(index, bootstrap_cmd())
}

fn add(index: u64, id: u64) -> Entry<TypeConfig> {
    entry(index, add_cmd(id))
}

/// Appends and waits until the store reports the entries durable.
async fn append(log: &mut LogStore, entries: Vec<Entry<TypeConfig>>) {
    log.append_flushed(entries).await.expect("append");
}

#[tokio::test]
async fn reopen_keeps_vote_log_and_snapshot() {
    let td = tempfile::tempdir().unwrap();
    let path = td.path().join("d");
    let (node_id, snap_meta) = {
        let dir = DataDir::open(&path).unwrap();
        dir.set_cluster_id(7).unwrap();
        let (mut log, mut sm) = dir.open_stores().unwrap();
        log.save_vote(&Vote::new(3, 1)).await.unwrap();
        let entries = vec![bootstrap(1), add(2, 2), add(3, 3)];
        append(&mut log, entries.clone()).await;
        let out = sm.apply(entries).await.unwrap();
        assert!(out.iter().all(|r| r.is_ok()), "{out:?}");
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        log.save_committed(Some(log_id(1, 3))).await.unwrap();
        (dir.node_id(), snap.meta)
    };
    let dir = DataDir::open(&path).unwrap();
    assert_eq!(dir.node_id(), node_id);
    assert_eq!(dir.cluster_id(), 7);
    let (mut log, mut sm) = dir.open_stores().unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 3)));
    let got = log.try_get_log_entries(1..4).await.unwrap();
    assert_eq!(got, vec![bootstrap(1), add(2, 2), add(3, 3)]);
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(1, 3)));
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 3)));
    let current = sm.get_current_snapshot().await.unwrap().expect("snapshot");
    assert_eq!(current.meta, snap_meta);
    let st = sm.state();
    let st = st.read();
    assert_eq!(st.cluster_id, 7);
    assert_eq!(
        st.members.keys().copied().collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(st.revision, 3);
}

#[tokio::test]
async fn install_snapshot_replaces_the_state() {
    let td = tempfile::tempdir().unwrap();
    let a = DataDir::open(&td.path().join("a")).unwrap();
    let b = DataDir::open(&td.path().join("b")).unwrap();
    let (_, mut sa) = a.open_stores().unwrap();
    let (_, mut sb) = b.open_stores().unwrap();
    let mut applied = sb.subscribe();
    sa.apply(vec![
        bootstrap(1),
        add(2, 2),
        add(3, 3),
        add(4, 4),
        add(5, 5),
    ])
    .await
    .unwrap();
    // b holds members a's snapshot does not have; they must not survive the install.
    sb.apply(vec![bootstrap(1), add(2, 15), add(3, 16)])
        .await
        .unwrap();
    assert_eq!(*applied.borrow_and_update(), 3);
    let snap = sa
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    sb.install_snapshot(&snap.meta, snap.snapshot)
        .await
        .unwrap();
    let ids: Vec<u64> = sb.state().read().members.keys().copied().collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5]);
    assert_eq!(*applied.borrow_and_update(), 5);
    assert_eq!(sb.applied_state().await.unwrap().0, Some(log_id(1, 5)));
    let current = sb.get_current_snapshot().await.unwrap().expect("snapshot");
    assert_eq!(current.meta, snap.meta);
    // The installed snapshot is also what a reopened store starts from.
    drop(sb);
    let (_, sb) = b.open_stores().unwrap();
    let ids: Vec<u64> = sb.state().read().members.keys().copied().collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn install_snapshot_whose_data_does_not_match_its_meta_is_refused() {
    let td = tempfile::tempdir().unwrap();
    let a = DataDir::open(&td.path().join("a")).unwrap();
    let b = DataDir::open(&td.path().join("b")).unwrap();
    let (_, mut sa) = a.open_stores().unwrap();
    let (_, mut sb) = b.open_stores().unwrap();
    sa.apply(vec![bootstrap(1), add(2, 2)]).await.unwrap();
    sb.apply(vec![bootstrap(1)]).await.unwrap();
    let snap = sa
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let mut meta = snap.meta.clone();
    meta.last_log_id = Some(log_id(1, 9));
    sb.install_snapshot(&meta, snap.snapshot)
        .await
        .expect_err("refused");
    assert_eq!(sb.state().read().members.len(), 1);
    assert!(sb.get_current_snapshot().await.unwrap().is_none());
}

#[tokio::test]
async fn membership_entries_set_roles_and_blank_entries_advance() {
    let td = tempfile::tempdir().unwrap();
    let d = DataDir::open(&td.path().join("d")).unwrap();
    let (_, mut sm) = d.open_stores().unwrap();
    let nodes = |ids: &[u64]| -> std::collections::BTreeMap<u64, BasicNode> {
        ids.iter()
            .map(|id| (*id, BasicNode::new(format!("127.0.0.1:{id}"))))
            .collect()
    };
    // Before the bootstrap a membership entry only advances the revision.
    let early = Entry {
        log_id: log_id(1, 1),
        payload: EntryPayload::Membership(Membership::new(vec![[1u64].into()], nodes(&[1]))),
    };
    let m = Membership::new(vec![[1u64, 2].into()], nodes(&[1, 2, 3]));
    let late = Entry {
        log_id: log_id(1, 5),
        payload: EntryPayload::Membership(m.clone()),
    };
    let blank = Entry {
        log_id: log_id(1, 6),
        payload: EntryPayload::Blank,
    };
    let out = sm
        .apply(vec![early, bootstrap(2), add(3, 2), add(4, 3), late, blank])
        .await
        .unwrap();
    assert_eq!(out.len(), 6);
    assert!(out.iter().all(|r| r.is_ok()), "{out:?}");
    assert_eq!(
        out.iter().map(|r| r.revision).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    let st = sm.state().read().clone();
    assert_eq!(st.voter_ids(), BTreeSet::from([1, 2]));
    assert_eq!(st.revision, 6);
    let (applied, membership) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 6)));
    assert_eq!(membership.log_id(), &Some(log_id(1, 5)));
    assert_eq!(membership.membership(), &m);
    assert_eq!(*sm.subscribe().borrow(), 6);
}

#[tokio::test]
async fn reset_gives_a_new_id_and_an_empty_store() {
    let td = tempfile::tempdir().unwrap();
    let p = td.path().join("d");
    let d = DataDir::open(&p).unwrap();
    let old = d.node_id();
    d.set_cluster_id(9).unwrap();
    let (mut log, mut sm) = d.open_stores().unwrap();
    log.save_vote(&Vote::new(2, old)).await.unwrap();
    append(&mut log, vec![bootstrap(1), add(2, 2), add(3, 3)]).await;
    log.save_committed(Some(log_id(1, 3))).await.unwrap();
    log.purge(log_id(1, 1)).await.unwrap();
    sm.apply(vec![bootstrap(1)]).await.unwrap();
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    drop((log, sm));
    let new = d.reset().unwrap();
    assert_ne!(new, old);
    assert_ne!(new, 0);
    assert_reset(&d, new).await;
    drop(d);
    // And it stays reset (flushed) across a reopen.
    assert_reset(&DataDir::open(&p).unwrap(), new).await;
}

/// `d` has node id `new`, no cluster id, and empty stores.
async fn assert_reset(d: &DataDir, new: u64) {
    assert_eq!(d.node_id(), new);
    assert_eq!(d.cluster_id(), 0);
    let (mut log, mut sm) = d.open_stores().unwrap();
    assert!(log.try_get_log_entries(0..10).await.unwrap().is_empty());
    let state = log.get_log_state().await.unwrap();
    assert_eq!((state.last_purged_log_id, state.last_log_id), (None, None));
    assert_eq!(log.read_vote().await.unwrap(), None);
    assert_eq!(log.read_committed().await.unwrap(), None);
    assert!(sm.get_current_snapshot().await.unwrap().is_none());
    assert_eq!(sm.applied_state().await.unwrap().0, None);
    assert_eq!(*sm.state().read(), Default::default());
}

#[test]
fn foreign_dir_is_refused_and_left_alone() {
    let td = tempfile::tempdir().unwrap();
    let f = td.path().join("mine.txt");
    std::fs::write(&f, "precious").unwrap();
    let e = DataDir::open(td.path()).expect_err("refused");
    assert!(matches!(e, StoreError::Foreign { .. }), "{e}");
    assert!(
        e.to_string().contains(&td.path().display().to_string()),
        "{e}"
    );
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "precious");
    assert_eq!(std::fs::read_dir(td.path()).unwrap().count(), 1);
}

#[test]
fn corrupt_dir_is_refused_and_left_alone() {
    let td = tempfile::tempdir().unwrap();
    let p = td.path().join("d");
    drop(DataDir::open(&p).unwrap());
    // Garbage over every file of the sled db.
    for e in walk(&p.join("db")) {
        std::fs::write(&e, b"not a sled file at all").unwrap();
    }
    let before = snapshot_files(&p);
    let err = DataDir::open(&p).expect_err("refused");
    assert!(matches!(err, StoreError::Damaged { .. }), "{err}");
    assert_eq!(
        before,
        snapshot_files(&p),
        "nothing was rewritten or deleted"
    );
}

#[test]
fn unknown_marker_is_refused_as_corrupt() {
    let td = tempfile::tempdir().unwrap();
    let p = td.path().join("d");
    drop(DataDir::open(&p).unwrap());
    std::fs::write(p.join("EKKA_DATA"), "ekka-rs data dir, format 99\n").unwrap();
    let before = snapshot_files(&p);
    let err = DataDir::open(&p).expect_err("refused");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert_eq!(before, snapshot_files(&p));
}

/// Every file under `p` but `LOCK`, with its content.
fn snapshot_files(p: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    walk(p)
        .into_iter()
        .map(|f| {
            let b = std::fs::read(&f).unwrap();
            (f, b)
        })
        .collect()
}

fn walk(p: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap().path();
        if e.is_dir() {
            out.extend(walk(&e));
        } else if e.file_name().is_some_and(|n| n != "LOCK") {
            out.push(e);
        }
    }
    out.sort();
    out
}

#[test]
fn second_open_in_the_same_process_is_refused() {
    let td = tempfile::tempdir().unwrap();
    let p = td.path().join("d");
    let first = DataDir::open(&p).unwrap();
    let e = DataDir::open(&p).expect_err("refused");
    assert!(matches!(e, StoreError::Locked { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        format!("data dir {} is in use by another ekka agent", p.display())
    );
    let id = first.node_id();
    drop(first);
    assert_eq!(DataDir::open(&p).unwrap().node_id(), id);
}

#[test]
fn reopen_waits_for_a_handle_of_this_process_being_dropped() {
    let td = tempfile::tempdir().unwrap();
    let p = td.path().join("d");
    let first = DataDir::open(&p).unwrap();
    let id = first.node_id();
    // The last handle goes on another thread a moment after the reopen starts, as the stores
    // of a node dropped just now do on a runtime thread.
    let closing = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        drop(first);
    });
    let again = DataDir::open(&p).expect("reopened once the handle was dropped");
    assert_eq!(again.node_id(), id);
    closing.join().unwrap();
}

#[test]
fn data_dir_in_use_by_another_process_is_refused() {
    let td = tempfile::tempdir().unwrap();
    let p = td.path().join("d");
    let mut child = Child::spawn("hold", &p);
    child.wait_for_line("holding");
    let e = DataDir::open(&p).expect_err("refused");
    assert!(matches!(e, StoreError::Locked { .. }), "{e}");
    child.kill();
    // Once the holder is gone, the dir opens again.
    assert!(DataDir::open(&p).is_ok());
}

/// A child process appends entries one by one straight to the log store (the write path of
/// `append`) and prints `acked <index>` once each is reported durable. After a SIGKILL every
/// acknowledged entry is on disk with its content.
#[test]
fn acknowledged_appends_survive_kill_dash_9() {
    const N_ACKS: u64 = 50;
    let td = tempfile::tempdir().unwrap();
    let p = td.path().join("d");
    let mut child = Child::spawn("append", &p);
    let mut acked = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked < N_ACKS {
        assert!(Instant::now() < deadline, "child too slow: {acked} acks");
        if let Some(i) = child.next_line().strip_prefix("acked ") {
            acked = i.parse().unwrap();
        }
    }
    child.kill(); // SIGKILL, possibly in the middle of the next append

    let dir = DataDir::open(&p).unwrap();
    let (mut log, _) = dir.open_stores().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let got = rt.block_on(log.try_get_log_entries(1..=acked)).unwrap();
    let want: Vec<_> = (1..=acked).map(|i| add(i, i)).collect();
    assert_eq!(got, want, "every acknowledged entry is back");
}

/// A one-node Raft in a child process appends client writes; the child prints `acked <index> <n>`
/// once `client_write` returned, which on a single voter needs the log store's flush callback.
/// After a SIGKILL every acknowledged entry is on disk, and a restarted Raft replays them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_dash_9() {
    const N_ACKS: usize = 50;
    let td = tempfile::tempdir().unwrap();
    let p = td.path().join("d");
    let mut child = Child::spawn("raft", &p);
    let mut acked: Vec<(u64, u64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.len() < N_ACKS {
        assert!(Instant::now() < deadline, "child too slow: {acked:?}");
        let line = child.next_line();
        if let Some(rest) = line.strip_prefix("acked ") {
            let (index, n) = rest.split_once(' ').expect("acked <index> <n>");
            acked.push((index.parse().unwrap(), n.parse().unwrap()));
        }
    }
    child.kill(); // SIGKILL, possibly in the middle of the next append

    let dir = DataDir::open(&p).unwrap();
    let (mut log, sm) = dir.open_stores().unwrap();
    assert!(log.read_vote().await.unwrap().is_some(), "the vote is back");
    for (index, n) in &acked {
        let got = log.try_get_log_entries(*index..=*index).await.unwrap();
        let [e] = &got[..] else {
            panic!("acknowledged entry {index} is missing: {got:?}")
        };
        let EntryPayload::Normal(req) = &e.payload else {
            panic!("entry {index} is {e:?}")
        };
        assert_eq!(*req, child_request(*n), "entry {index}");
    }
    // openraft replays the committed entries into the state machine at startup.
    let state = sm.state();
    let raft = Raft::new(dir.node_id(), raft_config(), NoNetwork, log, sm)
        .await
        .unwrap();
    let last = acked.last().expect("acks").0;
    raft.wait(Some(Duration::from_secs(20)))
        .applied_index_at_least(Some(last), "replayed")
        .await
        .unwrap();
    let members = state.read().members.len() as u64;
    let (_, last_n) = *acked.last().unwrap();
    // Request 0 bootstraps member 1; request n >= 1 adds member n + 1.
    assert!(members > last_n, "{members} members after {last_n} adds");
    raft.shutdown().await.unwrap();
}

/// The request the child's `n`-th write carries: a bootstrap, then one new member each.
fn child_request(n: u64) -> Request {
    let cmd = if n == 0 {
        bootstrap_cmd()
    } else {
        add_cmd(n + 1)
    };
    Request { now_ms: n, cmd }
}

fn raft_config() -> Arc<openraft::Config> {
    let c = openraft::Config {
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        ..Default::default()
    };
    Arc::new(c.validate().unwrap())
}

const CHILD_ENV: &str = "EKKA_STORE_TEST_CHILD";

/// Child side of the multi-process tests; does nothing unless `EKKA_STORE_TEST_CHILD` is set to
/// `<mode>:<data dir>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (mode, path) = spec.split_once(':').expect("mode:path");
    let dir = DataDir::open(std::path::Path::new(path)).expect("child open");
    match mode {
        "append" => {
            let (mut log, _) = dir.open_stores().unwrap();
            for i in 1.. {
                append(&mut log, vec![add(i, i)]).await;
                println!("acked {i}");
            }
        }
        "raft" => {
            let (log, sm) = dir.open_stores().unwrap();
            let id = dir.node_id();
            let raft = Raft::new(id, raft_config(), NoNetwork, log, sm)
                .await
                .unwrap();
            raft.initialize(BTreeSet::from([id])).await.unwrap();
            raft.wait(Some(Duration::from_secs(20)))
                .state(ServerState::Leader, "leader")
                .await
                .unwrap();
            for n in 0.. {
                let r = raft.client_write(child_request(n)).await.unwrap();
                println!("acked {} {n}", r.log_id.index);
            }
        }
        "hold" => {
            println!("holding");
            // Held until the parent kills this process.
            tokio::time::sleep(Duration::from_secs(120)).await;
        }
        other => panic!("unknown child mode {other}"),
    }
}

/// A child test process; killed on drop.
struct Child {
    proc: std::process::Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Child {
    fn spawn(mode: &str, path: &std::path::Path) -> Child {
        let mut proc = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_process", "--nocapture"])
            .env(CHILD_ENV, format!("{mode}:{}", path.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let lines = BufReader::new(proc.stdout.take().unwrap()).lines();
        Child { proc, lines }
    }

    /// The next line of the child's stdout; panics if the child ended.
    fn next_line(&mut self) -> String {
        match self.lines.next() {
            Some(Ok(l)) => l,
            other => panic!("child ended: {other:?}"),
        }
    }

    fn wait_for_line(&mut self, want: &str) {
        while !self.next_line().ends_with(want) {}
    }

    /// SIGKILL, then reap.
    fn kill(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The network of a one-node cluster: every peer is unreachable.
struct NoNetwork;

fn unreachable<E: std::error::Error>() -> RPCError<u64, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other("no network")))
}

impl RaftNetworkFactory<TypeConfig> for NoNetwork {
    type Network = NoNetwork;

    async fn new_client(&mut self, _target: u64, _node: &BasicNode) -> NoNetwork {
        NoNetwork
    }
}

impl RaftNetwork<TypeConfig> for NoNetwork {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        Err(unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(unreachable())
    }
}

/// sled's background I/O can hold its file lock for a moment after a `Db` is dropped; a reopen
/// right after a drop waits for it instead of failing.
#[tokio::test]
async fn reopen_right_after_drop_succeeds() {
    let td = tempfile::tempdir().unwrap();
    let p = td.path().join("d");
    let id = DataDir::open(&p).unwrap().node_id();
    for i in 1..=30 {
        let dir = DataDir::open(&p).unwrap();
        assert_eq!(dir.node_id(), id);
        let (mut log, _) = dir.open_stores().unwrap();
        append(&mut log, vec![add(i, i)]).await;
    }
}

/// Acknowledged means on the device: every durable append, vote and purge is followed by a
/// device sync (`fdatasync` of sled's log), not only sled's `sync_file_range`.
#[tokio::test]
async fn every_acknowledged_write_is_followed_by_a_device_sync() {
    let td = tempfile::tempdir().unwrap();
    let dir = DataDir::open(&td.path().join("d")).unwrap();
    let (mut log, _sm) = dir.open_stores().unwrap();
    let mut syncs = dir.n_device_syncs();
    for i in 1..=5 {
        append(&mut log, vec![add(i, i)]).await;
        let now = dir.n_device_syncs();
        assert!(
            now > syncs,
            "append {i} was acknowledged without a device sync"
        );
        syncs = now;
    }
    log.save_vote(&Vote::new(2, 1)).await.unwrap();
    assert!(dir.n_device_syncs() > syncs, "a vote without a device sync");
}

/// A restarted leader must win a new election instead of resuming its old term (see
/// `LogStore::read_vote`): its committed vote reads back uncommitted, for the same term and node.
#[tokio::test]
async fn a_committed_vote_reads_back_uncommitted() {
    let td = tempfile::tempdir().unwrap();
    let p = td.path().join("d");
    {
        let dir = DataDir::open(&p).unwrap();
        let (mut log, _sm) = dir.open_stores().unwrap();
        log.save_vote(&Vote::new_committed(4, 1)).await.unwrap();
    }
    let dir = DataDir::open(&p).unwrap();
    let (mut log, _sm) = dir.open_stores().unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(4, 1)));
}
