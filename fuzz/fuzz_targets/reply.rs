//! Fuzz target `reply`: see `proxy::fuzzing::reply`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy::fuzzing::reply(data));
