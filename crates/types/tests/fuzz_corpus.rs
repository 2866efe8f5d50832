//! Replays the committed fuzz corpus (`fuzz/corpus/apply/`) and seeded random inputs through the
//! fuzz target's body, on stable Rust.

use std::path::PathBuf;

use ekka_types::fuzzing::run_apply_sequence;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/apply")
}

#[test]
fn committed_corpus_replays_cleanly() {
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {} is missing: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "corpus too small: {} files", files.len());
    for f in &files {
        let data = std::fs::read(f).expect("read corpus file");
        if let Err(e) = run_apply_sequence(&data) {
            panic!("{}: {e}", f.display());
        }
    }
    println!("replayed {} corpus files", files.len());
}

/// xorshift64*: enough to vary inputs; the seed is printed so a failure can be rerun.
fn next(s: &mut u64) -> u64 {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    s.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[test]
fn seeded_random_sequences_hold_the_invariants() {
    let seed = std::env::var("EKKA_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    println!(
        "seed {seed}; rerun with EKKA_FUZZ_SEED={seed} cargo test -p ekka-types --test fuzz_corpus"
    );
    let mut s = seed;
    for case in 0..3000 {
        let len = (next(&mut s) % 400) as usize;
        let data: Vec<u8> = (0..len).map(|_| next(&mut s) as u8).collect();
        if let Err(e) = run_apply_sequence(&data) {
            panic!("seed {seed} case {case} ({len} bytes {data:?}): {e}");
        }
    }
}
