//! Lease locks in the replicated state: a holder with a fencing token and a leader-stamped
//! deadline, and a first-come-first-served queue of waiters per resource.
//!
//! Everything here is deterministic: time is the `now` of the entry being applied (the leader's
//! clock, never going backwards in the state), and the fencing token is the log index of the
//! entry that granted the lock, so tokens of one resource strictly increase.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

use crate::limits::{
    MAX_LOCKS, MAX_LOCK_OWNER_BYTES, MAX_LOCK_RESOURCE_BYTES, MAX_LOCK_TTL_MS, MAX_LOCK_WAITERS,
    MAX_LOCK_WAIT_MS, MIN_LOCK_TTL_MS,
};
use crate::outcome::{Outcome, Reject};

/// A lock operation, carried by [`crate::Command::Lock`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockOp {
    /// Takes `resource` for `ttl_ms`, or queues behind the holder for up to `wait_ms`.
    /// The holder acquiring again gets its token back and its lease renewed (re-entrant).
    Acquire {
        resource: String,
        owner: String,
        ttl_ms: u64,
        wait_ms: u64,
    },
    /// Extends the lease of the holder of `token` to `now + ttl_ms` (its own ttl when 0).
    Renew {
        resource: String,
        token: u64,
        ttl_ms: u64,
    },
    /// Frees the lock held with `token` and grants it to the first waiter.
    Release { resource: String, token: u64 },
    /// Gives up an acquire whose outcome the caller never learned (it timed out, or went away
    /// while in line): `owner` leaves the queue, and a hold granted to it by an entry after
    /// revision `after` is released. A hold from before `after` is kept.
    Abandon {
        resource: String,
        owner: String,
        after: u64,
    },
}

/// An acquirer waiting in line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    pub owner: String,
    pub ttl_ms: u64,
    /// When it stops waiting (leader time).
    pub deadline_ms: u64,
}

/// A held lock and its queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub owner: String,
    /// The log index of the entry that granted it.
    pub token: u64,
    pub ttl_ms: u64,
    /// When the lease ends unless renewed (leader time).
    pub expires_ms: u64,
    pub waiters: VecDeque<Waiter>,
}

/// Every held lock, by resource name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockTable {
    pub locks: BTreeMap<String, Lock>,
    /// Set by a new leader's first entry: the next timed entry extends every inherited lease to at
    /// least a full ttl from the new leader's clock, so a leader change never shortens a lease.
    #[serde(default)]
    pub extend_pending: bool,
}

/// Checks a lock resource name: 1..=MAX_LOCK_RESOURCE_BYTES of printable characters.
pub fn check_resource(r: &str) -> Result<(), String> {
    check_text("resource", r, MAX_LOCK_RESOURCE_BYTES)
}

/// Checks a lock owner: 1..=MAX_LOCK_OWNER_BYTES of printable characters.
pub fn check_owner(o: &str) -> Result<(), String> {
    check_text("owner", o, MAX_LOCK_OWNER_BYTES)
}

/// A non-empty string of at most `max` bytes without control characters or whitespace.
pub(crate) fn check_text(what: &str, s: &str, max: usize) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if s.len() > max {
        return Err(format!("{what} is longer than {max} bytes"));
    }
    if let Some(c) = s.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("{what} has the character {c:?}"));
    }
    Ok(())
}

fn check_ttl(ttl_ms: u64) -> Result<(), Reject> {
    if !(MIN_LOCK_TTL_MS..=MAX_LOCK_TTL_MS).contains(&ttl_ms) {
        return Err(invalid(format!(
            "ttl must be {MIN_LOCK_TTL_MS}ms..={MAX_LOCK_TTL_MS}ms, not {ttl_ms}ms"
        )));
    }
    Ok(())
}

fn invalid(message: impl Into<String>) -> Reject {
    Reject::InvalidArgument {
        message: message.into(),
    }
}

impl LockOp {
    /// Checks names and durations; what the leader checks before proposing.
    pub fn validate(&self) -> Result<(), Reject> {
        match self {
            LockOp::Acquire {
                resource,
                owner,
                ttl_ms,
                wait_ms,
            } => {
                check_resource(resource).map_err(invalid)?;
                check_owner(owner).map_err(invalid)?;
                check_ttl(*ttl_ms)?;
                if *wait_ms > MAX_LOCK_WAIT_MS {
                    return Err(invalid(format!(
                        "wait must be at most {MAX_LOCK_WAIT_MS}ms, not {wait_ms}ms"
                    )));
                }
                Ok(())
            }
            LockOp::Renew {
                resource, ttl_ms, ..
            } => {
                check_resource(resource).map_err(invalid)?;
                if *ttl_ms != 0 {
                    check_ttl(*ttl_ms)?;
                }
                Ok(())
            }
            LockOp::Release { resource, .. } => check_resource(resource).map_err(invalid),
            LockOp::Abandon {
                resource, owner, ..
            } => {
                check_resource(resource).map_err(invalid)?;
                check_owner(owner).map_err(invalid)
            }
        }
    }

