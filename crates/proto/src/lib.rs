//! ekka-proto (stub).
