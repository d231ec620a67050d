//! Fuzz target `join`: see `proxy::fuzzing::join_messages`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy::fuzzing::join_messages(data));
