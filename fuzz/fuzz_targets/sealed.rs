//! Fuzz target `sealed`: see `proxy::fuzzing::sealed`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy::fuzzing::sealed(data));
