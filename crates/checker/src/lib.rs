//! ekka-checker: checks a recorded history of client operations against an ekka cluster, in the
//! spirit of Jepsen, Porcupine and etcd's robustness tests. Pure: it reads a [`History`] (saved
//! and loaded as JSON) and returns a [`Report`]; the runner that records histories under faults
//! is `tests/checker.rs`, and `ekka-check replay FILE` re-checks a saved one.
//!
//! Checks: per-key linearizability of the key-value space against a register with revisions
//! ([`linear`]); revisions and fencing tokens growing in real-time order, no phantom or failed
//! write read, no acknowledged write lost ([`writes`]); one lock holder at a time ([`locks`]);
//! and, when the run recorded the cluster's change log (`kv watch`), that it agrees with what
//! the clients were told ([`changes`]); when it recorded every agent's membership events, that
//! they agree with each other and with the final members ([`members`]).
//! A search that runs past its budget is [`Verdict::Unknown`], which is not a pass.

pub mod changes;
pub mod history;
pub mod linear;
pub mod locks;
pub mod members;
#[cfg(test)]
mod testing;
pub mod writes;

use std::collections::BTreeSet;
use std::fmt;

pub use history::{Call, Change, Fault, History, Micros, Op, Outcome, Ret};

/// Search steps allowed per key before its verdict is unknown.
pub const DEFAULT_BUDGET_PER_KEY: u64 = 20_000_000;

/// The verdict of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// What was found, one readable paragraph each.
    Violation(Vec<String>),
    /// The check could not decide (a search ran past its budget).
    Unknown(String),
}

/// One named check and its verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    pub name: String,
    pub verdict: Verdict,
}

/// Every check's verdict on one history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub checks: Vec<CheckResult>,
}

impl Report {
    /// Every check passed (an unknown verdict is not a pass).
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.verdict == Verdict::Pass)
    }

    pub fn has_violation(&self) -> bool {
        self.checks
            .iter()
            .any(|c| matches!(c.verdict, Verdict::Violation(_)))
    }
}

/// How many violations of one check a report prints in full.
const SHOWN_PER_CHECK: usize = 5;

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            match &c.verdict {
                Verdict::Pass => writeln!(f, "PASS     {}", c.name)?,
                Verdict::Unknown(why) => writeln!(f, "UNKNOWN  {}: {why}", c.name)?,
                Verdict::Violation(v) => {
                    writeln!(f, "VIOLATED {} ({} found)", c.name, v.len())?;
                    for s in v.iter().take(SHOWN_PER_CHECK) {
                        for (i, line) in s.lines().enumerate() {
                            let indent = if i == 0 { "  - " } else { "    " };
                            writeln!(f, "{indent}{line}")?;
                        }
                    }
                    if v.len() > SHOWN_PER_CHECK {
                        writeln!(f, "  … and {} more", v.len() - SHOWN_PER_CHECK)?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn verdict(found: Vec<String>) -> Verdict {
    if found.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Violation(found)
    }
}

fn named(name: &str, verdict: Verdict) -> CheckResult {
    CheckResult {
        name: name.into(),
        verdict,
    }
}

/// Runs every check on `h`, with `budget_per_key` search steps for each key's linearizability.
pub fn check(h: &History, budget_per_key: u64) -> Report {
    let ops = &h.ops;
    let keys: BTreeSet<&str> = ops.iter().filter_map(|o| o.call.key()).collect();
    let mut checks = Vec::new();
    for key in keys {
        let v = match linear::check_key(ops, key, budget_per_key) {
            linear::KeyVerdict::Linearizable => Verdict::Pass,
            linear::KeyVerdict::NotLinearizable { explain } => Verdict::Violation(vec![explain]),
            linear::KeyVerdict::Unknown { steps } => Verdict::Unknown(format!(
                "the search gave up after {steps} steps; rerun `ekka-check replay` with a \
                 larger --budget"
            )),
        };
        checks.push(named(&format!("key {key}: linearizable"), v));
    }
    checks.push(named(
        "revisions and tokens grow in real-time order",
        verdict(writes::revisions_grow(ops)),
    ));
    checks.push(named(
        "reads return only written values (no phantom, no failed write applied)",
        verdict(writes::no_phantom_reads(ops)),
    ));
    checks.push(named(
        "no acknowledged write lost",
        verdict(writes::no_lost_writes(ops)),
    ));
    if !h.changes.is_empty() {
        checks.push(named(
            "the cluster's change log agrees (acknowledged writes in it, failed ones not)",
            verdict(changes::log_agrees(ops, &h.changes)),
        ));
    }
    if let Some(m) = &h.membership {
        checks.push(named(
            "membership events: in revision order on every agent",
            verdict(members::ordered(m)),
        ));
        checks.push(named(
            "membership events: every agent's stream a prefix of one history",
            verdict(members::agree(m)),
        ));
        checks.push(named(
            "membership events: replayed, they give the final members",
            verdict(members::replay_matches(m)),
        ));
    }
    checks.push(named(
        "locks: one holder at a time",
        verdict(locks::one_holder_at_a_time(ops)),
    ));
    checks.push(named(
        "locks: tokens grow in grant order",
        verdict(locks::tokens_grow(ops)),
    ));
    Report { checks }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testing::*;

    fn history(ops: Vec<Op>) -> History {
        History {
            ops,
            ..History::default()
        }
    }

    #[test]
    fn a_good_history_passes_every_check() {
        let h = history(vec![
            put(1, 0, 10, "a", ok_rev(100)),
            cas(2, 20, 30, 100, "b", ok_rev(200)),
            get(3, 40, 50, Some(("b", 200))),
            acquire("o1", 60, 70, 1_000_000, granted(300)),
            release(80, 90, 300),
            acquire("o2", 85, 100, 1_000_000, granted(400)),
        ]);
        let r = check(&h, DEFAULT_BUDGET_PER_KEY);
        assert!(r.passed(), "{r}");
        assert!(
            r.to_string().contains("PASS     key k: linearizable"),
            "{r}"
        );
    }

    #[test]
    fn a_bad_history_is_reported_readably() {
        let h = history(vec![
            put(1, 0, 10, "a", ok_rev(100)),
            put(1, 20, 30, "b", ok_rev(200)),
            get(2, 40, 50, Some(("a", 100))),
        ]);
        let r = check(&h, DEFAULT_BUDGET_PER_KEY);
        assert!(r.has_violation());
        let text = r.to_string();
        assert!(text.contains("VIOLATED key k: linearizable"), "{text}");
        assert!(
            text.contains("VIOLATED no acknowledged write lost"),
            "{text}"
        );
        assert!(text.contains("get k"), "{text}");
    }

    #[test]
    fn an_unknown_verdict_is_not_a_pass() {
        let mut ops = Vec::new();
        for i in 0..30u64 {
            ops.push(put(i as u32, 0, 1000, &format!("v{i}"), unknown()));
        }
        ops.push(get(99, 2000, 2010, Some(("v3", 1))));
        ops.push(get(99, 2020, 2030, Some(("v4", 2))));
        let r = check(&history(ops), 50);
        assert!(!r.passed());
        assert!(!r.has_violation());
        assert!(r.to_string().contains("UNKNOWN  key k"), "{r}");
    }
}
