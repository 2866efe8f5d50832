//! `ClusterStatus`: what `status()` reports: members with roles and statuses, leader, term, revision.

use crate::id::{ClusterId, NodeId};
use crate::member::Member;

/// A node's view of its cluster, as returned by `status()` / `ekka cluster status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterStatus {
    pub cluster_id: ClusterId,
    /// The node that answered.
    pub node_id: NodeId,
    pub node_name: String,
    pub node_addr: String,
    /// Name of the current leader, `None` while there is none.
    pub leader: Option<String>,
    pub term: u64,
    pub revision: u64,
    /// Sorted by name.
    pub members: Vec<Member>,
    /// The answering node's own view, not confirmed by a leader in touch with a quorum (no
    /// leader reachable: this node may be on the minority side of a partition).
    pub stale: bool,
}

impl ClusterStatus {
    /// Names of running members (ekka's `running_nodes`), sorted.
    pub fn running_nodes(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.status.is_running())
            .map(|m| m.name.clone())
            .collect()
    }

    /// Names of stopped members (ekka's `stopped_nodes`), sorted.
    pub fn stopped_nodes(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| !m.status.is_running())
            .map(|m| m.name.clone())
            .collect()
    }

    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }
}
