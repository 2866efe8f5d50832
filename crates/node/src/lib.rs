//! ekka-node (stub).