    pub fn resource(&self) -> &str {
        match self {
            LockOp::Acquire { resource, .. }
            | LockOp::Renew { resource, .. }
            | LockOp::Release { resource, .. }
            | LockOp::Abandon { resource, .. } => resource,
        }
    }
}

impl LockTable {
    /// Applies `op` at log index `rev` and leader time `now`.
    pub fn apply(&mut self, rev: u64, now: u64, op: &LockOp) -> Result<Outcome, Reject> {
        op.validate()?;
        self.settle(op.resource(), rev, now);
        match op {
            LockOp::Acquire {
                resource,
                owner,
                ttl_ms,
                wait_ms,
            } => {
                let Some(l) = self.locks.get_mut(resource) else {
                    if self.locks.len() >= MAX_LOCKS {
                        return Err(Reject::TooManyLocks);
                    }
                    let expires_ms = now.saturating_add(*ttl_ms);
                    self.locks.insert(
                        resource.clone(),
                        Lock {
                            owner: owner.clone(),
                            token: rev,
                            ttl_ms: *ttl_ms,
                            expires_ms,
                            waiters: VecDeque::new(),
                        },
                    );
                    return Ok(Outcome::Granted {
                        token: rev,
                        expires_ms,
                    });
                };
                if l.owner == *owner {
                    // Re-entrant: same token, lease renewed.
                    l.ttl_ms = *ttl_ms;
                    l.expires_ms = l.expires_ms.max(now.saturating_add(*ttl_ms));
                    return Ok(Outcome::Granted {
                        token: l.token,
                        expires_ms: l.expires_ms,
                    });
                }
                if *wait_ms == 0 {
                    return Err(Reject::LockHeld {
                        resource: resource.clone(),
                    });
                }
                if let Some(pos) = l.waiters.iter().position(|w| w.owner == *owner) {
                    return Ok(Outcome::Queued {
                        position: pos as u32,
                    });
                }
                if l.waiters.len() >= MAX_LOCK_WAITERS {
                    return Err(Reject::LockHeld {
                        resource: resource.clone(),
                    });
                }
                l.waiters.push_back(Waiter {
                    owner: owner.clone(),
                    ttl_ms: *ttl_ms,
                    deadline_ms: now.saturating_add(*wait_ms),
                });
                Ok(Outcome::Queued {
                    position: (l.waiters.len() - 1) as u32,
                })
            }
            LockOp::Renew {
                resource,
                token,
                ttl_ms,
            } => {
                let l = self.held(resource, *token)?;
                if *ttl_ms != 0 {
                    l.ttl_ms = *ttl_ms;
                }
                l.expires_ms = l.expires_ms.max(now.saturating_add(l.ttl_ms));
                Ok(Outcome::Renewed {
                    expires_ms: l.expires_ms,
                })
            }
            LockOp::Release { resource, token } => {
                self.held(resource, *token)?;
                self.hand_over(resource, rev, now);
                Ok(Outcome::Released)
            }
            LockOp::Abandon {
                resource,
                owner,
                after,
            } => {
                let Some(l) = self.locks.get_mut(resource) else {
                    return Ok(Outcome::None);
                };
                l.waiters.retain(|w| w.owner != *owner);
                if l.owner == *owner && l.token > *after {
                    self.hand_over(resource, rev, now);
                    return Ok(Outcome::Released);
                }
                Ok(Outcome::None)
            }
        }
    }

    fn held(&mut self, resource: &str, token: u64) -> Result<&mut Lock, Reject> {
        match self.locks.get_mut(resource) {
            Some(l) if l.token == token => Ok(l),
            _ => Err(Reject::LockNotHeld {
                resource: resource.to_string(),
            }),
        }
    }

    /// Ends the current hold of `resource`: the first waiter still waiting gets it (token `rev`),
    /// or the lock goes away.
    fn hand_over(&mut self, resource: &str, rev: u64, now: u64) {
        let Some(l) = self.locks.get_mut(resource) else {
            return;
        };
        while let Some(w) = l.waiters.pop_front() {
            if w.deadline_ms > now {
                l.owner = w.owner;
                l.token = rev;
                l.ttl_ms = w.ttl_ms;
                l.expires_ms = now.saturating_add(w.ttl_ms);
                return;
            }
        }
        self.locks.remove(resource);
    }

    /// Expires the lease and the waiters of `resource` that ran out by `now`.
    fn settle(&mut self, resource: &str, rev: u64, now: u64) {
        let Some(l) = self.locks.get_mut(resource) else {
            return;
        };
        l.waiters.retain(|w| w.deadline_ms > now);
        if l.expires_ms <= now {
            self.hand_over(resource, rev, now);
        }
    }

