//! The data plane: lease locks and the key-value space. The only module that builds lock and
//! key-value commands and reads their outcomes; the node's API and the gRPC server both call it.
//! Every write is one log entry proposed by the leader (batched); reads go through a read index
//! unless the caller asks for a stale local read.

mod kv;
mod local;
mod locks;
mod plane;
mod propose;
mod reads;

pub(crate) use kv::put_command;
pub use local::LocalLocks;
pub(crate) use locks::lock_ticker;
pub(crate) use plane::Data;
pub(crate) use propose::{batcher, to_payload};
pub use reads::Read;
pub(crate) use reads::ReadQuery;
