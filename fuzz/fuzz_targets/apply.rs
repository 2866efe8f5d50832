//! Fuzz target: arbitrary command sequences through `ClusterState::apply`, invariants checked after
//! every step (the body is `ekka_types::fuzzing::run_apply_sequence`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = ekka_types::fuzzing::run_apply_sequence(data) {
        panic!("{e}");
    }
});
