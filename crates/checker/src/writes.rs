//! Direct checks on writes, each a simpler (and more readable) consequence of linearizability:
//! revisions grow in real-time order, a read returns only a value some call wrote (and not one a
//! call reported as failed), and no read misses an acknowledged write.

use std::collections::{BTreeMap, HashMap};

use crate::history::{Call, Op, Ret};

/// The lock and owner of a grant (a re-entrant acquire gets the same token); `None` for a write.
type Holder<'a> = Option<(&'a str, &'a str)>;

/// A revision and what got it: (index in the history, revision, holder).
type Revised<'a> = (usize, u64, Holder<'a>);

/// Per key: acknowledged writes, completed reads, deletes that may have applied.
#[derive(Default)]
struct KeyOps {
    writes: Vec<usize>,
    reads: Vec<usize>,
    deletes: Vec<usize>,
    failed_deletes: Vec<usize>,
}

/// The revision an acknowledged write or grant got, with what identifies a re-entrant acquire
/// (same lock, same owner: same token).
fn revision(op: &Op) -> Option<(u64, Holder<'_>)> {
    match (&op.call, op.ret()?) {
        (Call::Put { .. } | Call::Cas { .. }, Ret::Written { rev }) => Some((*rev, None)),
        (Call::Acquire { lock, owner, .. }, Ret::Granted { token }) => {
            Some((*token, Some((lock.as_str(), owner.as_str()))))
        }
        _ => None,
    }
}

/// Revisions (write revisions and fencing tokens, one sequence) are unique, and an operation
/// acknowledged before another was invoked has the lower revision.
pub fn revisions_grow(ops: &[Op]) -> Vec<String> {
    let mut out = Vec::new();
    let revs: Vec<Revised> = ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| revision(op).map(|(r, who)| (i, r, who)))
        .collect();
    // A write's revision is its own; grants share one only when a single entry handed several
    // locks over to their waiters (one token per lock), or when an owner acquired again.
    let mut by_rev: HashMap<u64, Vec<(usize, Holder<'_>)>> = HashMap::new();
    for &(i, r, who) in &revs {
        let same = by_rev.entry(r).or_default();
        let clash = same.iter().find(|(_, other)| match (who, other) {
            (Some((lock, owner)), Some((other_lock, other_owner))) => {
                lock == *other_lock && owner != *other_owner
            }
            _ => true,
        });
        if let Some(&(j, _)) = clash {
            out.push(format!(
                "two operations got revision {r}:\n  {}\n  {}",
                ops[j].describe(j),
                ops[i].describe(i)
            ));
        }
        same.push((i, who));
    }
    // Sweep by invocation; `done` holds what completed before, the highest revision first.
    let mut by_end: Vec<&Revised> = revs.iter().collect();
    by_end.sort_by_key(|(i, _, _)| ops[*i].end_us());
    let mut by_start: Vec<&Revised> = revs.iter().collect();
    by_start.sort_by_key(|(i, _, _)| ops[*i].invoke_us);
    let mut top: Option<Revised> = None;
    let mut k = 0;
    for &&(i, r, who) in &by_start {
        while k < by_end.len() && ops[by_end[k].0].end_us() < ops[i].invoke_us {
            let (j, rj, wj) = *by_end[k];
            if top.is_none_or(|(_, t, _)| rj > t) {
                top = Some((j, rj, wj));
            }
            k += 1;
        }
        if let Some((j, t, wj)) = top {
            // A re-entrant acquire gets its own token again.
            let reentrant = t == r && who.is_some() && who == wj;
            if t >= r && !reentrant {
                out.push(format!(
                    "revision went back: an operation acknowledged with {t} before another \
                     started, which got {r}:\n  {}\n  {}",
                    ops[j].describe(j),
                    ops[i].describe(i)
                ));
            }
        }
    }
    out
}

