//! Replays the committed fuzz corpus (`fuzz/corpus/apply/`) and seeded random inputs through the
//! body of the `apply` fuzz target, on stable Rust.

use std::path::PathBuf;

use ekka_types::fuzzing::run_apply_sequence;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/apply")
}

/// Fails when the corpus is missing or empty, so it cannot pass without replaying anything.
#[test]
fn committed_corpus_replays_cleanly() {
    let dir = corpus_dir();
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {} is missing: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| {
            e.unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
                .path()
        })
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    for f in &files {
        let data = std::fs::read(f).unwrap_or_else(|e| panic!("reading {}: {e}", f.display()));
        if let Err(e) = run_apply_sequence(&data) {
            panic!(
                "{}: {e}\nrerun in the fuzzer: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run apply {}",
                f.display(),
                f.display()
            );
        }
    }
    println!(
        "replayed {} corpus files from {}",
        files.len(),
        dir.display()
    );
}

/// xorshift64*: enough to vary inputs; the seed is printed so a failure can be rerun.
fn next(s: &mut u64) -> u64 {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    s.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

const CASES: usize = 3000;

#[test]
fn seeded_random_sequences_hold_the_invariants() {
    let seed = match std::env::var("EKKA_FUZZ_SEED") {
        Ok(s) => s
            .parse::<u64>()
            .unwrap_or_else(|e| panic!("EKKA_FUZZ_SEED={s:?} is not a u64: {e}")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    };
    println!(
        "seed {seed}; rerun with EKKA_FUZZ_SEED={seed} cargo test -p ekka-types --test fuzz_corpus \
         -- --nocapture"
    );
    // xorshift never leaves 0.
    let mut s = seed.max(1);
    let mut total_bytes = 0;
    for case in 0..CASES {
        // Mostly short sequences, one in 16 long enough for a few hundred steps.
        let max_len = if next(&mut s).is_multiple_of(16) {
            2000
        } else {
            200
        };
        let len = (next(&mut s) % max_len) as usize;
        let data: Vec<u8> = (0..len).map(|_| (next(&mut s) >> 56) as u8).collect();
        total_bytes += len;
        if let Err(e) = run_apply_sequence(&data) {
            panic!(
                "seed {seed} case {case}: {e}\n{len} bytes: {data:?}\n\
                 rerun with EKKA_FUZZ_SEED={seed} cargo test -p ekka-types --test fuzz_corpus"
            );
        }
    }
    println!("{CASES} random inputs, {total_bytes} bytes, all held");
}
