//! Lock safety: no two grants of one lock are surely held at the same time, and fencing tokens
//! grow in grant order.
//!
//! When is a grant surely held? Its grant committed at the latest when the acquire was
//! acknowledged. Its lease ends no earlier than `ttl` after the leader stamped the grant, and the
//! stamp is no earlier than the acquire's invocation (one host, one clock; leases are only ever
//! extended), so an unreleased grant is held at least until invoke + ttl, less a small margin for
//! millisecond stamps. A release may take effect from its invocation on, so the sure interval
//! ends at the first release of that token invoked. Two grants whose sure intervals overlap
//! had two holders at once. Acquires of unknown outcome are left out: they may hold nothing.

use std::collections::BTreeMap;

use crate::history::{Call, Micros, Op, Ret};

/// Slack for millisecond lease stamps and the two clocks (µs).
pub const LEASE_MARGIN_US: Micros = 5_000;

struct Grant {
    op: usize,
    token: u64,
    /// Surely held over `[from, to)`.
    from: Micros,
    to: Micros,
}

fn grants(ops: &[Op]) -> BTreeMap<&str, Vec<Grant>> {
    let mut first_release: BTreeMap<(&str, u64), Micros> = BTreeMap::new();
    for op in ops {
        if let Call::Release { lock, token } = &op.call {
            let t = first_release.entry((lock, *token)).or_insert(Micros::MAX);
            *t = (*t).min(op.invoke_us);
        }
    }
    let mut out: BTreeMap<&str, Vec<Grant>> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        let (Call::Acquire { lock, ttl_ms, .. }, Some(Ret::Granted { token })) =
            (&op.call, op.ret())
        else {
            continue;
        };
        let Some(from) = op.complete_us else { continue };
        // Margin: 5 ms, plus 1 µs per ms of lease for clock rate differences.
        let lease_end = (op.invoke_us + ttl_ms * 1000).saturating_sub(LEASE_MARGIN_US + ttl_ms);
        let released = first_release
            .get(&(lock.as_str(), *token))
            .copied()
            .unwrap_or(Micros::MAX);
        out.entry(lock).or_default().push(Grant {
            op: i,
            token: *token,
            from,
            to: lease_end.min(released),
        });
    }
    out
}

/// Pairs of grants of one lock surely held at once.
pub fn one_holder_at_a_time(ops: &[Op]) -> Vec<String> {
    let mut out = Vec::new();
    for (lock, mut gs) in grants(ops) {
        gs.retain(|g| g.from < g.to);
        gs.sort_by_key(|g| g.from);
        // Sweep by start: the open grant that is held longest so far.
        let mut open: Option<&Grant> = None;
        for g in &gs {
            if let Some(o) = open {
                if o.token != g.token && g.from < o.to {
                    out.push(format!(
                        "lock {lock} held twice at once: {:.3}s..{:.3}s and {:.3}s..{:.3}s \
                         (tokens {} and {}):\n  {}\n  {}",
                        o.from as f64 / 1e6,
                        o.to as f64 / 1e6,
                        g.from as f64 / 1e6,
                        g.to as f64 / 1e6,
                        o.token,
                        g.token,
                        ops[o.op].describe(o.op),
                        ops[g.op].describe(g.op)
                    ));
                }
            }
            if open.is_none_or(|o| g.to > o.to) {
                open = Some(g);
            }
        }
    }
    out
}

/// A grant acknowledged before another acquire of the same lock was invoked has the lower token.
pub fn tokens_grow(ops: &[Op]) -> Vec<String> {
    let mut out = Vec::new();
    for (lock, gs) in grants(ops) {
        for a in &gs {
            // The first later grant with a token not above `a`'s is enough to show it.
            let later = gs.iter().find(|b| {
                b.token < a.token && ops[b.op].invoke_us > ops[a.op].end_us() && b.op != a.op
            });
            if let Some(b) = later {
                out.push(format!(
                    "lock {lock}: token {} granted after token {} was acknowledged:\n  {}\n  {}",
                    b.token,
                    a.token,
                    ops[a.op].describe(a.op),
                    ops[b.op].describe(b.op)
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

    const TTL: u64 = 1_000_000;

    #[test]
    fn a_release_then_another_grant_passes() {
        let h = [
            acquire("o1", 0, 10_000, TTL, granted(100)),
            release(200_000, 210_000, 100),
            acquire("o2", 150_000, 220_000, TTL, granted(200)),
        ];
        assert!(one_holder_at_a_time(&h).is_empty());
        assert!(tokens_grow(&h).is_empty());
    }

    #[test]
    fn an_expired_lease_then_another_grant_passes() {
        let h = [
            acquire("o1", 0, 10_000, TTL, granted(100)),
            acquire("o2", 900_000, 1_100_000, TTL, granted(200)),
        ];
        assert!(one_holder_at_a_time(&h).is_empty());
    }

    #[test]
    fn two_holders_within_a_lease_is_a_violation() {
        let h = [
            acquire("o1", 0, 10_000, TTL, granted(100)),
            acquire("o2", 20_000, 30_000, TTL, granted(200)),
        ];
        let v = one_holder_at_a_time(&h);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("held twice"), "{v:?}");
    }

    #[test]
    fn a_release_of_unknown_outcome_ends_the_sure_hold() {
        let mut r = release(15_000, 16_000, 100);
        r.outcome = unknown();
        r.complete_us = None;
        let h = [
            acquire("o1", 0, 10_000, TTL, granted(100)),
            r,
            acquire("o2", 20_000, 30_000, TTL, granted(200)),
        ];
        assert!(one_holder_at_a_time(&h).is_empty());
    }

    #[test]
    fn an_unknown_acquire_holds_nothing_for_sure() {
        let h = [
            acquire("o1", 0, 10_000, TTL, unknown()),
            acquire("o2", 20_000, 30_000, TTL, granted(200)),
        ];
        assert!(one_holder_at_a_time(&h).is_empty());
    }

    #[test]
    fn a_token_that_goes_back_is_a_violation() {
        let h = [
            acquire("o1", 0, 10_000, TTL, granted(300)),
            release(20_000, 30_000, 300),
            acquire("o2", 40_000, 50_000, TTL, granted(200)),
        ];
        assert_eq!(tokens_grow(&h).len(), 1);
    }
}
