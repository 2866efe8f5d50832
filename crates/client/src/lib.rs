//! ekka-client (stub).
