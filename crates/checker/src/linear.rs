//! Linearizability of one key's operations against a register with revisions, by a Wing–Gong
//! search with memoization on (operations linearized, state), as Porcupine does it.
//!
//! The register holds a value (or nothing) and the `mod_revision` of the write that made it. A
//! write's revision is known when it was acknowledged; an operation whose outcome is unknown may
//! take effect at any point after its invocation, or never, and its revision stays unknown until a
//! read shows it. Revisions strictly increase in log order, so every write lies above every
//! revision known before it (`floor`). Calls that failed (exit 1) never took effect and are left
//! out, except a cas that failed with `compare_failed`, which saw the key at another revision.

use std::collections::{HashMap, HashSet};

use crate::history::{Call, Micros, Op, Outcome, Ret};

/// One operation as the model sees it (values interned per key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Put {
        v: u32,
        rev: Option<u64>,
    },
    Get {
        v: Option<u32>,
        rev: Option<u64>,
    },
    Cas {
        expect: u64,
        v: u32,
        rev: Option<u64>,
    },
    CasFailed {
        expect: u64,
    },
    /// `None`: unknown outcome.
    Delete {
        existed: Option<bool>,
    },
}

/// The register: value, its revision when known, and the highest revision known so far.
#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq)]
struct State {
    v: Option<u32>,
    rev: Option<u64>,
    floor: u64,
}

impl State {
    /// The state after `s`, or `None` when `s` cannot happen in this state.
    fn step(self, s: Step) -> Option<State> {
        match s {
            Step::Put { v, rev } => self.write(v, rev, self.floor),
            Step::Get { v: None, .. } => self.v.is_none().then_some(self),
            Step::Get { v: Some(v), rev } => {
                if self.v != Some(v) {
                    return None;
                }
                match (self.rev, rev) {
                    (Some(a), Some(b)) => (a == b).then_some(self),
                    // The write that made this value had an unknown revision: the read shows it.
                    (None, Some(b)) => (b > self.floor).then_some(State {
                        rev: Some(b),
                        floor: b,
                        ..self
                    }),
                    (_, None) => Some(self),
                }
            }
            Step::Cas { expect, v, rev } => {
                if !self.at(expect) {
                    return None;
                }
                let mut s = self;
                if expect > 0 && s.rev.is_none() {
                    s.rev = Some(expect);
                    s.floor = expect;
                }
                s.write(v, rev, s.floor.max(expect))
            }
            Step::CasFailed { expect } => {
                let surely_at = if expect == 0 {
                    self.v.is_none()
                } else {
                    self.v.is_some() && self.rev == Some(expect)
                };
                (!surely_at).then_some(self)
            }
            Step::Delete {
                existed: Some(true),
            } => self.v.is_some().then_some(State {
                v: None,
                rev: None,
                floor: self.floor,
            }),
            Step::Delete {
                existed: Some(false),
            } => self.v.is_none().then_some(self),
            Step::Delete { existed: None } => Some(State {
                v: None,
                rev: None,
                floor: self.floor,
            }),
        }
    }

    /// Whether the key may be at revision `expect` (0: absent).
    fn at(self, expect: u64) -> bool {
        if expect == 0 {
            return self.v.is_none();
        }
        self.v.is_some()
            && match self.rev {
                Some(r) => r == expect,
                None => expect > self.floor,
            }
    }

    fn write(self, v: u32, rev: Option<u64>, floor: u64) -> Option<State> {
        match rev {
            Some(r) if r <= floor => None,
            Some(r) => Some(State {
                v: Some(v),
                rev: Some(r),
                floor: r,
            }),
            None => Some(State {
                v: Some(v),
                rev: None,
                floor,
            }),
        }
    }
}

/// The result of checking one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyVerdict {
    Linearizable,
    /// No order explains the history. `explain` names the longest linearizable prefix found and
    /// the operations that could not follow it.
    NotLinearizable {
        explain: String,
    },
    /// The search ran past its budget.
    Unknown {
        steps: u64,
    },
}

struct Entry {
    op: usize,
    call: bool,
}

