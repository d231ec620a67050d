//! Fuzz target `flow_header`: see `proxy::fuzzing::flow_header`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy::fuzzing::flow_header(data));
