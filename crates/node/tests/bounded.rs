//! Bounded resources: with large values, the log is compacted by its byte budget
//! (`NodeConfig::snapshot_log_bytes`), long before the entry count (`snapshot_every`), so the
//! log and the data dir follow the state's size, not the write volume.

use std::path::Path;
use std::time::{Duration, Instant};

use ekka_node::{LogStats, Node, NodeConfig, MIN_SNAPSHOT_LOG_BYTES};

const VALUE_BYTES: usize = 64 * 1024;

/// Bytes the files under `path` take on the disk (as `du`).
fn du_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(path)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => du_bytes(&e.path()),
                    Ok(m) => m.blocks() * 512,
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

async fn wait_stats(n: &Node, what: &str, f: impl Fn(&LogStats) -> bool) -> LogStats {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = n.log_stats();
        if f(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: never reached, at {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwriting_a_large_value_keeps_the_log_and_the_data_dir_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let budget = MIN_SNAPSHOT_LOG_BYTES;
    let mut c = NodeConfig::new("a", dir.path().join("a"));
    c.listen = "127.0.0.1:0".into();
    c.snapshot_log_bytes = budget;
    assert_eq!(c.snapshot_every, 5000);
    let n = Node::start(c).await.expect("start");

    // 40 budgets' worth of log entries, for one key.
    let writes = 40 * budget as usize / VALUE_BYTES;
    for i in 0..writes {
        let mut v = vec![b'v'; VALUE_BYTES];
        v[..8].copy_from_slice(&(i as u64).to_be_bytes());
        n.kv_put("big", v).await.expect("put");
    }
    let last = n.log_stats().last_log_index.expect("a log");
    assert!(last < 5000, "the entry count alone would not snapshot yet");

    // Snapshotted by bytes, and purged: at most about two budgets of entries stay in the log.
    let per_budget = budget / VALUE_BYTES as u64;
    let s = wait_stats(&n, "snapshot and purge by bytes", |s| {
        let kept = s.last_log_index.unwrap_or(0) - s.purged_index.unwrap_or(0);
        s.snapshot_index.is_some() && kept <= 3 * per_budget
    })
    .await;
    println!("log after {writes} overwrites of {VALUE_BYTES} bytes: {s:?}");
    assert!(s.appended_bytes >= writes as u64 * VALUE_BYTES as u64);

    // And the data dir follows: well under the bytes written. (What stays is the log, up to
    // about two budgets, the snapshots, which carry the retained key-value events, up to
    // `MAX_KV_EVENT_BYTES`, and the space sled has not reclaimed yet.)
    let written = writes as u64 * VALUE_BYTES as u64;
    let disk = du_bytes(&dir.path().join("a"));
    println!(
        "data dir: {} KiB after writing {} KiB",
        disk / 1024,
        written / 1024
    );
    assert!(
        disk < written / 2,
        "data dir of {disk} bytes after {written} bytes of overwrites of one key"
    );
    n.shutdown().await;
}
