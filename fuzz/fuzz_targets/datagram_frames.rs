//! Fuzz target `datagram_frames`: see `proxy::fuzzing::datagram_frames`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy::fuzzing::datagram_frames(data));
