//! Files that hold state across restarts (the renewed certificate, the instruction and
//! revocation caches, the scheduler's registry): read back with an error that names the
//! file, and replaced so that a crash at any moment leaves either the old contents or the
//! new, never a mix or nothing.
//!
//! The new contents go to `<file>.new` in the same directory, are synced, and are renamed
//! over the file; then the directory itself is synced, since the rename is an update of
//! the directory and, until that is on disk, a crash can bring the old file back (or, for
//! a first write, no file at all).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Why a state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// The file (or its directory) could not be read, written or locked.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file is there but does not hold what it should.
    #[error("{path}: not a valid file: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
}

impl StateFileError {
    /// An I/O error on `path`.
    pub(crate) fn io(path: &Path) -> impl Fn(io::Error) -> Self + '_ {
        move |source| Self::Io { path: path.to_path_buf(), source }
    }

    /// `path`'s contents were not valid.
    pub(crate) fn corrupt(path: &Path, message: impl std::fmt::Display) -> Self {
        Self::Corrupt { path: path.to_path_buf(), message: message.to_string() }
    }
}

/// The contents of `path`; `None` when there is no such file.
pub(crate) fn read(path: &Path) -> Result<Option<Vec<u8>>, StateFileError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateFileError::Io { path: path.to_path_buf(), source }),
    }
}

/// Replaces `path` with `bytes`. `mode` sets the permission bits on Unix (e.g. `0o600`
/// for a file holding secrets); `None` leaves the process's default.
pub(crate) fn replace(path: &Path, bytes: &[u8], mode: Option<u32>) -> io::Result<()> {
    let temp = temp_path(path);
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if let Some(mode) = mode {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temp, path)?;
    // The new contents are in place; a directory that cannot be synced only leaves the
    // rename less durable, so it is logged, not reported as a failed write (a caller
    // would take it for one and, say, tell a joiner whose token was just spent to retry).
    if let Err(e) = sync_dir(path) {
        tracing::warn!(path = %path.display(), error = %e, "could not sync the directory after replacing a state file");
    }
    Ok(())
}

/// `<path>.new`, in the same directory so the rename cannot cross file systems.
fn temp_path(path: &Path) -> PathBuf {
    let mut temp = path.as_os_str().to_owned();
    temp.push(".new");
    PathBuf::from(temp)
}

/// Syncs the directory holding `path`, so its rename is on disk.
#[cfg(unix)]
fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Elsewhere a directory cannot be opened for syncing; the rename is as durable as the
/// platform makes it.
#[cfg(not(unix))]
fn sync_dir(_path: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory, removed when dropped (also when a test fails).
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            let d = std::env::temp_dir().join(format!("proxy-state-file-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).expect("dir");
            Scratch(d)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn replaces_the_contents_and_leaves_no_temporary_file() {
        let dir = Scratch::new("replace");
        let path = dir.0.join("state.json");
        replace(&path, b"first", None).expect("first write");
        replace(&path, b"second", None).expect("second write");
        assert_eq!(std::fs::read(&path).expect("read"), b"second");
        assert!(!temp_path(&path).exists(), "the temporary file was left behind");
    }

    #[cfg(unix)]
    #[test]
    fn a_mode_is_applied_to_a_new_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = Scratch::new("mode");
        let path = dir.0.join("secret");
        replace(&path, b"s", Some(0o600)).expect("write");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_missing_file_reads_as_none_and_an_error_names_the_file() {
        let dir = Scratch::new("read");
        assert!(matches!(read(&dir.0.join("absent")), Ok(None)));
        let err = read(&dir.0).expect_err("a directory is not a file");
        assert!(err.to_string().contains("proxy-state-file-read"), "{err}");
    }

    #[test]
    fn a_missing_directory_is_an_error_not_a_panic() {
        let dir = Scratch::new("missing");
        assert!(replace(&dir.0.join("no-such-dir").join("file"), b"x", None).is_err());
    }
}
