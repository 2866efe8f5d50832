//! The small replicated key-value space: entries with etcd-style revisions, and a bounded window
//! of recent changes for `watch(prefix, from_revision)`.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::limits::{
    MAX_KEYS, MAX_KEY_BYTES, MAX_KV_EVENTS_RETAINED, MAX_KV_EVENT_BYTES, MAX_KV_TOTAL_BYTES,
    MAX_VALUE_BYTES,
};
use crate::outcome::{Outcome, Reject};

/// A key-value operation, carried by [`crate::Command::Kv`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvOp {
    Put {
        key: String,
        #[serde(with = "b64")]
        value: Vec<u8>,
    },
    Delete {
        key: String,
    },
    /// Writes `value` (or deletes, when `None`) only if the key's `mod_revision` is `expect`
    /// (`0`: the key must not exist).
    Cas {
        key: String,
        expect: u64,
        #[serde(with = "b64_opt", default)]
        value: Option<Vec<u8>>,
    },
}

/// A stored value. Shared: the key's entry and its retained change hold one copy, and cloning the
/// state for a snapshot copies no value.
pub type Value = Arc<[u8]>;

/// One stored value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    #[serde(with = "b64_shared")]
    pub value: Value,
    /// Revision of the put that created the key.
    pub create_revision: u64,
    /// Revision of the last put.
    pub mod_revision: u64,
    /// Number of puts since the key was created.
    pub version: u64,
}

/// A change, as `watch` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEvent {
    pub revision: u64,
    pub key: String,
    /// `None` for a delete.
    #[serde(with = "b64_shared_opt", default)]
    pub value: Option<Value>,
}

impl KvEvent {
    fn bytes(&self) -> usize {
        self.key.len() + self.value.as_ref().map_or(0, |v| v.len())
    }
}

/// The whole key-value space.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvSpace {
    pub entries: BTreeMap<String, KvEntry>,
    /// Sum of key and value lengths of `entries`.
    pub bytes: u64,
    /// Recent changes, oldest first.
    pub events: VecDeque<KvEvent>,
    /// Sum of key and value lengths of `events`.
    pub event_bytes: u64,
    /// Revision of the newest change dropped from `events` (0: none dropped).
    pub compacted_to: u64,
}

/// Checks a key: 1..=MAX_KEY_BYTES of printable characters without whitespace.
pub fn check_key(k: &str) -> Result<(), String> {
    crate::lock::check_text("key", k, MAX_KEY_BYTES)
}

/// Checks a value's size.
pub fn check_value(v: &[u8]) -> Result<(), String> {
    if v.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "value of {} bytes is over the {MAX_VALUE_BYTES}-byte limit",
            v.len()
        ));
    }
    Ok(())
}

fn invalid(message: impl Into<String>) -> Reject {
    Reject::InvalidArgument {
        message: message.into(),
    }
}

impl KvOp {
    pub fn key(&self) -> &str {
        match self {
            KvOp::Put { key, .. } | KvOp::Delete { key } | KvOp::Cas { key, .. } => key,
        }
    }

    /// Checks the key and the value; what the leader checks before proposing.
    pub fn validate(&self) -> Result<(), Reject> {
        check_key(self.key()).map_err(invalid)?;
        match self {
            KvOp::Put { value, .. }
            | KvOp::Cas {
                value: Some(value), ..
            } => check_value(value).map_err(invalid),
            _ => Ok(()),
        }
    }
}

impl KvSpace {
    /// Applies `op` at revision `rev`.
    pub fn apply(&mut self, rev: u64, op: &KvOp) -> Result<Outcome, Reject> {
        op.validate()?;
        match op {
            KvOp::Put { key, value } => self.put(rev, key, value),
            KvOp::Delete { key } => Ok(Outcome::Deleted {
                existed: self.delete(rev, key),
            }),
            KvOp::Cas { key, expect, value } => {
                let actual = self.entries.get(key).map_or(0, |e| e.mod_revision);
                if actual != *expect {
                    return Err(Reject::CompareFailed {
                        key: key.clone(),
                        revision: actual,
                    });
                }
                match value {
                    Some(v) => self.put(rev, key, v),
                    None => Ok(Outcome::Deleted {
                        existed: self.delete(rev, key),
                    }),
                }
            }
        }
    }

