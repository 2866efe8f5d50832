//! Damaged stores are refused at open, untouched: bytes overwritten in the middle of the largest
//! file, the file cut to a third, random bytes at its start; after a clean close (the seal) and
//! after a crash (no seal: sled's recovery on a copy, then the durable watermark). A store that
//! only lost what was never durable (a torn tail) still opens.

use std::path::{Path, PathBuf};

use ekka_store::{DataDir, StoreError, TypeConfig};
use ekka_types::{Command, KvOp, Request};
use openraft::storage::RaftLogStorage;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader};
use rand::{Rng, SeedableRng};

const ENTRIES: u64 = 400;

fn put(index: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Request {
            now_ms: index,
            cmd: Command::Kv(KvOp::Put {
                key: format!("k{index}"),
                value: vec![(index % 251) as u8; 2048],
            }),
        }),
    }
}

/// A new data dir (in a temporary dir) holding `ENTRIES` durable log entries, closed cleanly.
fn filled() -> (tempfile::TempDir, PathBuf) {
    let td = tempfile::tempdir().unwrap();
    let p = td.path().join("d");
    let dir = p.clone();
    std::thread::spawn(move || fill(&dir)).join().unwrap();
    (td, p)
}

fn fill(p: &Path) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = DataDir::open(p).unwrap();
        let (log, _sm) = dir.open_stores().unwrap();
        for chunk in (1..=ENTRIES).collect::<Vec<_>>().chunks(10) {
            log.append_flushed(chunk.iter().map(|&i| put(i)))
                .await
                .unwrap();
        }
    });
}

fn files(p: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), std::fs::read(e.path()).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn largest_file(p: &Path) -> PathBuf {
    files(&p.join("db"))
        .into_iter()
        .max_by_key(|(_, b)| b.len())
        .unwrap()
        .0
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    Middle4k,
    TruncatedToAThird,
    RandomHeader,
}

fn damage(p: &Path, how: Damage, rng: &mut impl Rng) {
    let f = largest_file(p);
    let mut b = std::fs::read(&f).unwrap();
    match how {
        Damage::Middle4k => {
            let at = b.len() / 2;
            let end = (at + 4096).min(b.len());
            rng.fill(&mut b[at..end]);
        }
        Damage::TruncatedToAThird => b.truncate(b.len() / 3),
        Damage::RandomHeader => rng.fill(&mut b[..100]),
    }
    std::fs::write(&f, b).unwrap();
}

fn assert_refused_untouched(p: &Path, case: &str) {
    let before = files(p);
    let err = DataDir::open(p).expect_err(case);
    assert!(matches!(err, StoreError::Damaged { .. }), "{case}: {err}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{}: damaged store: ", p.display())),
        "{case}: {text}"
    );
    assert!(
        text.contains("empty data dir"),
        "{case}: says what to do: {text}"
    );
    assert!(before == files(p), "{case}: the refused dir was changed");
}

fn seed() -> u64 {
    let seed = std::env::var("EKKA_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {seed} (rerun with EKKA_TEST_SEED={seed})");
    seed
}

#[test]
fn damage_after_a_clean_close_is_refused_untouched() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed());
    for how in [
        Damage::Middle4k,
        Damage::TruncatedToAThird,
        Damage::RandomHeader,
    ] {
        let (_td, p) = filled();
        assert!(p.join("CLEAN").exists(), "a clean close leaves the seal");
        damage(&p, how, &mut rng);
        assert_refused_untouched(&p, &format!("{how:?} after a clean close"));
    }
}

/// Overwrites, with random bytes, 4 KiB at every place the value of entry `index` is stored
/// (sled may keep old copies in dead segments; one of them is the live one).
fn damage_entry(p: &Path, index: u64, rng: &mut impl Rng) -> usize {
    let f = p.join("db").join("db");
    let mut b = std::fs::read(&f).unwrap();
    let run = [(index % 251) as u8; 256];
    let mut hits = 0;
    let mut at = 0;
    while let Some(pos) = b[at..].windows(run.len()).position(|w| w == run) {
        let start = at + pos;
        let end = (start + 4096).min(b.len());
        rng.fill(&mut b[start..end]);
        hits += 1;
        at = end;
    }
    std::fs::write(&f, b).unwrap();
    hits
}

