//! Every fixed duration of the node in one place, beside `ekka_types::limits`: how long things
//! wait, how often they look. Durations a user sets live in `NodeConfig`.

use std::time::Duration;

/// How long a member restarted on a new address stays out of elections while no leader answers
/// its announce.
pub(crate) const ANNOUNCE_GRACE: Duration = Duration::from_secs(2);

/// How long a probe of a member's recorded address waits for its `Hello` answer.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a request that finds no leader waits for an election before it fails.
pub(crate) const LEADER_WAIT: Duration = Duration::from_secs(1);
/// How long a request that could not reach the leader waits for the next one before failing:
/// a few election timeouts.
pub(crate) const FAILOVER_WAIT: Duration = Duration::from_secs(2);

/// How long `Node::shutdown` waits for the Raft core to stop.
pub(crate) const SHUTDOWN_RAFT_LIMIT: Duration = Duration::from_secs(3);
/// How long `Node::shutdown` then waits for the node's tasks to end.
pub(crate) const SHUTDOWN_TASKS_LIMIT: Duration = Duration::from_secs(3);
