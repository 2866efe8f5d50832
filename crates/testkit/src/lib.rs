//! Fault injection shared by the integration tests (`tests/`) and the benchmarks (`bench/`).
//! Linux only: it reads `/proc`.

pub mod proxy;
