//! The runtime every other part of the node stands on: the Raft core and the state the parts
//! share (`core`), the leader's side of every request (`leader`), storage faults (`fault`) and
//! log compaction (`compaction`).

pub(crate) mod compaction;
pub(crate) mod core;
pub(crate) mod fault;
pub(crate) mod leader;
