//! Fuzz target `config_text`: see `proxy::fuzzing::config_text`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy::fuzzing::config_text(data));