/// Every value a read returned was written by a put or cas on that key that was invoked before
/// the read completed and did not fail, under the revision that write was acknowledged with.
pub fn no_phantom_reads(ops: &[Op]) -> Vec<String> {
    let mut writers: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        if let (Some(k), Some(v)) = (op.call.key(), op.call.written()) {
            writers.entry((k, v)).or_default().push(i);
        }
    }
    let mut out = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let (
            Call::Get { key },
            Some(Ret::Read {
                value: Some(v),
                rev,
            }),
        ) = (&op.call, op.ret())
        else {
            continue;
        };
        let ws = writers.get(&(key.as_str(), v.as_str()));
        let Some(ws) = ws else {
            out.push(format!(
                "phantom value: no call ever wrote it:\n  {}",
                op.describe(i)
            ));
            continue;
        };
        let fits = |w: &usize| {
            let wo = &ops[*w];
            let rev_fits = match (rev, wo.ret()) {
                (Some(r), Some(Ret::Written { rev: wr })) => r == wr,
                _ => true,
            };
            !wo.is_failed() && wo.invoke_us < op.end_us() && rev_fits
        };
        if ws.iter().any(fits) {
            continue;
        }
        let w = ws[0];
        let why = if ops[w].is_failed() {
            "the call that wrote it failed (exit 1) yet it was applied"
        } else if ops[w].invoke_us >= op.end_us() {
            "read before the write of it was invoked"
        } else {
            "read under another revision than its write was acknowledged with"
        };
        out.push(format!(
            "{why}:\n  {}\n  {}",
            ops[w].describe(w),
            op.describe(i)
        ));
    }
    out
}

