//! Every hard limit of ekka-rs, in one place. Each is checked when data is written and again when it
//! is read back from the disk or the network.

/// Longest member name, in bytes. Names use `[A-Za-z0-9._-]`.
pub const MAX_NAME_BYTES: usize = 64;

/// Longest advertised address (`host:port`), in bytes.
pub const MAX_ADDR_BYTES: usize = 255;

/// Most members (voters and learners) one cluster holds.
pub const MAX_MEMBERS: usize = 256;

/// Largest allowed `max_voters` setting. Always odd.
pub const MAX_VOTERS_LIMIT: usize = 9;

/// Default `max_voters`.
pub const DEFAULT_MAX_VOTERS: usize = 5;

/// Membership events kept in the state machine for `watch(from_revision)`.
pub const MAX_EVENTS_RETAINED: usize = 4096;

/// Largest gRPC message either side of any RPC will encode or decode.
pub const MAX_RPC_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Largest snapshot a node accepts from the network.
pub const MAX_SNAPSHOT_BYTES: usize = 512 * 1024 * 1024;

/// Snapshot bytes carried by one message of the snapshot stream; well below
/// [`MAX_RPC_MESSAGE_BYTES`].
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1024 * 1024;

/// Largest serialized log entry accepted from the disk or the network.
pub const MAX_ENTRY_BYTES: usize = 4 * 1024 * 1024;

/// Key and value bytes the leader's write batcher puts in one log entry (a command that is
/// alone in its entry may be larger, up to [`MAX_VALUE_BYTES`] and [`MAX_KEY_BYTES`]). It keeps
/// entries under sled's blob threshold (a quarter of its 512 KiB segment): sled stores a larger
/// value as a file of its own, deleted only when it lazily cleans the segment that pointed at it,
/// so entries of batched 64 KiB values piled up as blob files (5.4 GB after 40 s of 80 clients).
pub const MAX_BATCH_BYTES: usize = 96 * 1024;

/// Serialized log entry bytes one AppendEntries carries (always at least one entry): openraft
/// gives an AppendEntries one heartbeat interval, and the message must stay under
/// [`MAX_RPC_MESSAGE_BYTES`]. Entries of 64 KiB values would otherwise travel 256 at a time.
pub const MAX_APPEND_BYTES: usize = 2 * 1024 * 1024;

/// Longest cookie, in bytes.
pub const MAX_COOKIE_BYTES: usize = 1024;

/// Longest lock resource name, in bytes (printable, no whitespace).
pub const MAX_LOCK_RESOURCE_BYTES: usize = 256;

/// Longest lock owner id, in bytes (printable, no whitespace).
pub const MAX_LOCK_OWNER_BYTES: usize = 128;

/// Most locks held at once.
pub const MAX_LOCKS: usize = 100_000;

/// Most acquirers queued on one lock.
pub const MAX_LOCK_WAITERS: usize = 1024;

/// Shortest lock lease.
pub const MIN_LOCK_TTL_MS: u64 = 100;

/// Longest lock lease (1 day).
pub const MAX_LOCK_TTL_MS: u64 = 24 * 3600 * 1000;

/// Longest time an acquirer may wait in line (1 hour).
pub const MAX_LOCK_WAIT_MS: u64 = 3600 * 1000;

/// Longest key, in bytes (printable, no whitespace).
pub const MAX_KEY_BYTES: usize = 1024;

/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Most keys in the key-value space.
pub const MAX_KEYS: usize = 100_000;

/// Largest total of key and value bytes in the key-value space.
pub const MAX_KV_TOTAL_BYTES: u64 = 64 * 1024 * 1024;

/// Key-value changes kept for `watch(prefix, from_revision)`.
pub const MAX_KV_EVENTS_RETAINED: usize = 10_000;

/// Largest total of key and value bytes in the retained key-value changes.
pub const MAX_KV_EVENT_BYTES: u64 = 16 * 1024 * 1024;

/// Most keys one `range` answer carries.
pub const MAX_RANGE_KEYS: usize = 10_000;

/// Most lock and key-value operations one log entry carries (the leader batches concurrent
/// writes). Operation revisions are `log index × OPS_PER_ENTRY + position in the entry`.
pub const OPS_PER_ENTRY: u64 = 1024;
