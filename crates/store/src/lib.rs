//! ekka-store (stub).