/// No read invoked after a write was acknowledged sees the key older than that write: a lower
/// revision, or no key when no delete could have come in between.
pub fn no_lost_writes(ops: &[Op]) -> Vec<String> {
    let mut keys: BTreeMap<&str, KeyOps> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        let Some(k) = op.call.key() else { continue };
        let e = keys.entry(k).or_default();
        match (&op.call, op.ret()) {
            (Call::Put { .. } | Call::Cas { .. }, Some(Ret::Written { .. })) => e.writes.push(i),
            (Call::Get { .. }, Some(Ret::Read { .. })) => e.reads.push(i),
            (Call::Delete { .. }, _) if !op.is_failed() => e.deletes.push(i),
            (Call::Delete { .. }, _) => e.failed_deletes.push(i),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for KeyOps {
        mut writes,
        mut reads,
        deletes,
        failed_deletes,
    } in keys.into_values()
    {
        writes.sort_by_key(|w| ops[*w].end_us());
        reads.sort_by_key(|r| ops[*r].invoke_us);
        // Over writes acknowledged before the read: the highest revision, the latest invoked.
        let (mut top, mut latest): (Option<(u64, usize)>, Option<usize>) = (None, None);
        let mut k = 0;
        for &r in &reads {
            while k < writes.len() && ops[writes[k]].end_us() < ops[r].invoke_us {
                let w = writes[k];
                if let Some(Ret::Written { rev }) = ops[w].ret() {
                    if top.is_none_or(|(t, _)| *rev > t) {
                        top = Some((*rev, w));
                    }
                }
                if latest.is_none_or(|l| ops[w].invoke_us > ops[l].invoke_us) {
                    latest = Some(w);
                }
                k += 1;
            }
            let Some(Ret::Read { value, rev }) = ops[r].ret() else {
                continue;
            };
            match (value, rev, top, latest) {
                (Some(_), Some(seen), Some((t, w)), _) if *seen < t => out.push(format!(
                    "acknowledged write lost or stale read: the read started after a write \
                     was acknowledged with revision {t}, and saw revision {seen}:\n  {}\n  {}",
                    ops[w].describe(w),
                    ops[r].describe(r)
                )),
                (None, _, _, Some(w)) => {
                    let between = |d: &usize| {
                        ops[*d].invoke_us < ops[r].end_us() && ops[*d].end_us() > ops[w].invoke_us
                    };
                    if !deletes.iter().any(between) {
                        let mut s = format!(
                            "acknowledged write lost: the read started after the write was \
                             acknowledged, found no key, and no delete could have come \
                             between:\n  {}\n  {}",
                            ops[w].describe(w),
                            ops[r].describe(r)
                        );
                        // Unless a delete reported failed (exit 1) was applied: name those.
                        for d in failed_deletes.iter().filter(|d| between(d)) {
                            s.push_str(&format!(
                                "\n  (or this delete, reported failed, was applied: {})",
                                ops[*d].describe(*d)
                            ));
                        }
                        out.push(s);
                    }
                }
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn good_history_passes_every_write_check() {
        let h = [
            put(1, 0, 10, "a", ok_rev(100)),
            get(2, 20, 30, Some(("a", 100))),
            put(1, 40, 50, "b", unknown()),
            get(2, 60, 70, Some(("b", 300))),
            acquire("o1", 80, 90, 1_000_000, granted(400)),
            acquire("o1", 95, 99, 1_000_000, granted(400)),
            del(1, 100, 110, Some(true)),
            get(2, 120, 130, None),
        ];
        assert!(revisions_grow(&h).is_empty(), "{:?}", revisions_grow(&h));
        assert!(
            no_phantom_reads(&h).is_empty(),
            "{:?}",
            no_phantom_reads(&h)
        );
        assert!(no_lost_writes(&h).is_empty(), "{:?}", no_lost_writes(&h));
    }

    #[test]
    fn a_revision_that_goes_back_is_reported() {
        let h = [
            put(1, 0, 10, "a", ok_rev(500)),
            acquire("o1", 20, 30, 1_000_000, granted(400)),
        ];
        assert_eq!(revisions_grow(&h).len(), 1);
        let h = [
            put(1, 0, 10, "a", ok_rev(500)),
            put(2, 5, 30, "b", ok_rev(500)),
        ];
        assert!(revisions_grow(&h)[0].contains("two operations got revision 500"));
        // One entry may hand two locks over to their waiters: one token for both.
        let mut other_lock = acquire("o2", 0, 20, 1_000_000, granted(600));
        if let Call::Acquire { lock, .. } = &mut other_lock.call {
            *lock = "l2".into();
        }
        let h = [acquire("o1", 0, 20, 1_000_000, granted(600)), other_lock];
        assert!(revisions_grow(&h).is_empty(), "{:?}", revisions_grow(&h));
        // But not one lock to two owners.
        let h = [
            acquire("o1", 0, 20, 1_000_000, granted(600)),
            acquire("o2", 0, 20, 1_000_000, granted(600)),
        ];
        assert_eq!(revisions_grow(&h).len(), 1);
    }

    #[test]
    fn phantom_and_failed_and_future_reads_are_reported() {
        let phantom = [get(2, 20, 30, Some(("x", 100)))];
        assert!(no_phantom_reads(&phantom)[0].contains("phantom"));
        let failed_seen = [
            put(1, 0, 10, "a", failed("unavailable")),
            get(2, 20, 30, Some(("a", 100))),
        ];
        assert!(no_phantom_reads(&failed_seen)[0].contains("failed (exit 1)"));
        let future = [
            get(2, 0, 10, Some(("a", 100))),
            put(1, 20, 30, "a", ok_rev(100)),
        ];
        assert!(no_phantom_reads(&future)[0].contains("before the write"));
    }

    #[test]
    fn a_read_missing_an_acknowledged_write_is_reported() {
        let stale = [
            put(1, 0, 10, "a", ok_rev(100)),
            put(1, 20, 30, "b", ok_rev(200)),
            get(2, 40, 50, Some(("a", 100))),
        ];
        assert_eq!(no_lost_writes(&stale).len(), 1);
        let gone = [put(1, 0, 10, "a", ok_rev(100)), get(2, 40, 50, None)];
        assert_eq!(no_lost_writes(&gone).len(), 1);
        // A delete of unknown outcome after the write explains the missing key.
        let deleted = [
            put(1, 0, 10, "a", ok_rev(100)),
            del(3, 20, 25, None),
            get(2, 40, 50, None),
        ];
        assert!(no_lost_writes(&deleted).is_empty());
        // One that ended before the write began does not.
        let early = [
            del(3, 0, 5, Some(true)),
            put(1, 10, 20, "a", ok_rev(100)),
            get(2, 40, 50, None),
        ];
        assert_eq!(no_lost_writes(&early).len(), 1);
    }
}
