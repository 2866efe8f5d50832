//! The history a test records: each client operation with its call, its outcome and when it was
//! invoked and completed, plus the faults injected meanwhile; saved and loaded as JSON.

use serde::{Deserialize, Serialize};

/// Time in microseconds since the start of the run (one clock for every client and the nemesis).
pub type Micros = u64;

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Call {
    /// `kv put KEY VALUE`.
    Put { key: String, value: String },
    /// `kv get KEY` (linearizable).
    Get { key: String },
    /// `kv cas KEY --rev REV VALUE` (`rev` 0: the key must not exist).
    Cas {
        key: String,
        rev: u64,
        value: String,
    },
    /// `kv delete KEY`.
    Delete { key: String },
    /// `lock acquire LOCK --ttl TTL --owner OWNER`.
    Acquire {
        lock: String,
        owner: String,
        ttl_ms: u64,
    },
    /// `lock release LOCK --token TOKEN`.
    Release { lock: String, token: u64 },
}

impl Call {
    /// The key of a key-value call.
    pub fn key(&self) -> Option<&str> {
        match self {
            Call::Put { key, .. }
            | Call::Get { key }
            | Call::Cas { key, .. }
            | Call::Delete { key } => Some(key),
            Call::Acquire { .. } | Call::Release { .. } => None,
        }
    }

    /// The value a put or cas writes.
    pub fn written(&self) -> Option<&str> {
        match self {
            Call::Put { value, .. } | Call::Cas { value, .. } => Some(value),
            _ => None,
        }
    }

    /// A short name for summaries: `put`, `get`, `cas`, `delete`, `acquire`, `release`.
    pub fn kind(&self) -> &'static str {
        match self {
            Call::Put { .. } => "put",
            Call::Get { .. } => "get",
            Call::Cas { .. } => "cas",
            Call::Delete { .. } => "delete",
            Call::Acquire { .. } => "acquire",
            Call::Release { .. } => "release",
        }
    }
}

/// What a successful call returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Ret {
    /// A put or cas: the write's revision.
    Written { rev: u64 },
    /// A get: the value and its `mod_revision` (when known), or `None` for no such key.
    Read {
        value: Option<String>,
        rev: Option<u64>,
    },
    /// A delete: whether the key existed (`ignored: no key` otherwise).
    Deleted { existed: bool },
    /// An acquire: the fencing token.
    Granted { token: u64 },
    /// A release.
    Released,
}

/// How a call ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    /// Exit 0 with this result.
    Ok { ret: Ret },
    /// Exit 1: the call was not applied. `code` is the CONTRACT.md error code; `compare_failed`
    /// on a cas is also an observation (the key was not at `rev`).
    Failed {
        code: String,
        /// The rest of the `error:` line, for the report.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        message: String,
    },
    /// Exit 3 (`outcome_unknown`), a client timeout, a killed client: the call may take effect at
    /// any time after its invocation, or never.
    Unknown { reason: String },
}

/// One client operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub client: u32,
    /// The agent addressed (for the report only).
    #[serde(default)]
    pub node: String,
    pub invoke_us: Micros,
    /// `None` when the client never saw an answer.
    pub complete_us: Option<Micros>,
    pub call: Call,
    pub outcome: Outcome,
}

impl Op {
    pub fn is_ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok { .. })
    }

    pub fn is_unknown(&self) -> bool {
        matches!(self.outcome, Outcome::Unknown { .. })
    }

    /// Definitely not applied (exit 1).
    pub fn is_failed(&self) -> bool {
        matches!(self.outcome, Outcome::Failed { .. })
    }

    pub fn failed_with(&self, code: &str) -> bool {
        matches!(&self.outcome, Outcome::Failed { code: c, .. } if c == code)
    }

    pub fn ret(&self) -> Option<&Ret> {
        match &self.outcome {
            Outcome::Ok { ret } => Some(ret),
            _ => None,
        }
    }

    /// When it completed; unknown operations count as never completing.
    pub fn end_us(&self) -> Micros {
        match (&self.outcome, self.complete_us) {
            (Outcome::Unknown { .. }, _) | (_, None) => Micros::MAX,
            (_, Some(t)) => t,
        }
    }

    /// One line for reports: `#12 c3 n2 put k1=c3-7 [1.204s..1.260s] -> ok rev 5121`.
    pub fn describe(&self, index: usize) -> String {
        let call = match &self.call {
            Call::Put { key, value } => format!("put {key}={value}"),
            Call::Get { key } => format!("get {key}"),
            Call::Cas { key, rev, value } => format!("cas {key}@{rev}={value}"),
            Call::Delete { key } => format!("delete {key}"),
            Call::Acquire {
                lock,
                owner,
                ttl_ms,
            } => format!("acquire {lock} owner {owner} ttl {ttl_ms}ms"),
            Call::Release { lock, token } => format!("release {lock} token {token}"),
        };
        let outcome = match &self.outcome {
            Outcome::Ok { ret } => match ret {
                Ret::Written { rev } => format!("ok rev {rev}"),
                Ret::Read {
                    value: Some(v),
                    rev,
                } => format!("ok {v} rev {}", rev.map_or("?".into(), |r| r.to_string())),
                Ret::Read { value: None, .. } => "ok (no key)".into(),
                Ret::Deleted { existed } => format!("ok existed={existed}"),
                Ret::Granted { token } => format!("ok token {token}"),
                Ret::Released => "ok released".into(),
            },
            Outcome::Failed { code, .. } => format!("failed {code}"),
            Outcome::Unknown { reason } => format!("unknown ({reason})"),
        };
        let end = self
            .complete_us
            .map_or("…".into(), |t| format!("{:.3}s", t as f64 / 1e6));
        format!(
            "#{index} c{} {} {call} [{:.3}s..{end}] -> {outcome}",
            self.client,
            self.node,
            self.invoke_us as f64 / 1e6
        )
    }
}

