//! Replays every fuzz target's committed corpus (`fuzz/corpus/<target>/`: seeds, and
//! inputs that once crashed, kept as regressions) through the same entry points the
//! fuzzers call, plus every prefix of the built-in seeds.

use std::path::Path;

use proxy::fuzzing::{TARGETS, seeds, target};

#[test]
fn every_committed_corpus_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut replayed = 0;
    for name in TARGETS {
        let run = target(name).expect("known target");
        let dir = root.join(name);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries.flatten() {
            let bytes = std::fs::read(entry.path()).expect("read corpus file");
            run(&bytes);
            replayed += 1;
        }
    }
    assert!(replayed >= TARGETS.len(), "each target has a corpus ({replayed} inputs)");
}

#[test]
fn every_prefix_and_every_single_byte_change_of_the_seeds_is_handled() {
    for (name, bytes) in seeds() {
        let run = target(name).expect("known target");
        for cut in 0..=bytes.len() {
            run(&bytes[..cut]);
        }
        for i in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[i] ^= 0xff;
            run(&changed);
        }
    }
}