/// The model's view of the history's operations on `key`: (index in the history, step, must it
/// be linearized).
fn steps_of<'a>(ops: &'a [Op], key: &str) -> Vec<(usize, Step, bool)> {
    let mut values: HashMap<&'a str, u32> = HashMap::new();
    let mut intern = |v: &'a str| {
        let n = values.len() as u32;
        *values.entry(v).or_insert(n)
    };
    let mut out = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        if op.call.key() != Some(key) {
            continue;
        }
        let unknown = op.is_unknown();
        let step = match (&op.call, &op.outcome) {
            (_, Outcome::Failed { code, .. }) => match &op.call {
                Call::Cas { rev, .. } if code == "compare_failed" => {
                    Some(Step::CasFailed { expect: *rev })
                }
                _ => None,
            },
            (Call::Put { value, .. }, _) => Some(Step::Put {
                v: intern(value),
                rev: written_rev(op),
            }),
            (Call::Cas { rev, value, .. }, _) => Some(Step::Cas {
                expect: *rev,
                v: intern(value),
                rev: written_rev(op),
            }),
            (Call::Delete { .. }, Outcome::Ok { ret }) => Some(Step::Delete {
                existed: Some(!matches!(ret, Ret::Deleted { existed: false })),
            }),
            (Call::Delete { .. }, _) => Some(Step::Delete { existed: None }),
            (
                Call::Get { .. },
                Outcome::Ok {
                    ret: Ret::Read { value, rev },
                },
            ) => Some(Step::Get {
                v: value.as_deref().map(&mut intern),
                rev: *rev,
            }),
            _ => None,
        };
        if let Some(s) = step {
            out.push((i, s, !unknown && op.complete_us.is_some()));
        }
    }
    out
}

fn written_rev(op: &Op) -> Option<u64> {
    match op.ret() {
        Some(Ret::Written { rev }) => Some(*rev),
        _ => None,
    }
}

