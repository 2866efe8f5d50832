//! The store on disk: reopen, snapshot install, a kill -9 during appends, and refusing data dirs
//! that are locked, foreign or corrupt.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ekka_store::{DataDir, StoreError, TypeConfig};
use ekka_types::{Command as Cmd, Request};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftLogReader,
    RaftSnapshotBuilder, Vote,
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

fn bootstrap(index: u64) -> Entry<TypeConfig> {
    entry(
        index,
        Cmd::Bootstrap {
            cluster_id: 7,
            id: 1,
            name: "n1".into(),
            addr: "127.0.0.1:1".into(),
            max_voters: 5,
        },
    )
}

fn add(index: u64, id: u64) -> Entry<TypeConfig> {
    entry(
        index,
        Cmd::AddMember {
            id,
            name: format!("n{id}"),
            addr: format!("127.0.0.1:{id}"),
        },
    )
}

/// Appends and waits until the store reports them durable.
async fn append(log: &mut ekka_store::LogStore, entries: Vec<Entry<TypeConfig>>) {
    log.append_flushed(entries).await.expect("append");
}

#[tokio::test]
async fn reopen_keeps_vote_log_and_snapshot() {
    let td = tempfile::tempdir().unwrap();
    let path = td.path().join("d");
    let node_id;
    {
        let dir = DataDir::open(&path).unwrap();
        node_id = dir.node_id();
        dir.set_cluster_id(7).unwrap();
        let (mut log, mut sm) = dir.open_stores().unwrap();
        log.save_vote(&Vote::new(3, 1)).await.unwrap();
        let entries = vec![bootstrap(1), add(2, 2), add(3, 3)];
        append(&mut log, entries.clone()).await;
        sm.apply(entries).await.unwrap();
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        log.save_committed(Some(log_id(1, 3))).await.unwrap();
    }
    let dir = DataDir::open(&path).unwrap();
    assert_eq!(dir.node_id(), node_id);
    assert_eq!(dir.cluster_id(), 7);
    let (mut log, mut sm) = dir.open_stores().unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 3)));
    let got = log.try_get_log_entries(1..4).await.unwrap();
    assert_eq!(got.len(), 3);
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 3)));
    let st = sm.state();
    let st = st.read().unwrap();
    assert_eq!(st.members.len(), 3);
    assert_eq!(st.revision, 3);
}

#[tokio::test]
async fn install_snapshot_replaces_the_state() {
    let td = tempfile::tempdir().unwrap();
    let a = DataDir::open(&td.path().join("a")).unwrap();
    let b = DataDir::open(&td.path().join("b")).unwrap();
    let (_, mut sa) = a.open_stores().unwrap();
    let (_, mut sb) = b.open_stores().unwrap();
    sa.apply(vec![bootstrap(1), add(2, 2)]).await.unwrap();
    // b holds members a's snapshot does not have; they must not survive the install.
    sb.apply(vec![bootstrap(1), add(2, 5), add(3, 6), add(4, 7)])
        .await
        .unwrap();
    let snap = sa
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    sb.install_snapshot(&snap.meta, snap.snapshot)
        .await
        .unwrap();
    let ids: Vec<u64> = sb.state().read().unwrap().members.keys().copied().collect();
    assert_eq!(ids, vec![1, 2]);
    let current = sb.get_current_snapshot().await.unwrap().expect("snapshot");
    assert_eq!(current.meta, snap.meta);
}

#[tokio::test]
async fn membership_entries_set_roles() {
    let td = tempfile::tempdir().unwrap();
    let d = DataDir::open(&td.path().join("d")).unwrap();
    let (_, mut sm) = d.open_stores().unwrap();
    let mut nodes = std::collections::BTreeMap::new();
    for id in [1u64, 2] {
        nodes.insert(
            id,
            BasicNode {
                addr: format!("127.0.0.1:{id}"),
            },
        );
    }
    let m = Membership::new(vec![[1u64, 2].into()], nodes);
    let e = Entry {
        log_id: log_id(1, 3),
        payload: EntryPayload::Membership(m),
    };
    let out = sm.apply(vec![bootstrap(1), add(2, 2), e]).await.unwrap();
    assert!(out.iter().all(|r| r.rejected.is_none()), "{out:?}");
    assert_eq!(sm.state().read().unwrap().voter_ids().len(), 2);
}

