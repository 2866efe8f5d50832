//! The wire: the connection pool and auth headers (`pool`), openraft's network (`network`), and
//! the gRPC services (`server`), which decode a request, call the node and encode its answer.

pub(crate) mod network;
pub(crate) mod pool;
pub(crate) mod server;
