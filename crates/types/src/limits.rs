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

/// Longest cookie, in bytes.
pub const MAX_COOKIE_BYTES: usize = 1024;
