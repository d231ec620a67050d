//! Fuzz target `control`: see `proxy::fuzzing::control_messages`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy::fuzzing::control_messages(data));
