//! The cluster's own change log (a `kv watch` from revision 1) against the clients' history: it
//! tells a lost acknowledged write from a failed call that was applied anyway.
//!
//! Every acknowledged put or cas is in the log at its revision with its value; every put in the
//! log was made by a call that did not fail (exit 1); every delete in the log falls where some
//! delete call that did not fail could have made it (between the calls that made the puts of that
//! key around it).

use std::collections::{BTreeMap, HashMap};

use crate::history::{Call, Change, Micros, Op, Ret};

/// Disagreements between `changes` and `ops`; nothing when the log is empty (not recorded).
pub fn log_agrees(ops: &[Op], changes: &[Change]) -> Vec<String> {
    let mut out = Vec::new();
    let Some(first) = changes.iter().map(|c| c.rev).min() else {
        return out;
    };
    let by_rev: HashMap<u64, &Change> = changes.iter().map(|c| (c.rev, c)).collect();
    let mut writers: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        let (Some(k), Some(v)) = (op.call.key(), op.call.written()) else {
            continue;
        };
        writers.insert((k, v), i);
        let Some(Ret::Written { rev }) = op.ret() else {
            continue;
        };
        let logged = by_rev.get(rev);
        let fits = logged.is_some_and(|c| c.key == k && c.value.as_deref() == Some(v));
        if *rev >= first && !fits {
            out.push(format!(
                "acknowledged write not in the change log at its revision (log has {logged:?}):\n  {}",
                op.describe(i)
            ));
        }
    }
    // Per key, in revision order: the call that made each put, for the deletes between them.
    let mut per_key: BTreeMap<&str, Vec<(&Change, Option<usize>)>> = BTreeMap::new();
    let mut sorted: Vec<&Change> = changes.iter().collect();
    sorted.sort_by_key(|c| c.rev);
    for c in sorted {
        let writer = c
            .value
            .as_deref()
            .and_then(|v| writers.get(&(c.key.as_str(), v)).copied());
        if let Some(v) = &c.value {
            match writer {
                None => out.push(format!(
                    "the change log has a put no call made: {} = {v} at {}",
                    c.key, c.rev
                )),
                Some(w) if ops[w].is_failed() => out.push(format!(
                    "a write reported failed (exit 1) was applied at revision {}:\n  {}",
                    c.rev,
                    ops[w].describe(w)
                )),
                _ => {}
            }
        }
        per_key.entry(&c.key).or_default().push((c, writer));
    }
    for (key, log) in per_key {
        for (n, (c, _)) in log.iter().enumerate() {
            if c.value.is_some() {
                continue;
            }
            // Bounds from the puts around it: after the one before was invoked, before the
            // one after completed.
            let after: Micros = log[..n]
                .iter()
                .rev()
                .find_map(|(_, w)| w.map(|w| ops[w].invoke_us))
                .unwrap_or(0);
            let before: Micros = log[n + 1..]
                .iter()
                .find_map(|(_, w)| w.map(|w| ops[w].end_us()))
                .unwrap_or(Micros::MAX);
            let candidates: Vec<usize> = (0..ops.len())
                .filter(|d| {
                    let op = &ops[*d];
                    matches!(&op.call, Call::Delete { key: k } if k == key)
                        && !op.is_failed()
                        && op.ret() != Some(&Ret::Deleted { existed: false })
                        && op.invoke_us < before
                        && op.end_us() > after
                })
                .collect();
            if candidates.is_empty() {
                let failed: Vec<String> = (0..ops.len())
                    .filter(|d| {
                        let op = &ops[*d];
                        matches!(&op.call, Call::Delete { key: k } if k == key)
                            && op.is_failed()
                            && op.invoke_us < before
                            && op.end_us() > after
                    })
                    .map(|d| ops[d].describe(d))
                    .collect();
                out.push(format!(
                    "the change log has a delete of {key} at {} that no delete call that \
                     succeeded or may have could have made; failed deletes in that window:\n  {}",
                    c.rev,
                    if failed.is_empty() {
                        "(none)".to_string()
                    } else {
                        failed.join("\n  ")
                    }
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    fn change(rev: u64, value: Option<&str>) -> Change {
        Change {
            rev,
            key: "k".into(),
            value: value.map(String::from),
        }
    }

    #[test]
    fn a_log_matching_the_history_passes() {
        let h = [
            put(1, 0, 10, "a", ok_rev(100)),
            del(2, 20, 30, Some(true)),
            put(1, 40, 50, "b", unknown()),
        ];
        let log = [
            change(100, Some("a")),
            change(150, None),
            change(200, Some("b")),
        ];
        assert!(
            log_agrees(&h, &log).is_empty(),
            "{:?}",
            log_agrees(&h, &log)
        );
        assert!(log_agrees(&h, &[]).is_empty());
    }

    #[test]
    fn a_lost_write_and_an_applied_failure_are_told_apart() {
        let h = [
            put(1, 0, 10, "a", ok_rev(100)),
            put(1, 20, 30, "b", failed("unavailable")),
        ];
        let lost = [change(50, Some("x0"))];
        let v = log_agrees(&h[..1], &lost);
        assert!(
            v.iter().any(|s| s.contains("not in the change log")),
            "{v:?}"
        );
        let applied = [change(100, Some("a")), change(200, Some("b"))];
        let v = log_agrees(&h, &applied);
        assert!(v.iter().any(|s| s.contains("reported failed")), "{v:?}");
    }

    #[test]
    fn a_delete_only_a_failed_call_could_have_made_is_reported() {
        let mut d = del(2, 20, 30, Some(true));
        d.outcome = failed("unavailable");
        let h = [
            put(1, 0, 10, "a", ok_rev(100)),
            d,
            put(1, 40, 50, "b", ok_rev(300)),
        ];
        let log = [
            change(100, Some("a")),
            change(150, None),
            change(300, Some("b")),
        ];
        let v = log_agrees(&h, &log);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("failed deletes in that window"), "{v:?}");
    }
}