#[tokio::test]
async fn reset_gives_a_new_id_and_an_empty_store() {
    let td = tempfile::tempdir().unwrap();
    let d = DataDir::open(&td.path().join("d")).unwrap();
    let old = d.node_id();
    d.set_cluster_id(9).unwrap();
    let (mut log, mut sm) = d.open_stores().unwrap();
    append(&mut log, vec![bootstrap(1)]).await;
    sm.apply(vec![bootstrap(1)]).await.unwrap();
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    drop((log, sm));
    let new = d.reset().unwrap();
    assert_ne!(new, old);
    assert_eq!(d.node_id(), new);
    assert_eq!(d.cluster_id(), 0);
    let (mut log, mut sm) = d.open_stores().unwrap();
    assert!(log.try_get_log_entries(0..10).await.unwrap().is_empty());
    assert_eq!(log.read_vote().await.unwrap(), None);
    assert!(sm.get_current_snapshot().await.unwrap().is_none());
    assert!(sm.state().read().unwrap().members.is_empty());
}

#[test]
fn foreign_dir_is_refused_and_left_alone() {
    let td = tempfile::tempdir().unwrap();
    let f = td.path().join("mine.txt");
    std::fs::write(&f, "precious").unwrap();
    let e = DataDir::open(td.path()).err().expect("refused");
    assert!(matches!(e, StoreError::Foreign { .. }), "{e}");
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
    let before: Vec<_> = walk(&p)
        .into_iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    let err = DataDir::open(&p).err().expect("refused");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    let after: Vec<_> = walk(&p)
        .into_iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    assert_eq!(before, after, "nothing was rewritten");
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

const CHILD_ENV: &str = "EKKA_STORE_TEST_CHILD";

/// Child side of the tests below; does nothing unless the parent set `EKKA_STORE_TEST_CHILD`.
#[tokio::test]
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
        _ => {
            println!("holding");
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    }
}

fn spawn_child(mode: &str, path: &std::path::Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{mode}:{}", path.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn acknowledged_appends_survive_kill_dash_9() {
    let td = tempfile::tempdir().unwrap();
    let p = td.path().join("d");
    let mut child = spawn_child("append", &p);
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    for l in lines {
        let l = l.unwrap();
        if let Some(n) = l.strip_prefix("acked ") {
            acked = n.parse().unwrap();
            if acked >= 50 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "child too slow");
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(acked >= 50, "child acknowledged only {acked} appends");
    let dir = DataDir::open(&p).unwrap();
    let (mut log, _) = dir.open_stores().unwrap();
    let got = log.try_get_log_entries(1..=acked).await.unwrap();
    assert_eq!(got.len() as u64, acked, "every acknowledged entry is back");
    for (i, e) in got.iter().enumerate() {
        assert_eq!(*e, add(i as u64 + 1, i as u64 + 1));
    }
}

#[test]
fn data_dir_in_use_by_another_process_is_refused() {
    let td = tempfile::tempdir().unwrap();
    let p = td.path().join("d");
    let mut child = spawn_child("hold", &p);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.ends_with("holding") => break,
            Some(Ok(_)) => {}
            other => panic!("child ended: {other:?}"),
        }
    }
    let e = DataDir::open(&p).err().expect("refused");
    assert!(matches!(e, StoreError::Locked { .. }), "{e}");
    child.kill().unwrap();
    child.wait().unwrap();
    // Once the holder is gone, the dir opens again with the same identity.
    assert!(DataDir::open(&p).is_ok());
}
