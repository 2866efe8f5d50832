//! Rendering of `cluster status`: the table and the JSON of CONTRACT.md.

use ekka::types::fmt_id;
use ekka::{ClusterStatus, Event, EventKind};
use serde_json::{json, Value};

/// The JSON object of `ekka cluster status --json`.
pub fn status_json(s: &ClusterStatus) -> Value {
    let members: Vec<Value> = s
        .members
        .iter()
        .map(|m| {
            json!({
                "name": m.name,
                "id": fmt_id(m.id),
                "addr": m.addr,
                "role": m.role.as_str(),
                "status": m.status.as_str(),
            })
        })
        .collect();
    json!({
        "cluster_id": fmt_id(s.cluster_id),
        "node": {"name": s.node_name, "id": fmt_id(s.node_id), "addr": s.node_addr},
        "leader": s.leader,
        "term": s.term,
        "revision": s.revision,
        "members": members,
        "running_nodes": s.running_nodes(),
        "stopped_nodes": s.stopped_nodes(),
        "stale": s.stale,
    })
}

/// One event of `ekka members watch --json`.
pub fn event_json(e: &Event) -> Value {
    let mut v = json!({
        "revision": e.revision,
        "event": e.kind.as_str(),
        "name": e.name,
        "id": fmt_id(e.id),
        "status": e.status.as_str(),
    });
    match &e.kind {
        EventKind::RoleChanged { role } => v["role"] = json!(role.as_str()),
        EventKind::AddressChanged { addr } => v["addr"] = json!(addr),
        _ => {}
    }
    v
}

/// One event of `ekka members watch`, as a line.
pub fn event_line(e: &Event) -> String {
    let extra = match &e.kind {
        EventKind::RoleChanged { role } => format!(" role={role}"),
        EventKind::AddressChanged { addr } => format!(" addr={addr}"),
        _ => String::new(),
    };
    format!(
        "{} {} {} ({}) status={}{extra}",
        e.revision,
        e.kind.as_str(),
        e.name,
        fmt_id(e.id),
        e.status
    )
}

/// The human table of `ekka cluster status`.
pub fn status_table(s: &ClusterStatus) -> String {
    let mut out = format!(
        "cluster {}  leader {}  term {}  revision {}{}\n",
        fmt_id(s.cluster_id),
        s.leader.as_deref().unwrap_or("-"),
        s.term,
        s.revision,
        if s.stale {
            "  (stale: this node's view, no leader with a quorum answered)"
        } else {
            ""
        }
    );
    let rows: Vec<[String; 5]> = s
        .members
        .iter()
        .map(|m| {
            [
                m.name.clone(),
                fmt_id(m.id),
                m.addr.clone(),
                m.role.to_string(),
                m.status.to_string(),
            ]
        })
        .collect();
    let head = ["NAME", "ID", "ADDR", "ROLE", "STATUS"].map(String::from);
    let mut widths = head.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    for r in std::iter::once(&head).chain(rows.iter()) {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ekka::{Member, Role, Status};

    fn status() -> ClusterStatus {
        let m = |id, name: &str, role, status| Member {
            id,
            name: name.into(),
            addr: format!("127.0.0.1:{id}"),
            role,
            status,
            since_ms: 0,
            joined_at_ms: 0,
        };
        ClusterStatus {
            cluster_id: 0x9f1c,
            node_id: 1,
            node_name: "n1".into(),
            node_addr: "127.0.0.1:1".into(),
            leader: None,
            term: 2,
            revision: 17,
            members: vec![
                m(1, "n1", Role::Voter, Status::Up),
                m(2, "n2", Role::Learner, Status::Down),
            ],
            stale: false,
        }
    }

    #[test]
    fn json_has_the_contract_fields() {
        let v = status_json(&status());
        assert_eq!(v["cluster_id"], "0000000000009f1c");
        assert_eq!(v["leader"], Value::Null);
        assert_eq!(v["members"][1]["role"], "learner");
        assert_eq!(v["members"][1]["status"], "down");
        assert_eq!(v["running_nodes"], json!(["n1"]));
        assert_eq!(v["stopped_nodes"], json!(["n2"]));
        assert_eq!(v["node"]["id"], "0000000000000001");
    }

    #[test]
    fn event_json_has_the_contract_fields() {
        let e = Event {
            revision: 18,
            id: 0xa41c,
            name: "n2".into(),
            kind: EventKind::MemberDown,
            status: Status::Down,
        };
        let v = event_json(&e);
        assert_eq!(v["revision"], 18);
        assert_eq!(v["event"], "member_down");
        assert_eq!(v["name"], "n2");
        assert_eq!(v["id"], "000000000000a41c");
        let r = event_json(&Event {
            kind: EventKind::RoleChanged { role: Role::Voter },
            ..e
        });
        assert_eq!(r["role"], "voter");
        assert!(event_line(&Event {
            revision: 1,
            id: 1,
            name: "n1".into(),
            kind: EventKind::LeaderChanged,
            status: Status::Up,
        })
        .starts_with("1 leader_changed n1 "));
    }

    #[test]
    fn table_lists_every_member() {
        let t = status_table(&status());
        assert!(t.lines().count() == 4, "{t}");
        assert!(t.contains("n2") && t.contains("learner") && t.contains("down"));
    }
}