    /// Expires every lease and waiter that ran out by `now` (the leader's expiry tick).
    pub fn expire(&mut self, rev: u64, now: u64) {
        let due: Vec<String> = self
            .locks
            .iter()
            .filter(|(_, l)| l.expires_ms <= now || l.waiters.iter().any(|w| w.deadline_ms <= now))
            .map(|(r, _)| r.clone())
            .collect();
        for r in due {
            self.settle(&r, rev, now);
        }
    }

    /// The earliest leader time at which something here runs out, if anything is held.
    pub fn next_deadline(&self) -> Option<u64> {
        self.locks
            .values()
            .flat_map(|l| {
                std::iter::once(l.expires_ms).chain(l.waiters.iter().map(|w| w.deadline_ms))
            })
            .min()
    }

    /// Gives every inherited lease at least its full ttl from `now` (a new leader's first timed
    /// entry), and every waiter at least what it had left.
    pub fn extend_all(&mut self, now: u64) {
        for l in self.locks.values_mut() {
            l.expires_ms = l.expires_ms.max(now.saturating_add(l.ttl_ms));
        }
        self.extend_pending = false;
    }

    /// Checks the table's invariants.
    pub fn check_invariants(&self, revision: u64) -> Result<(), String> {
        if self.locks.len() > MAX_LOCKS {
            return Err("more locks than MAX_LOCKS".into());
        }
        for (r, l) in &self.locks {
            check_resource(r).map_err(|e| format!("lock {r:?}: {e}"))?;
            check_owner(&l.owner).map_err(|e| format!("lock {r:?}: {e}"))?;
            if l.token > revision {
                return Err(format!("lock {r:?} has a token newer than the revision"));
            }
            if l.waiters.len() > MAX_LOCK_WAITERS {
                return Err(format!("lock {r:?} has too many waiters"));
            }
            if l.waiters.iter().any(|w| w.owner == l.owner) {
                return Err(format!("lock {r:?}: the holder is also waiting"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acquire(owner: &str, ttl_ms: u64, wait_ms: u64) -> LockOp {
        LockOp::Acquire {
            resource: "r".into(),
            owner: owner.into(),
            ttl_ms,
            wait_ms,
        }
    }

    fn release(token: u64) -> LockOp {
        LockOp::Release {
            resource: "r".into(),
            token,
        }
    }

    fn holder(t: &LockTable) -> Option<(&str, u64)> {
        t.locks.get("r").map(|l| (l.owner.as_str(), l.token))
    }

    #[test]
    fn the_token_is_the_granting_index_and_reacquire_is_reentrant() {
        let mut t = LockTable::default();
        let g = t.apply(10, 1000, &acquire("a", 500, 0)).unwrap();
        assert_eq!(
            g,
            Outcome::Granted {
                token: 10,
                expires_ms: 1500
            }
        );
        // The same owner again: the same token, the lease renewed.
        let g = t.apply(11, 1200, &acquire("a", 500, 0)).unwrap();
        assert_eq!(
            g,
            Outcome::Granted {
                token: 10,
                expires_ms: 1700
            }
        );
        assert_eq!(
            t.apply(12, 1300, &acquire("b", 500, 0)),
            Err(Reject::LockHeld {
                resource: "r".into()
            })
        );
        assert_eq!(t.apply(13, 1300, &release(10)), Ok(Outcome::Released));
        assert!(t.locks.is_empty());
        // Releasing twice: the token no longer holds it.
        assert_eq!(
            t.apply(14, 1300, &release(10)),
            Err(Reject::LockNotHeld {
                resource: "r".into()
            })
        );
    }

    #[test]
    fn waiters_are_served_first_come_first_served_with_increasing_tokens() {
        let mut t = LockTable::default();
        t.apply(1, 0, &acquire("a", 1000, 0)).unwrap();
        for (i, w) in ["b", "c", "d"].iter().enumerate() {
            let q = t.apply(2 + i as u64, 0, &acquire(w, 1000, 5000)).unwrap();
            assert_eq!(q, Outcome::Queued { position: i as u32 });
        }
        // Asking again keeps the place in line.
        assert_eq!(
            t.apply(5, 0, &acquire("c", 1000, 5000)).unwrap(),
            Outcome::Queued { position: 1 }
        );
        let mut token = 1;
        for (rev, next) in [(10, "b"), (11, "c"), (12, "d")] {
            t.apply(rev, 10, &release(token)).unwrap();
            assert_eq!(holder(&t), Some((next, rev)));
            assert!(rev > token);
            token = rev;
        }
        t.apply(13, 10, &release(token)).unwrap();
        assert!(t.locks.is_empty());
    }

    #[test]
    fn an_expired_lease_passes_to_the_next_waiter_and_old_tokens_stop_working() {
        let mut t = LockTable::default();
        t.apply(1, 0, &acquire("a", 100, 0)).unwrap();
        t.apply(2, 0, &acquire("b", 100, 10_000)).unwrap();
        assert_eq!(t.next_deadline(), Some(100));
        t.expire(3, 99);
        assert_eq!(holder(&t), Some(("a", 1)));
        t.expire(4, 100);
        assert_eq!(holder(&t), Some(("b", 4)));
        let renew = LockOp::Renew {
            resource: "r".into(),
            token: 1,
            ttl_ms: 0,
        };
        assert!(matches!(
            t.apply(5, 150, &renew),
            Err(Reject::LockNotHeld { .. })
        ));
        // Without a tick, the next operation on the resource settles it first.
        assert_eq!(
            t.apply(6, 400, &acquire("c", 100, 0)).unwrap(),
            Outcome::Granted {
                token: 6,
                expires_ms: 500
            }
        );
    }

    #[test]
    fn a_waiter_whose_wait_ran_out_is_dropped_and_never_granted() {
        let mut t = LockTable::default();
        t.apply(1, 0, &acquire("a", 1000, 0)).unwrap();
        t.apply(2, 0, &acquire("b", 1000, 200)).unwrap();
        t.apply(3, 0, &acquire("c", 1000, 5000)).unwrap();
        t.expire(4, 300);
        assert_eq!(t.locks["r"].waiters.len(), 1);
        t.apply(5, 400, &release(1)).unwrap();
        assert_eq!(holder(&t), Some(("c", 5)));
        // A waiter that gave up is gone too.
        t.apply(6, 400, &acquire("d", 1000, 5000)).unwrap();
        let abandon = |owner: &str, after| LockOp::Abandon {
            resource: "r".into(),
            owner: owner.into(),
            after,
        };
        t.apply(7, 400, &abandon("d", 6)).unwrap();
        t.apply(8, 400, &release(5)).unwrap();
        assert!(t.locks.is_empty());
        // An acquire that did commit after all is undone; a hold from before is kept.
        t.apply(9, 400, &acquire("e", 1000, 0)).unwrap();
        assert_eq!(t.apply(10, 400, &abandon("e", 9)).unwrap(), Outcome::None);
        assert_eq!(holder(&t), Some(("e", 9)));
        assert_eq!(
            t.apply(11, 400, &abandon("e", 8)).unwrap(),
            Outcome::Released
        );
        assert!(t.locks.is_empty());
    }

    #[test]
    fn renew_extends_and_a_new_leader_never_shortens_a_lease() {
        let mut t = LockTable::default();
        t.apply(1, 1000, &acquire("a", 500, 0)).unwrap();
        let renew = LockOp::Renew {
            resource: "r".into(),
            token: 1,
            ttl_ms: 0,
        };
        assert_eq!(
            t.apply(2, 1400, &renew).unwrap(),
            Outcome::Renewed { expires_ms: 1900 }
        );
        // A new leader whose clock is ahead: the lease still gets a full ttl from its clock.
        t.extend_pending = true;
        t.extend_all(1800);
        assert_eq!(t.locks["r"].expires_ms, 2300);
        assert!(!t.extend_pending);
        // One whose clock is behind keeps the old, later deadline.
        t.extend_all(1000);
        assert_eq!(t.locks["r"].expires_ms, 2300);
    }

    #[test]
    fn bad_names_and_durations_are_refused() {
        let mut t = LockTable::default();
        for op in [
            LockOp::Acquire {
                resource: String::new(),
                owner: "a".into(),
                ttl_ms: 1000,
                wait_ms: 0,
            },
            LockOp::Acquire {
                resource: "r".into(),
                owner: "a b".into(),
                ttl_ms: 1000,
                wait_ms: 0,
            },
            LockOp::Acquire {
                resource: "x".repeat(MAX_LOCK_RESOURCE_BYTES + 1),
                owner: "a".into(),
                ttl_ms: 1000,
                wait_ms: 0,
            },
            acquire("a", MIN_LOCK_TTL_MS - 1, 0),
            acquire("a", MAX_LOCK_TTL_MS + 1, 0),
            acquire("a", 1000, MAX_LOCK_WAIT_MS + 1),
        ] {
            assert!(
                matches!(t.apply(1, 0, &op), Err(Reject::InvalidArgument { .. })),
                "{op:?}"
            );
        }
        assert!(t.locks.is_empty());
        t.check_invariants(1).unwrap();
    }
}

/// A granted lock: the fencing token and the end of the lease (leader time, ms since the epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockGrant {
    pub token: u64,
    pub expires_ms: u64,
}