    fn put(&mut self, rev: u64, key: &str, value: &[u8]) -> Result<Outcome, Reject> {
        let old = self.entries.get(key);
        let old_bytes = old.map_or(0, |e| key.len() + e.value.len()) as u64;
        let new_bytes = (key.len() + value.len()) as u64;
        if old.is_none() && self.entries.len() >= MAX_KEYS {
            return Err(Reject::KvFull {
                message: format!("the key-value space already holds {MAX_KEYS} keys"),
            });
        }
        let total = self.bytes.saturating_sub(old_bytes) + new_bytes;
        if total > MAX_KV_TOTAL_BYTES {
            return Err(Reject::KvFull {
                message: format!(
                    "the key-value space would hold {total} bytes, over the {MAX_KV_TOTAL_BYTES}-byte limit"
                ),
            });
        }
        self.bytes = total;
        let prev_revision = old.map_or(0, |e| e.mod_revision);
        let value: Value = Arc::from(value);
        let entry = match self.entries.get(key) {
            Some(e) => KvEntry {
                value: value.clone(),
                create_revision: e.create_revision,
                mod_revision: rev,
                version: e.version + 1,
            },
            None => KvEntry {
                value: value.clone(),
                create_revision: rev,
                mod_revision: rev,
                version: 1,
            },
        };
        self.entries.insert(key.to_string(), entry);
        self.record(KvEvent {
            revision: rev,
            key: key.to_string(),
            value: Some(value),
        });
        Ok(Outcome::Put { prev_revision })
    }

    fn delete(&mut self, rev: u64, key: &str) -> bool {
        let Some(e) = self.entries.remove(key) else {
            return false;
        };
        self.bytes = self
            .bytes
            .saturating_sub((key.len() + e.value.len()) as u64);
        self.record(KvEvent {
            revision: rev,
            key: key.to_string(),
            value: None,
        });
        true
    }

    fn record(&mut self, ev: KvEvent) {
        self.event_bytes += ev.bytes() as u64;
        self.events.push_back(ev);
        while self.events.len() > MAX_KV_EVENTS_RETAINED || self.event_bytes > MAX_KV_EVENT_BYTES {
            let Some(old) = self.events.pop_front() else {
                break;
            };
            self.event_bytes = self.event_bytes.saturating_sub(old.bytes() as u64);
            self.compacted_to = old.revision;
        }
    }

    /// Keys starting with `prefix`, in order, at most `limit` of them (0: no limit).
    pub fn range(&self, prefix: &str, limit: usize) -> Vec<(String, KvEntry)> {
        let it = self
            .entries
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, e)| (k.clone(), e.clone()));
        if limit == 0 {
            it.collect()
        } else {
            it.take(limit).collect()
        }
    }

    /// Changes under `prefix` with a revision of at least `from`, oldest first; `None` when some
    /// of them were already dropped from the retained window.
    pub fn events_from(&self, prefix: &str, from: u64) -> Option<Vec<KvEvent>> {
        if from <= self.compacted_to {
            return None;
        }
        Some(
            self.events
                .iter()
                .filter(|e| e.revision >= from && e.key.starts_with(prefix))
                .cloned()
                .collect(),
        )
    }

    /// Checks the space's invariants.
    pub fn check_invariants(&self, revision: u64) -> Result<(), String> {
        if self.entries.len() > MAX_KEYS {
            return Err("more keys than MAX_KEYS".into());
        }
        let mut bytes = 0u64;
        for (k, e) in &self.entries {
            check_key(k).map_err(|m| format!("key {k:?}: {m}"))?;
            check_value(&e.value).map_err(|m| format!("key {k:?}: {m}"))?;
            if e.mod_revision > revision || e.create_revision > e.mod_revision {
                return Err(format!("key {k:?} has revisions out of order"));
            }
            bytes += (k.len() + e.value.len()) as u64;
        }
        if bytes != self.bytes || bytes > MAX_KV_TOTAL_BYTES {
            return Err("the key-value byte count is wrong".into());
        }
        let ev_bytes: u64 = self.events.iter().map(|e| e.bytes() as u64).sum();
        if ev_bytes != self.event_bytes
            || self.events.len() > MAX_KV_EVENTS_RETAINED
            || ev_bytes > MAX_KV_EVENT_BYTES
        {
            return Err("the key-value event window is wrong".into());
        }
        let mut last = self.compacted_to;
        for e in &self.events {
            if e.revision <= last || e.revision > revision {
                return Err("key-value events are out of order".into());
            }
            last = e.revision;
        }
        Ok(())
    }
}

