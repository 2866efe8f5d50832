//! The body of the `apply` fuzz target: decodes bytes into a sequence of leader-stamped commands,
//! applies them to a fresh `ClusterState`, and checks the invariants after every step.
//!
//! Also replayed over the committed corpus by a stable test (`tests/fuzz_corpus.rs`).

use crate::command::{Command, RemoveReason, Request};
use crate::state::ClusterState;

const NAMES: [&str; 8] = ["n1", "n2", "n3", "n4", "n5", "n6", "bad name", ""];
const ADDRS: [&str; 6] = [
    "127.0.0.1:1",
    "127.0.0.1:2",
    "127.0.0.1:3",
    "[::1]:4",
    "nowhere",
    "h:0",
];
const MAX_VOTERS: [u32; 6] = [1, 3, 5, 4, 0, 11];

/// Reads bytes, yielding 0 past the end.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
}

fn ids_from_bits(bits: u8) -> Vec<u64> {
    (0..8)
        .filter(|i| bits & (1 << i) != 0)
        .map(|i| i + 1)
        .collect()
}

/// Decodes `data` into `(log index, request)` steps. Every 4 bytes make one step.
pub fn decode(data: &[u8]) -> Vec<(u64, Request)> {
    let mut b = Bytes(data);
    let mut steps = Vec::new();
    let mut idx = 0u64;
    for _ in 0..data.len().div_ceil(4).min(4096) {
        let (op, x, y, z) = (b.next(), b.next(), b.next(), b.next());
        // Mostly the next index; sometimes a replay of an old one, sometimes a gap.
        idx = match z % 16 {
            0 => idx.saturating_sub(u64::from(y % 3)),
            1 => idx + 2,
            _ => idx + 1,
        };
        let id = u64::from(x % 8) + 1;
        let name = NAMES[usize::from(y) % NAMES.len()].to_string();
        let addr = ADDRS[usize::from(y / 8) % ADDRS.len()].to_string();
        let cmd = match op % 9 {
            0 => Command::Bootstrap {
                cluster_id: u64::from(y % 3),
                id,
                name,
                addr,
                max_voters: MAX_VOTERS[usize::from(z / 16) % MAX_VOTERS.len()],
            },
            1 | 2 => Command::AddMember { id, name, addr },
            3 => Command::MarkUp {
                id,
                addr: (y % 2 == 0).then_some(addr),
            },
            4 => Command::MarkDown { id },
            5 => Command::MarkLeaving { id },
            6 => Command::SetRoles {
                voters: ids_from_bits(y),
                learners: ids_from_bits(z),
            },
            7 => Command::RemoveMember {
                id,
                reason: if y % 2 == 0 {
                    RemoveReason::Left
                } else {
                    RemoveReason::Removed
                },
            },
            _ => Command::Noop,
        };
        steps.push((
            idx,
            Request {
                now_ms: u64::from(x) * 1000 + u64::from(z),
                cmd,
            },
        ));
    }
    steps
}

/// Applies the decoded sequence, checking after every step that:
/// the invariants of [`ClusterState::check_invariants`] hold (one member per name, voters within
/// `max_voters`, ...); the revision never decreases and equals the index of a fresh entry; a
/// refused command changed nothing but the revision; a replayed (stale) entry changed nothing;
/// and applying the same sequence again gives the same state.
pub fn run_apply_sequence(data: &[u8]) -> Result<(), String> {
    let steps = decode(data);
    let mut st = ClusterState::default();
    for (n, (idx, req)) in steps.iter().enumerate() {
        let before = st.clone();
        let resp = st.apply(*idx, req);
        let at = || format!("step {n} (index {idx}, {:?})", req.cmd);
        let stale = *idx <= before.revision && before.revision != 0;
        if stale {
            if st != before || resp.is_ok() {
                return Err(format!("{}: a stale entry changed the state", at()));
            }
        } else {
            if st.revision != *idx {
                return Err(format!(
                    "{}: revision {} after applying index {idx}",
                    at(),
                    st.revision
                ));
            }
            if resp.revision != *idx {
                return Err(format!("{}: response revision {}", at(), resp.revision));
            }
            if !resp.is_ok() {
                let mut expect = before.clone();
                expect.revision = *idx;
                if st != expect {
                    return Err(format!(
                        "{}: refused ({:?}) but the state changed",
                        at(),
                        resp.rejected
                    ));
                }
            }
        }
        if st.revision < before.revision {
            return Err(format!("{}: revision went backwards", at()));
        }
        st.check_invariants()
            .map_err(|e| format!("{}: {e}", at()))?;
    }
    let mut again = ClusterState::default();
    for (idx, req) in &steps {
        again.apply(*idx, req);
    }
    if again != st {
        return Err("applying the same sequence twice gave different states".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::{Member, Role, Status};

    #[test]
    fn empty_and_short_inputs_are_fine() {
        run_apply_sequence(&[]).unwrap();
        run_apply_sequence(&[0]).unwrap();
        run_apply_sequence(&[0, 1, 2, 3, 4, 5, 6]).unwrap();
    }

    #[test]
    fn the_invariant_check_catches_a_duplicate_name() {
        let mut st = ClusterState {
            cluster_id: 1,
            max_voters: 3,
            ..Default::default()
        };
        for id in [1, 2] {
            st.members.insert(
                id,
                Member {
                    id,
                    name: "same".into(),
                    addr: "127.0.0.1:1".into(),
                    role: Role::Learner,
                    status: Status::Up,
                    since_ms: 0,
                    joined_at_ms: 0,
                },
            );
        }
        assert!(st.check_invariants().unwrap_err().contains("same"));
    }

    #[test]
    fn a_bootstrap_then_joins_decode_as_expected() {
        // op 0 (bootstrap) id 1 name n1; then op 1 (add) id 2 name n2.
        let steps = decode(&[0, 0, 0, 0x22, 1, 1, 1, 2]);
        assert!(matches!(steps[0].1.cmd, Command::Bootstrap { .. }));
        assert!(matches!(steps[1].1.cmd, Command::AddMember { id: 2, .. }));
    }
}
