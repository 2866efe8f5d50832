//! A damaged data dir is refused at start (exit 2, `error: invalid_config: <path>: damaged
//! store: …`) and not one byte of it changes; a copy of a healthy one still starts and serves
//! every key. The agent is stopped cleanly (SIGTERM), as an operator copying a data dir would.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{copy_dir, Cluster, BIN, COOKIE};
use rand::{Rng, SeedableRng};

const KEYS: usize = 50;

/// Every file under `p` with its bytes, sorted by path.
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

/// Starts an agent on `dir` expecting it to refuse; returns (exit code, stderr).
fn start_refused(dir: &Path) -> (i32, String) {
    let mut child = Command::new(BIN)
        .args([
            "agent",
            "--name",
            "n1",
            "--listen",
            "127.0.0.1:0",
            "--cookie",
            COOKIE,
        ])
        .arg("--data-dir")
        .arg(dir)
        .env("EKKA_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (
                status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the agent started on a damaged data dir: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn t80_damaged_store_is_refused_untouched() {
    let seed: u64 = std::env::var("EKKA_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {seed} (rerun with EKKA_TEST_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let mut c = Cluster::new();
    c.start("n1", &[]);
    for i in 0..KEYS {
        c.get("n1")
            .cli(&["kv", "put", &format!("k{i}"), &format!("value-{i}")])
            .ok();
    }
    c.get_mut("n1").stop();
    let src = c.path("n1");

    // A healthy copy starts and serves every key.
    let healthy = c.dir.path().join("healthy");
    copy_dir(&src, &healthy);
    let a = common::Agent::start("n1", &healthy, &[]);
    for i in 0..KEYS {
        let out = a.cli(&["kv", "get", &format!("k{i}")]);
        assert!(out.ok().contains(&format!("value-{i}")), "k{i}: {out:?}");
    }
    drop(a);

    let largest = |dir: &Path| {
        files(&dir.join("db"))
            .into_iter()
            .max_by_key(|(_, b)| b.len())
            .unwrap()
            .0
    };
    type Damage = fn(&mut Vec<u8>, &mut rand::rngs::StdRng);
    let cases: [(&str, Damage); 3] = [
        ("4 KiB overwritten in the middle", |b, rng| {
            let at = b.len() / 2;
            let end = (at + 4096).min(b.len());
            rng.fill(&mut b[at..end]);
        }),
        ("cut to a third", |b, _| b.truncate(b.len() / 3)),
        ("100 random bytes at offset 0", |b, rng| {
            rng.fill(&mut b[..100])
        }),
    ];
    for (i, (what, damage)) in cases.iter().enumerate() {
        let dir = c.dir.path().join(format!("damaged{i}"));
        copy_dir(&src, &dir);
        let f = largest(&dir);
        let mut b = std::fs::read(&f).unwrap();
        damage(&mut b, &mut rng);
        std::fs::write(&f, b).unwrap();
        let before = files(&dir);
        let (code, stderr) = start_refused(&dir);
        assert_eq!(code, 2, "{what}: {stderr}");
        let line = stderr.lines().last().unwrap_or_default();
        assert!(
            line.starts_with(&format!(
                "error: invalid_config: {}: damaged store: ",
                dir.display()
            )),
            "{what}: {stderr}"
        );
        assert!(
            before == files(&dir),
            "{what}: the refused data dir changed"
        );
    }
}