#[test]
fn damage_to_live_data_after_a_crash_is_refused_untouched() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed());
    let (_td, p) = filled();
    // Without the seal, the open cannot tell this from a crash after the last flush.
    std::fs::remove_file(p.join("CLEAN")).unwrap();
    // Entry 200's value is the only one of its bytes (index % 251), and one copy is live.
    assert!(
        damage_entry(&p, 200, &mut rng) > 0,
        "entry 200 not found in db/db"
    );
    assert_refused_untouched(&p, "entry 200 overwritten after a crash");
}

/// Without a seal, bytes changed where sled keeps nothing live cannot be told from a crash: the
/// store is then refused untouched, or opens with every entry, never with fewer.
#[tokio::test]
async fn any_damage_after_a_crash_is_refused_or_loses_nothing() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed());
    for how in [
        Damage::Middle4k,
        Damage::TruncatedToAThird,
        Damage::RandomHeader,
    ] {
        let (_td, p) = filled();
        std::fs::remove_file(p.join("CLEAN")).unwrap();
        damage(&p, how, &mut rng);
        let before = files(&p);
        match DataDir::open(&p) {
            Err(err) => {
                assert!(matches!(err, StoreError::Damaged { .. }), "{how:?}: {err}");
                assert!(before == files(&p), "{how:?}: the refused dir was changed");
            }
            Ok(dir) => {
                let (mut log, _sm) = dir.open_stores().unwrap();
                let all = log.try_get_log_entries(0..).await.unwrap();
                assert!(
                    all == (1..=ENTRIES).map(put).collect::<Vec<_>>(),
                    "{how:?}: opened with {} of {ENTRIES} entries",
                    all.len()
                );
            }
        }
    }
}

#[tokio::test]
async fn a_healthy_store_opens_with_or_without_the_seal() {
    let (_td, p) = filled();
    for sealed in [true, false] {
        if !sealed {
            std::fs::remove_file(p.join("CLEAN")).unwrap();
        }
        let dir = DataDir::open(&p).unwrap();
        assert!(!p.join("CLEAN").exists(), "the seal goes before sled opens");
        let (mut log, _sm) = dir.open_stores().unwrap();
        let last = log.get_log_state().await.unwrap().last_log_id.unwrap();
        assert_eq!(last.index, ENTRIES);
        assert_eq!(
            log.try_get_log_entries(ENTRIES..).await.unwrap(),
            vec![put(ENTRIES)]
        );
        drop((log, _sm, dir));
    }
}

#[tokio::test]
async fn a_truncated_log_is_not_damage() {
    let (_td, p) = filled();
    {
        let dir = DataDir::open(&p).unwrap();
        let (mut log, _sm) = dir.open_stores().unwrap();
        // Raft cut its own tail (a new leader's log won): the watermark follows it down.
        log.truncate(LogId::new(CommittedLeaderId::new(1, 1), 100))
            .await
            .unwrap();
    }
    std::fs::remove_file(p.join("CLEAN")).unwrap();
    let dir = DataDir::open(&p).expect("a cut the store made itself is not damage");
    let (mut log, _sm) = dir.open_stores().unwrap();
    assert_eq!(
        log.get_log_state()
            .await
            .unwrap()
            .last_log_id
            .unwrap()
            .index,
        99
    );
}

#[tokio::test]
async fn a_reset_store_opens() {
    let (_td, p) = filled();
    {
        let dir = DataDir::open(&p).unwrap();
        dir.reset().unwrap();
    }
    std::fs::remove_file(p.join("CLEAN")).unwrap();
    DataDir::open(&p).expect("an empty log after a reset is not damage");
}
