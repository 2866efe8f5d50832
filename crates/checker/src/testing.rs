//! Builders of small histories for the unit tests.

use crate::history::{Call, Op, Outcome, Ret};

pub fn ok_rev(rev: u64) -> Outcome {
    Outcome::Ok {
        ret: Ret::Written { rev },
    }
}

pub fn unknown() -> Outcome {
    Outcome::Unknown {
        reason: "timeout".into(),
    }
}

pub fn failed(code: &str) -> Outcome {
    Outcome::Failed {
        code: code.into(),
        message: String::new(),
    }
}

fn op(client: u32, t0: u64, t1: u64, call: Call, outcome: Outcome) -> Op {
    let complete_us = (!matches!(outcome, Outcome::Unknown { .. })).then_some(t1);
    Op {
        client,
        node: "n1".into(),
        invoke_us: t0,
        complete_us,
        call,
        outcome,
    }
}

pub fn put(client: u32, t0: u64, t1: u64, value: &str, outcome: Outcome) -> Op {
    let call = Call::Put {
        key: "k".into(),
        value: value.into(),
    };
    op(client, t0, t1, call, outcome)
}

pub fn cas(client: u32, t0: u64, t1: u64, rev: u64, value: &str, outcome: Outcome) -> Op {
    let call = Call::Cas {
        key: "k".into(),
        rev,
        value: value.into(),
    };
    op(client, t0, t1, call, outcome)
}

/// A get that saw `seen` (value and revision) or no key.
pub fn get(client: u32, t0: u64, t1: u64, seen: Option<(&str, u64)>) -> Op {
    let ret = Ret::Read {
        value: seen.map(|(v, _)| v.to_string()),
        rev: seen.map(|(_, r)| r),
    };
    op(
        client,
        t0,
        t1,
        Call::Get { key: "k".into() },
        Outcome::Ok { ret },
    )
}

/// A delete; `existed` `None` for an unknown outcome.
pub fn del(client: u32, t0: u64, t1: u64, existed: Option<bool>) -> Op {
    let outcome = match existed {
        Some(existed) => Outcome::Ok {
            ret: Ret::Deleted { existed },
        },
        None => unknown(),
    };
    op(client, t0, t1, Call::Delete { key: "k".into() }, outcome)
}

/// An acquire of lock `l` by `owner` with a ttl of `ttl_us` µs (rounded down to ms).
pub fn acquire(owner: &str, t0: u64, t1: u64, ttl_us: u64, outcome: Outcome) -> Op {
    let call = Call::Acquire {
        lock: "l".into(),
        owner: owner.into(),
        ttl_ms: ttl_us / 1000,
    };
    op(1, t0, t1, call, outcome)
}

pub fn granted(token: u64) -> Outcome {
    Outcome::Ok {
        ret: Ret::Granted { token },
    }
}

pub fn release(t0: u64, t1: u64, token: u64) -> Op {
    let call = Call::Release {
        lock: "l".into(),
        token,
    };
    op(1, t0, t1, call, Outcome::Ok { ret: Ret::Released })
}