/// Checks the operations of `ops` on `key`, giving up after `budget` search steps.
pub fn check_key(ops: &[Op], key: &str, budget: u64) -> KeyVerdict {
    let steps = steps_of(ops, key);
    let n = steps.len();
    let must_total = steps.iter().filter(|s| s.2).count();
    if must_total == 0 {
        return KeyVerdict::Linearizable;
    }
    // Calls and returns in time order; at equal times calls first (overlap, never order).
    let mut entries: Vec<(Micros, u8, Entry)> = Vec::with_capacity(2 * n);
    for (j, (i, _, must)) in steps.iter().enumerate() {
        let op = &ops[*i];
        entries.push((op.invoke_us, 0, Entry { op: j, call: true }));
        let end = if *must { op.end_us() } else { Micros::MAX };
        entries.push((end, 1, Entry { op: j, call: false }));
    }
    entries.sort_by_key(|(t, order, e)| (*t, *order, e.op));
    let entries: Vec<Entry> = entries.into_iter().map(|(_, _, e)| e).collect();
    // A doubly linked list over entries; node 0 is the head, entry k is node k + 1.
    let len = entries.len() + 1;
    let mut next: Vec<usize> = (1..=len).collect();
    let mut prev: Vec<usize> = (0..len).map(|k| k.wrapping_sub(1)).collect();
    next[len - 1] = NIL;
    let mut call_node = vec![0; n];
    let mut ret_node = vec![0; n];
    for (k, e) in entries.iter().enumerate() {
        if e.call {
            call_node[e.op] = k + 1;
        } else {
            ret_node[e.op] = k + 1;
        }
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, x: usize| {
        let (p, nx) = (prev[x], next[x]);
        next[p] = nx;
        if nx != NIL {
            prev[nx] = p;
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, x: usize| {
        let (p, nx) = (prev[x], next[x]);
        next[p] = x;
        if nx != NIL {
            prev[nx] = x;
        }
    };

    let words = n.div_ceil(64);
    let mut bits = vec![0u64; words];
    let mut seen: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut state = State::default();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut linearized_must = 0usize;
    let mut best: (usize, Vec<usize>) = (0, Vec::new());
    let mut spent = 0u64;
    let mut node = next[0];
    loop {
        spent += 1;
        if spent > budget {
            return KeyVerdict::Unknown { steps: spent };
        }
        if node == NIL {
            // Only unknown operations' returns can end the list unvisited.
            return KeyVerdict::Linearizable;
        }
        let e = &entries[node - 1];
        if e.call {
            let j = e.op;
            if let Some(after) = state.step(steps[j].1) {
                bits[j / 64] |= 1 << (j % 64);
                if seen.len() >= MAX_MEMO {
                    return KeyVerdict::Unknown { steps: spent };
                }
                if seen.insert((bits.clone(), after)) {
                    stack.push((j, state));
                    state = after;
                    unlink(&mut next, &mut prev, call_node[j]);
                    unlink(&mut next, &mut prev, ret_node[j]);
                    if steps[j].2 {
                        linearized_must += 1;
                        if linearized_must == must_total {
                            return KeyVerdict::Linearizable;
                        }
                    }
                    if stack.len() > best.0 {
                        best = (stack.len(), stack.iter().map(|(j, _)| *j).collect());
                    }
                    node = next[0];
                    continue;
                }
                bits[j / 64] &= !(1 << (j % 64));
            }
            node = next[node];
        } else {
            if !steps[e.op].2 {
                return KeyVerdict::Linearizable;
            }
            let Some((j, before)) = stack.pop() else {
                return KeyVerdict::NotLinearizable {
                    explain: explain(ops, &steps, &best.1),
                };
            };
            state = before;
            bits[j / 64] &= !(1 << (j % 64));
            relink(&mut next, &mut prev, ret_node[j]);
            relink(&mut next, &mut prev, call_node[j]);
            if steps[j].2 {
                linearized_must -= 1;
            }
            node = next[call_node[j]];
        }
    }
}

const NIL: usize = usize::MAX;

/// Memoized configurations kept at most per key (each holds a bitset of the key's operations):
/// past this the verdict is unknown rather than the memory exhausted.
const MAX_MEMO: usize = 4_000_000;

/// The longest linearizable order found (its last operations), and the earliest-ending
/// operations that must come next but cannot.
fn explain(ops: &[Op], steps: &[(usize, Step, bool)], order: &[usize]) -> String {
    let mut s = format!(
        "longest linearizable prefix: {} of {} operations",
        order.len(),
        steps.len()
    );
    let shown = order.len().saturating_sub(8);
    if shown > 0 {
        s.push_str(&format!("\n  … {shown} earlier"));
    }
    for j in &order[shown..] {
        let i = steps[*j].0;
        s.push_str(&format!("\n  {}", ops[i].describe(i)));
    }
    let mut rest: Vec<usize> = (0..steps.len())
        .filter(|j| steps[*j].2 && !order.contains(j))
        .collect();
    rest.sort_by_key(|j| ops[steps[*j].0].end_us());
    s.push_str("\nthen none of these fits (earliest-ending first):");
    for j in rest.iter().take(6) {
        let i = steps[*j].0;
        s.push_str(&format!("\n  {}", ops[i].describe(i)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    fn verdict(ops: &[Op]) -> KeyVerdict {
        check_key(ops, "k", 1_000_000)
    }

    #[test]
    fn sequential_put_get_passes() {
        let h = [
            put(1, 0, 10, "a", ok_rev(100)),
            get(2, 20, 30, Some(("a", 100))),
            put(1, 40, 50, "b", ok_rev(200)),
            get(2, 60, 70, Some(("b", 200))),
            del(1, 80, 90, Some(true)),
            get(2, 100, 110, None),
        ];
        assert_eq!(verdict(&h), KeyVerdict::Linearizable);
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_put_is_a_violation() {
        let h = [
            put(1, 0, 10, "a", ok_rev(100)),
            put(1, 20, 30, "b", ok_rev(200)),
            get(2, 40, 50, Some(("a", 100))),
        ];
        let KeyVerdict::NotLinearizable { explain } = verdict(&h) else {
            panic!("a stale read passed")
        };
        assert!(explain.contains("get k"), "{explain}");
    }

    #[test]
    fn concurrent_reads_may_see_either_value() {
        let h = [
            put(1, 0, 10, "a", ok_rev(100)),
            put(1, 20, 60, "b", ok_rev(200)),
            get(2, 25, 30, Some(("b", 200))),
            get(3, 35, 40, Some(("b", 200))),
        ];
        assert_eq!(verdict(&h), KeyVerdict::Linearizable);
        // But once a read saw the new value, a later read must not see the old one.
        let h = [
            put(1, 0, 10, "a", ok_rev(100)),
            put(1, 20, 60, "b", ok_rev(200)),
            get(2, 25, 30, Some(("b", 200))),
            get(3, 35, 40, Some(("a", 100))),
        ];
        assert!(matches!(verdict(&h), KeyVerdict::NotLinearizable { .. }));
    }

    #[test]
    fn an_unknown_write_may_apply_late_or_never() {
        let late = [
            put(1, 0, 10, "a", ok_rev(100)),
            put(1, 20, 30, "b", unknown()),
            get(2, 40, 50, Some(("a", 100))),
            get(2, 60, 70, Some(("b", 300))),
        ];
        assert_eq!(verdict(&late), KeyVerdict::Linearizable);
        let never = [
            put(1, 0, 10, "a", ok_rev(100)),
            put(1, 20, 30, "b", unknown()),
            get(2, 40, 50, Some(("a", 100))),
        ];
        assert_eq!(verdict(&never), KeyVerdict::Linearizable);
        // It cannot take effect before it was invoked.
        let early = [
            put(1, 0, 10, "a", ok_rev(100)),
            get(2, 20, 30, Some(("b", 300))),
            put(1, 40, 50, "b", unknown()),
        ];
        assert!(matches!(
            verdict(&early),
            KeyVerdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn a_failed_write_must_never_be_seen() {
        let h = [
            put(1, 0, 10, "a", failed("unavailable")),
            get(2, 20, 30, Some(("a", 100))),
        ];
        assert!(matches!(verdict(&h), KeyVerdict::NotLinearizable { .. }));
    }

    #[test]
    fn a_phantom_value_is_a_violation() {
        let h = [
            put(1, 0, 10, "a", ok_rev(100)),
            get(2, 20, 30, Some(("zzz", 100))),
        ];
        assert!(matches!(verdict(&h), KeyVerdict::NotLinearizable { .. }));
    }

    #[test]
    fn revisions_must_grow_and_match_reads() {
        // The later put got a lower revision.
        let h = [
            put(1, 0, 10, "a", ok_rev(200)),
            put(1, 20, 30, "b", ok_rev(100)),
        ];
        assert!(matches!(verdict(&h), KeyVerdict::NotLinearizable { .. }));
        // A read shows a value under another revision than its write's.
        let h = [
            put(1, 0, 10, "a", ok_rev(200)),
            get(2, 20, 30, Some(("a", 201))),
        ];
        assert!(matches!(verdict(&h), KeyVerdict::NotLinearizable { .. }));
    }

    #[test]
    fn cas_checks_the_revision() {
        let good = [
            cas(1, 0, 10, 0, "a", ok_rev(100)),
            cas(2, 20, 30, 100, "b", ok_rev(200)),
            cas(3, 40, 50, 100, "c", failed("compare_failed")),
            get(1, 60, 70, Some(("b", 200))),
        ];
        assert_eq!(verdict(&good), KeyVerdict::Linearizable);
        // Two cas from the same revision cannot both succeed.
        let bad = [
            cas(1, 0, 10, 0, "a", ok_rev(100)),
            cas(2, 20, 30, 100, "b", ok_rev(200)),
            cas(3, 40, 50, 100, "c", ok_rev(300)),
        ];
        assert!(matches!(verdict(&bad), KeyVerdict::NotLinearizable { .. }));
        // A compare_failed while the key surely was at that revision.
        let bad = [
            cas(1, 0, 10, 0, "a", ok_rev(100)),
            cas(3, 40, 50, 100, "c", failed("compare_failed")),
        ];
        assert!(matches!(verdict(&bad), KeyVerdict::NotLinearizable { .. }));
    }

    #[test]
    fn an_unknown_cas_seen_through_a_later_cas() {
        let h = [
            put(1, 0, 10, "a", ok_rev(100)),
            cas(2, 20, 30, 100, "b", unknown()),
            cas(3, 40, 50, 150, "c", ok_rev(200)),
            get(1, 60, 70, Some(("c", 200))),
        ];
        assert_eq!(verdict(&h), KeyVerdict::Linearizable);
    }

    #[test]
    fn a_delete_that_found_nothing_means_the_key_was_absent() {
        let h = [put(1, 0, 10, "a", ok_rev(100)), del(2, 20, 30, Some(false))];
        assert!(matches!(verdict(&h), KeyVerdict::NotLinearizable { .. }));
    }

    #[test]
    fn a_tiny_budget_gives_unknown_not_a_pass() {
        let mut h = Vec::new();
        for i in 0..40u64 {
            h.push(put(i as u32, 0, 1000, &format!("v{i}"), unknown()));
        }
        h.push(get(99, 2000, 2010, Some(("nope", 1))));
        assert!(matches!(
            check_key(&h, "k", 100),
            KeyVerdict::Unknown { .. }
        ));
    }

    #[test]
    fn many_concurrent_unknown_writes_finish_within_budget() {
        let mut h = Vec::new();
        for i in 0..30u64 {
            h.push(put(
                i as u32,
                i * 10,
                i * 10 + 5,
                &format!("v{i}"),
                unknown(),
            ));
            h.push(get(
                100,
                i * 10 + 6,
                i * 10 + 8,
                Some((&format!("v{i}"), 1000 + i)),
            ));
        }
        assert_eq!(verdict(&h), KeyVerdict::Linearizable);
    }
}
