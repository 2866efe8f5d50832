//! Membership event streams against each other and against the committed membership: every
//! agent's `ekka members watch --from 1` must be a prefix of one and the same sequence (they all
//! replay one log), revisions never go back, and replaying the member events of the longest
//! stream gives the members the cluster reports at the end.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// One membership event as `ekka members watch --json` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEvent {
    pub revision: u64,
    pub event: String,
    pub name: String,
}

/// What one agent's watch from revision 1 returned.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStream {
    pub agent: String,
    pub events: Vec<MemberEvent>,
}

/// The members the cluster reported at the end, and the stream read last (the longest).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub streams: Vec<MemberStream>,
    /// Names of the members in the final status, sorted; checked against the longest stream.
    pub final_members: Vec<String>,
}

/// Revisions never go back within a stream.
pub fn ordered(m: &Membership) -> Vec<String> {
    let mut found = Vec::new();
    for s in &m.streams {
        for w in s.events.windows(2) {
            if w[1].revision < w[0].revision {
                found.push(format!(
                    "{}'s events go back from revision {} ({} {}) to {} ({} {})",
                    s.agent,
                    w[0].revision,
                    w[0].event,
                    w[0].name,
                    w[1].revision,
                    w[1].event,
                    w[1].name
                ));
            }
        }
    }
    found
}

/// Every stream is a prefix of the longest one.
pub fn agree(m: &Membership) -> Vec<String> {
    let Some(longest) = m.streams.iter().max_by_key(|s| s.events.len()) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for s in &m.streams {
        if let Some(k) = (s.events.iter().zip(&longest.events)).position(|(a, b)| a != b) {
            found.push(format!(
                "{} and {} disagree at event {k}: {:?} vs {:?}",
                s.agent, longest.agent, s.events[k], longest.events[k]
            ));
        }
    }
    found
}

/// The members that joining, leaving and removal events leave, in name order.
pub fn replay(events: &[MemberEvent]) -> Vec<String> {
    let mut members = BTreeSet::new();
    for e in events {
        match e.event.as_str() {
            "member_joined" => {
                members.insert(e.name.clone());
            }
            "member_left" | "member_removed" => {
                members.remove(&e.name);
            }
            _ => {}
        }
    }
    members.into_iter().collect()
}

/// Replaying the longest stream gives the final members.
pub fn replay_matches(m: &Membership) -> Vec<String> {
    let Some(longest) = m.streams.iter().max_by_key(|s| s.events.len()) else {
        return Vec::new();
    };
    let replayed = replay(&longest.events);
    if replayed == m.final_members {
        return Vec::new();
    }
    vec![format!(
        "replaying {}'s {} events gives members {replayed:?}, the cluster reports {:?}",
        longest.agent,
        longest.events.len(),
        m.final_members
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(revision: u64, event: &str, name: &str) -> MemberEvent {
        MemberEvent {
            revision,
            event: event.into(),
            name: name.into(),
        }
    }

    fn stream(agent: &str, events: Vec<MemberEvent>) -> MemberStream {
        MemberStream {
            agent: agent.into(),
            events,
        }
    }

    fn history() -> Vec<MemberEvent> {
        vec![
            ev(1, "member_joined", "n1"),
            ev(1, "leader_changed", "n1"),
            ev(5, "member_joined", "n2"),
            ev(9, "member_joined", "n3"),
            ev(14, "member_left", "n2"),
            ev(20, "member_joined", "n2"),
        ]
    }

    #[test]
    fn prefixes_of_one_history_that_replay_to_the_members_pass() {
        let h = history();
        let m = Membership {
            streams: vec![stream("n1", h.clone()), stream("n2", h[..4].to_vec())],
            final_members: vec!["n1".into(), "n2".into(), "n3".into()],
        };
        assert!(ordered(&m).is_empty());
        assert!(agree(&m).is_empty());
        assert!(replay_matches(&m).is_empty());
    }

    #[test]
    fn a_diverging_stream_is_reported() {
        let h = history();
        let mut other = h.clone();
        other[3] = ev(9, "member_joined", "n4");
        let m = Membership {
            streams: vec![stream("n1", h), stream("n3", other)],
            final_members: vec![],
        };
        let found = agree(&m);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("event 3"), "{found:?}");
    }

    #[test]
    fn a_missing_removal_and_a_revision_going_back_are_reported() {
        let mut h = history();
        let m = Membership {
            streams: vec![stream("n1", h.clone())],
            // n2 left and came back: it is a member; n3 is not in the final status.
            final_members: vec!["n1".into(), "n2".into()],
        };
        assert_eq!(replay_matches(&m).len(), 1);
        h.swap(2, 3);
        h[2].revision = 12;
        let m = Membership {
            streams: vec![stream("n1", h)],
            final_members: vec![],
        };
        assert_eq!(ordered(&m).len(), 1, "{:?}", ordered(&m));
    }
}
