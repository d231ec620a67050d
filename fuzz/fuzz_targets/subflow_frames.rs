//! Fuzz target `subflow_frames`: see `proxy::fuzzing::subflow_frames`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy::fuzzing::subflow_frames(data));
