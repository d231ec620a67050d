//! What a node keeps from the scheduler on disk, in `mesh.data_dir`, so a node restarted
//! while the scheduler is away still routes by its last instructions
//! (`instructions.bin`) and still refuses the nodes removed from the mesh
//! (`revocations.bin`).
//!
//! Each file is one control frame holding the message (magic, version, length, body: see
//! `core::control`). It is written atomically: a temporary file is written and
//! synced, then renamed over the old one, so a crash leaves either the old or the new set,
//! never a torn one. A file that does not decode is never trusted partly: a bad
//! instruction cache is reported and ignored (the node falls back to its static routes),
//! a bad revocation list stops the node from starting (see `node::load_revocations`).

use std::path::Path;

use crate::core::control::{self, InstructionSet, RevocationList};

const FILE: &str = "instructions.bin";
const REVOCATIONS_FILE: &str = "revocations.bin";

/// Why the stored instructions or revocations could not be used.
pub type StoreError = crate::state_file::StateFileError;

/// Writes `set` to `dir` atomically.
pub fn save(dir: &Path, set: &InstructionSet) -> Result<(), StoreError> {
    save_frame(dir, FILE, set)
}

/// Reads the stored set from `dir`: `Ok(None)` when there is none.
pub fn load(dir: &Path) -> Result<Option<InstructionSet>, StoreError> {
    load_frame(dir, FILE)
}

/// Writes the revocation list to `dir` atomically.
pub fn save_revocations(dir: &Path, list: &RevocationList) -> Result<(), StoreError> {
    save_frame(dir, REVOCATIONS_FILE, list)
}

/// Reads the stored revocation list from `dir`: `Ok(None)` when there is none.
pub fn load_revocations(dir: &Path) -> Result<Option<RevocationList>, StoreError> {
    load_frame(dir, REVOCATIONS_FILE)
}

fn save_frame<T: bincode::Encode>(dir: &Path, file_name: &str, message: &T) -> Result<(), StoreError> {
    let path = dir.join(file_name);
    std::fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
    let bytes = control::encode(message).map_err(|e| StoreError::corrupt(&path, e))?;
    crate::state_file::replace(&path, &bytes, None).map_err(StoreError::io(&path))
}

fn load_frame<T: bincode::Decode<()>>(dir: &Path, file_name: &str) -> Result<Option<T>, StoreError> {
    let path = dir.join(file_name);
    let Some(bytes) = crate::state_file::read(&path)? else { return Ok(None) };
    match control::decode::<T>(&bytes, bytes.len().max(control::FRAME_PREFIX_LEN)) {
        Ok(Some((set, used))) if used == bytes.len() => Ok(Some(set)),
        Ok(Some(_)) => Err(StoreError::corrupt(&path, "trailing bytes")),
        Ok(None) => Err(StoreError::corrupt(&path, "truncated")),
        Err(e) => Err(StoreError::corrupt(&path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::control::{InstructedPath, RouteInstruction};

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("proxy-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn set(version: u64) -> InstructionSet {
        InstructionSet {
            version,
            issued_at_unix: 1,
            ttl_secs: 2,
            routes: vec![RouteInstruction {
                route: "r".into(),
                exit: "d".into(),
                paths: vec![InstructedPath { relays: vec!["b".into()], weight: 1.0 }],
            }],
            nodes: vec![],
        }
    }

    #[test]
    fn a_saved_set_loads_back_and_a_newer_one_replaces_it() {
        let d = dir("roundtrip");
        assert!(load(&d).expect("empty dir is fine").is_none());
        save(&d, &set(1)).expect("save");
        save(&d, &set(2)).expect("save");
        assert_eq!(load(&d).expect("load"), Some(set(2)));
        assert!(!d.join("instructions.bin.new").exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_corrupt_or_truncated_file_is_reported_not_trusted() {
        let d = dir("corrupt");
        save(&d, &set(1)).expect("save");
        let path = d.join("instructions.bin");
        let bytes = std::fs::read(&path).expect("read");
        std::fs::write(&path, &bytes[..bytes.len() - 3]).expect("truncate");
        assert!(matches!(load(&d), Err(StoreError::Corrupt { .. })));
        std::fs::write(&path, b"garbage that is not a frame").expect("write");
        let err = load(&d).expect_err("corrupt");
        assert!(err.to_string().contains("not a valid file"), "{err}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
