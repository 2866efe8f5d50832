//! Seeded random sequences of lock and key-value commands (alone and in batches, with leader
//! changes and clocks that jump back and forth) against the rules `apply` must keep: invariants
//! after every step, determinism, a clock that never goes back, tokens and key revisions that only
//! grow, first-come-first-served lines, and holders that change only by a grant.
//!
//! Rerun a failure with `EKKA_FUZZ_SEED=<seed> cargo test -p ekka-types --test data_fuzz`.

use ekka_types::fuzzing::check_data_step;
use ekka_types::kv::KvOp;
use ekka_types::lock::LockOp;
use ekka_types::{ClusterState, Command, DataCommand, Outcome, Request};

const CASES: usize = 300;
const STEPS: usize = 300;

fn next(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn pick<'a>(s: &mut u64, v: &[&'a str]) -> &'a str {
    v[(next(s) % v.len() as u64) as usize]
}

fn op(s: &mut u64) -> Command {
    let res = pick(s, &["a", "b", "c"]).to_string();
    let owner = pick(s, &["o1", "o2", "o3", "o4"]).to_string();
    let key = pick(s, &["k1", "k2", "k3", "x/1", "x/2"]).to_string();
    let token = next(s) % 4_000 + 1_000;
    match next(s) % 9 {
        0 | 1 => Command::Lock(LockOp::Acquire {
            resource: res,
            owner,
            ttl_ms: 100 + next(s) % 1_000,
            wait_ms: [0, 0, 500, 5_000][(next(s) % 4) as usize],
        }),
        2 => Command::Lock(LockOp::Renew {
            resource: res,
            token,
            ttl_ms: 0,
        }),
        3 => Command::Lock(LockOp::Release {
            resource: res,
            token,
        }),
        4 => Command::Lock(LockOp::Abandon {
            resource: res,
            owner,
            after: token,
        }),
        5 => Command::ExpireLocks,
        6 => Command::Kv(KvOp::Put {
            key,
            value: vec![b'v'; (next(s) % 40) as usize],
        }),
        7 => Command::Kv(KvOp::Delete { key }),
        _ => Command::Kv(KvOp::Cas {
            key,
            expect: [0, token][(next(s) % 2) as usize],
            value: Some(b"c".to_vec()),
        }),
    }
}

#[test]
fn seeded_random_lock_and_key_sequences_keep_the_rules() {
    let seed: u64 = match std::env::var("EKKA_FUZZ_SEED") {
        Ok(s) => s.parse().expect("EKKA_FUZZ_SEED is a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    };
    println!("seed {seed}; rerun with EKKA_FUZZ_SEED={seed}");
    let mut s = seed.max(1);
    let mut grants = 0;
    for case in 0..CASES {
        let mut st = ClusterState::default();
        let boot = Command::Bootstrap {
            cluster_id: 7,
            id: 1,
            name: "n1".into(),
            addr: "127.0.0.1:1".into(),
            max_voters: 5,
        };
        st.apply(
            1,
            &Request {
                now_ms: 1_000,
                cmd: boot,
            },
        );
        let mut twin = st.clone();
        let mut now = 1_000u64;
        for step in 0..STEPS {
            let idx = step as u64 + 2;
            let before = st.clone();
            let mut fifo = true;
            // A leader change now and then, with a clock that may be behind or ahead.
            if next(&mut s).is_multiple_of(29) {
                let leader = next(&mut s) % 3 + 1;
                st.leader_elected(idx, leader);
                twin.leader_elected(idx, leader);
                now = now.saturating_sub(300) + next(&mut s) % 900;
            } else {
                now += next(&mut s) % 200;
                fifo = !next(&mut s).is_multiple_of(4);
                let cmd = if !fifo {
                    Command::Batch(
                        (0..next(&mut s) % 6 + 1)
                            .filter_map(|_| DataCommand::try_from(op(&mut s)).ok())
                            .collect(),
                    )
                } else {
                    op(&mut s)
                };
                let req = Request { now_ms: now, cmd };
                let r = st.apply(idx, &req);
                let r2 = twin.apply(idx, &req);
                assert_eq!(
                    r, r2,
                    "seed {seed} case {case} step {step}: not deterministic"
                );
                if let Outcome::Granted { .. } = r.outcome {
                    grants += 1;
                }
            }
            if let Err(e) = check_data_step(&before, &st, idx, fifo) {
                panic!("seed {seed} case {case} step {step}: {e}");
            }
            assert_eq!(
                st, twin,
                "seed {seed} case {case} step {step}: replicas differ"
            );
        }
    }
    assert!(grants > 0, "the sequences never granted a lock");
}