/// A fault the nemesis injected (for the report and for replay).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub start_us: Micros,
    pub end_us: Micros,
    pub what: String,
}

/// One entry of the cluster's own change log (`kv watch --json`): a put (with its value) or a
/// delete, at a revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub rev: u64,
    pub key: String,
    /// `None` for a delete.
    pub value: Option<String>,
}

/// A whole run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The seed of the run's schedule, if it had one.
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub nodes: usize,
    #[serde(default)]
    pub faults: Vec<Fault>,
    pub ops: Vec<Op>,
    /// The key-value change log as a watch from revision 1 saw it, when the run recorded it
    /// whole (empty otherwise).
    #[serde(default)]
    pub changes: Vec<Change>,
    /// Every agent's membership events at the end of the run, when it recorded them.
    #[serde(default)]
    pub membership: Option<crate::members::Membership>,
}

impl History {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a history always serializes")
    }

    pub fn from_json(s: &str) -> Result<History, serde_json::Error> {
        serde_json::from_str(s)
    }

    pub fn save(&self, path: &std::path::Path) -> std::io::Result<()> {
        std::fs::write(path, self.to_json())
    }

    pub fn load(path: &std::path::Path) -> Result<History, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        History::from_json(&text).map_err(|e| format!("{}: not a history: {e}", path.display()))
    }

    /// Operations by kind and outcome, one line per kind: `put 120 (ok 100, failed 5, unknown 15)`.
    pub fn summary(&self) -> String {
        let mut rows: Vec<(&str, [usize; 3])> = Vec::new();
        for op in &self.ops {
            let k = op.call.kind();
            let i = match rows.iter().position(|(n, _)| *n == k) {
                Some(i) => i,
                None => {
                    rows.push((k, [0; 3]));
                    rows.len() - 1
                }
            };
            let slot = match op.outcome {
                Outcome::Ok { .. } => 0,
                Outcome::Failed { .. } => 1,
                Outcome::Unknown { .. } => 2,
            };
            rows[i].1[slot] += 1;
        }
        rows.iter()
            .map(|(k, [ok, failed, unknown])| {
                format!(
                    "{k} {} (ok {ok}, failed {failed}, unknown {unknown})",
                    ok + failed + unknown
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_survives_json() {
        let h = History {
            seed: Some(7),
            nodes: 3,
            faults: vec![Fault {
                start_us: 1,
                end_us: 2,
                what: "kill n1".into(),
            }],
            changes: vec![Change {
                rev: 1024,
                key: "k".into(),
                value: Some("v".into()),
            }],
            membership: Some(crate::members::Membership {
                streams: vec![crate::members::MemberStream {
                    agent: "n1".into(),
                    events: vec![crate::members::MemberEvent {
                        revision: 1,
                        event: "member_joined".into(),
                        name: "n1".into(),
                    }],
                }],
                final_members: vec!["n1".into()],
            }),
            ops: vec![
                Op {
                    client: 1,
                    node: "n1".into(),
                    invoke_us: 10,
                    complete_us: Some(20),
                    call: Call::Cas {
                        key: "k".into(),
                        rev: 0,
                        value: "v".into(),
                    },
                    outcome: Outcome::Ok {
                        ret: Ret::Written { rev: 1024 },
                    },
                },
                Op {
                    client: 2,
                    node: "n2".into(),
                    invoke_us: 15,
                    complete_us: None,
                    call: Call::Get { key: "k".into() },
                    outcome: Outcome::Unknown {
                        reason: "timeout".into(),
                    },
                },
            ],
        };
        assert_eq!(History::from_json(&h.to_json()).unwrap(), h);
        assert!(h.summary().contains("cas 1 (ok 1, failed 0, unknown 0)"));
    }

    #[test]
    fn a_bad_file_is_an_error_not_a_panic() {
        assert!(History::from_json("{\"ops\": [{\"client\": 1}]}").is_err());
        assert!(History::from_json("not json").is_err());
    }
}
