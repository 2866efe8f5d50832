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

/// A short pause before trying a step again: a membership step answered "unavailable" or
/// "unknown", a proposal that failed, a Raft instance that is being replaced.
pub(crate) const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// The first and the longest pause between tries of a resumed join (doubling in between).
pub(crate) const RESUME_FIRST_PAUSE: Duration = Duration::from_millis(50);
pub(crate) const RESUME_MAX_PAUSE: Duration = Duration::from_secs(2);
/// How long a joiner waits for the `Hello` of the node it was asked to join.
pub(crate) const HELLO_TIMEOUT: Duration = Duration::from_secs(3);

/// How long an announce waits for one member's answer, and the pause between rounds.
pub(crate) const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(2);
pub(crate) const ANNOUNCE_EVERY: Duration = Duration::from_millis(200);

/// How long the leader waits for a removed member to take its "you were removed" notice.
pub(crate) const REMOVED_NOTICE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a follower waits for the leader's `cluster status` before answering its own.
pub(crate) const LEADER_STATUS_TIMEOUT: Duration = Duration::from_secs(1);
/// The status monitor's shortest period, whatever the heartbeat interval.
pub(crate) const MONITOR_MIN_PERIOD: Duration = Duration::from_millis(20);

/// The shortest renewal period of a `LockGuard` (a third of its ttl otherwise).
pub(crate) const RENEW_MIN_PERIOD: Duration = Duration::from_millis(10);

/// How often an idle event stream looks again (it is woken by every applied entry otherwise).
pub(crate) const WATCH_IDLE_CHECK: Duration = Duration::from_millis(500);

/// How often the fault watcher looks again when the core's metrics cannot wake it (a core that
/// was stopped on purpose, or replaced by a reset).
pub(crate) const FAULT_POLL: Duration = Duration::from_millis(200);

/// A snapshot asked for but not seen this long is asked for again (openraft drops a trigger that
/// arrives while a build runs).
pub(crate) const SNAPSHOT_RETRIGGER_AFTER: Duration = Duration::from_secs(5);
/// How often compaction looks whether the node replaced its Raft instance (reset, rejoin).
pub(crate) const CORE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A peer connection attempt gives up after this long; HTTP/2 keep-alive pings go this often.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
pub(crate) const KEEPALIVE_EVERY: Duration = Duration::from_secs(10);
/// The least time a snapshot transfer gets (plus a second per MiB).
pub(crate) const SNAPSHOT_SEND_MIN: Duration = Duration::from_secs(10);
/// One refusal log line per sender per this long.
pub(crate) const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);
