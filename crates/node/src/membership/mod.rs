//! Membership with ekka's semantics on Raft: start-up and rejoin (`start`, `bootstrap`), join and
//! leave (`join`), wiping state (`reset`), the leader's admission, promotion and removal
//! (`members`), one process per node id (`identity`), the status monitor (`monitor`),
//! autocluster (`autocluster`) and `cluster status` (`status`).

pub(crate) mod autocluster;
pub(crate) mod bootstrap;
pub(crate) mod identity;
pub(crate) mod join;
pub(crate) mod members;
pub(crate) mod monitor;
pub(crate) mod reset;
pub(crate) mod start;
pub(crate) mod status;

pub use join::{ForceLeaveOutcome, JoinOutcome};
