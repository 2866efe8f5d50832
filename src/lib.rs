//! ekka library (stub).