/// Bytes: base64 in human-readable formats (JSON: snapshots, forwarded requests, old log
/// entries), raw bytes in binary ones (the log, Raft messages).
mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
        } else {
            s.serialize_bytes(v)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        if d.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            base64::engine::general_purpose::STANDARD
                .decode(s.as_bytes())
                .map_err(serde::de::Error::custom)
        } else {
            d.deserialize_byte_buf(BytesVisitor)
        }
    }

    struct BytesVisitor;

    impl<'de> serde::de::Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("bytes")
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(a.size_hint().unwrap_or(0).min(4096));
            while let Some(b) = a.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}

/// [`Value`]s, as `b64` writes bytes.
mod b64_shared {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &super::Value, s: S) -> Result<S::Ok, S::Error> {
        super::b64::serialize(v, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<super::Value, D::Error> {
        super::b64::deserialize(d).map(super::Value::from)
    }
}

mod b64_shared_opt {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize)]
    struct Ref<'a>(#[serde(with = "super::b64")] &'a [u8]);

    #[derive(Deserialize)]
    struct Owned(#[serde(with = "super::b64")] Vec<u8>);

    pub fn serialize<S: Serializer>(v: &Option<super::Value>, s: S) -> Result<S::Ok, S::Error> {
        v.as_deref().map(Ref).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<super::Value>, D::Error> {
        Ok(Option::<Owned>::deserialize(d)?.map(|w| w.0.into()))
    }
}

mod b64_opt {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize)]
    struct Ref<'a>(#[serde(with = "super::b64")] &'a Vec<u8>);

    #[derive(Deserialize)]
    struct Owned(#[serde(with = "super::b64")] Vec<u8>);

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        v.as_ref().map(Ref).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Ok(Option::<Owned>::deserialize(d)?.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &[u8]) -> KvOp {
        KvOp::Put {
            key: key.into(),
            value: value.to_vec(),
        }
    }

    #[test]
    fn puts_carry_revisions_and_versions() {
        let mut kv = KvSpace::default();
        assert_eq!(
            kv.apply(5, &put("a", b"1")),
            Ok(Outcome::Put { prev_revision: 0 })
        );
        assert_eq!(
            kv.apply(7, &put("a", b"22")),
            Ok(Outcome::Put { prev_revision: 5 })
        );
        let e = &kv.entries["a"];
        assert_eq!((e.create_revision, e.mod_revision, e.version), (5, 7, 2));
        assert_eq!(&*e.value, b"22");
        assert_eq!(kv.bytes, 3);
        assert_eq!(
            kv.apply(8, &KvOp::Delete { key: "a".into() }),
            Ok(Outcome::Deleted { existed: true })
        );
        assert_eq!(
            kv.apply(9, &KvOp::Delete { key: "a".into() }),
            Ok(Outcome::Deleted { existed: false })
        );
        assert_eq!(kv.bytes, 0);
        kv.check_invariants(9).unwrap();
    }

    #[test]
    fn cas_compares_the_mod_revision() {
        let mut kv = KvSpace::default();
        let cas = |expect, value: Option<&[u8]>| KvOp::Cas {
            key: "k".into(),
            expect,
            value: value.map(<[u8]>::to_vec),
        };
        kv.apply(3, &cas(0, Some(b"x"))).unwrap();
        assert_eq!(
            kv.apply(4, &cas(0, Some(b"y"))),
            Err(Reject::CompareFailed {
                key: "k".into(),
                revision: 3
            })
        );
        kv.apply(5, &cas(3, Some(b"y"))).unwrap();
        assert_eq!(&*kv.entries["k"].value, b"y");
        kv.apply(6, &cas(5, None)).unwrap();
        assert!(kv.entries.is_empty());
    }

    #[test]
    fn limits_are_clear_errors_that_change_nothing() {
        let mut kv = KvSpace::default();
        let too_big = vec![0u8; MAX_VALUE_BYTES + 1];
        assert!(matches!(
            kv.apply(1, &put("k", &too_big)),
            Err(Reject::InvalidArgument { .. })
        ));
        assert!(matches!(
            kv.apply(1, &put(&"k".repeat(MAX_KEY_BYTES + 1), b"")),
            Err(Reject::InvalidArgument { .. })
        ));
        assert!(matches!(
            kv.apply(1, &put("a\nb", b"")),
            Err(Reject::InvalidArgument { .. })
        ));
        let big = vec![0u8; MAX_VALUE_BYTES];
        let mut rev = 1;
        let full = loop {
            match kv.apply(rev, &put(&format!("k{rev}"), &big)) {
                Ok(_) => rev += 1,
                Err(e) => break e,
            }
        };
        assert!(matches!(full, Reject::KvFull { .. }), "{full:?}");
        assert!(kv.bytes <= MAX_KV_TOTAL_BYTES);
        kv.check_invariants(rev).unwrap();
    }

    #[test]
    fn the_event_window_is_bounded_and_resumable() {
        let mut kv = KvSpace::default();
        for rev in 1..=(MAX_KV_EVENTS_RETAINED as u64 + 10) {
            kv.apply(rev, &put(if rev % 2 == 0 { "a/x" } else { "b/y" }, b"v"))
                .unwrap();
        }
        assert_eq!(kv.events.len(), MAX_KV_EVENTS_RETAINED);
        assert_eq!(kv.compacted_to, 10);
        assert!(kv.events_from("", 10).is_none());
        let evs = kv.events_from("a/", 11).unwrap();
        assert!(evs.iter().all(|e| e.key == "a/x" && e.revision >= 11));
        assert_eq!(evs.first().map(|e| e.revision), Some(12));
        assert_eq!(kv.range("a/", 0).len(), 1);
        assert_eq!(kv.range("", 1).len(), 1);
        kv.check_invariants(MAX_KV_EVENTS_RETAINED as u64 + 10)
            .unwrap();
    }

    #[test]
    fn values_travel_as_base64_in_json() {
        let op = put("k", &[0, 255, 1]);
        let j = serde_json::to_string(&op).unwrap();
        assert!(j.contains("AP8B"), "{j}");
        assert_eq!(serde_json::from_str::<KvOp>(&j).unwrap(), op);
        let cas = KvOp::Cas {
            key: "k".into(),
            expect: 1,
            value: None,
        };
        let j = serde_json::to_string(&cas).unwrap();
        assert_eq!(serde_json::from_str::<KvOp>(&j).unwrap(), cas);
    }
}

/// The answer to a range read: entries by key, the revision read at, and whether the limit cut
/// the answer short.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvRange {
    /// The revision the read saw.
    pub revision: u64,
    pub entries: Vec<(String, KvEntry)>,
    /// More keys matched than the limit let through.
    pub more: bool,
}
