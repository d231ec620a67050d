//! Where the registry lives: a file in the scheduler's `data_dir` (one scheduler, the
//! default), or etcd (`state.etcd`, several schedulers of one mesh; see
//! `scheduler::etcd::registry`). Both change it the same way: read, apply one change,
//! write it whole or not at all, with no other change in between.
//!
//! On disk: `registry.json`, changed only under an exclusive lock on `registry.lock`, so
//! the running scheduler and the `proxy mesh` commands (which may run beside it) never
//! lose each other's changes. Written whole to a temporary file and renamed, so a crash
//! leaves the old or the new registry, never half. The directory is created 0700 and the
//! lock file 0600: whoever can open the lock file can hold the lock and stall every join,
//! renewal and `mesh` command.

use std::fs;
use std::path::{Path, PathBuf};

use super::presence::Presence;
use super::registry::Registry;
use crate::config::scheduler::SchedulerConfig;
use crate::scheduler::etcd::registry::{EtcdRegistry, EtcdRegistryError};

/// Errors reading or writing the registry file.
pub type FileError = crate::state_file::StateFileError;

/// Errors reading or writing the registry.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file store failed.
    #[error(transparent)]
    File(#[from] FileError),
    /// The etcd store failed.
    #[error(transparent)]
    Etcd(#[from] EtcdRegistryError),
}

/// The registry's store, as the scheduler's config names it.
#[derive(Debug, Clone)]
pub enum RegistryStore {
    /// `registry.json` in `data_dir`.
    File(FileStore),
    /// Keys in etcd under `state.prefix` (boxed: the client is large, and cloned often).
    Etcd(Box<EtcdRegistry>),
}

/// What changes whenever the registry does: polled to notice others' changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stamp {
    /// The file's identity.
    File(FileStamp),
    /// The etcd version key's modification revision.
    Etcd(i64),
}

impl RegistryStore {
    /// The store `config` names: etcd with `state.etcd`, else the file in `data_dir`.
    pub fn open(config: &SchedulerConfig) -> anyhow::Result<Self> {
        Ok(match &config.etcd {
            Some(etcd) => {
                Self::Etcd(Box::new(EtcdRegistry::new(crate::scheduler::etcd::Etcd::connect(etcd)?)))
            }
            None => Self::File(FileStore::new(&config.data_dir)),
        })
    }

    /// The registry's stamp now (blocking).
    pub fn stamp(&self) -> Result<Stamp, StoreError> {
        Ok(match self {
            Self::File(f) => Stamp::File(f.stamp()),
            Self::Etcd(e) => Stamp::Etcd(e.stamp()?),
        })
    }

    /// Reads the registry (blocking; empty when there is none yet).
    pub fn load(&self) -> Result<Registry, StoreError> {
        Ok(match self {
            Self::File(f) => f.load()?,
            Self::Etcd(e) => e.load()?,
        })
    }

    /// Reads the presence record (blocking; empty when none was written yet).
    pub fn load_presence(&self) -> Result<Presence, StoreError> {
        Ok(match self {
            Self::File(f) => f.load_presence()?,
            Self::Etcd(e) => e.load_presence()?,
        })
    }

    /// Replaces the presence record (blocking; no lock: see `presence`).
    pub fn save_presence(&self, presence: &Presence) -> Result<(), StoreError> {
        match self {
            Self::File(f) => f.save_presence(presence)?,
            Self::Etcd(e) => e.save_presence(presence)?,
        }
        Ok(())
    }

    /// Changes the registry (blocking): `change` returns its result and whether it changed
    /// anything (only then is anything written). It may run more than once with etcd (again
    /// on the registry as another scheduler left it); the result of the run that counted
    /// is returned.
    pub fn update<R>(&self, change: impl FnMut(&mut Registry) -> (R, bool)) -> Result<R, StoreError> {
        Ok(match self {
            Self::File(f) => f.update(change)?,
            Self::Etcd(e) => e.update(change)?,
        })
    }
}

/// The registry's directory.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
}

/// A file's identity for change polling: modification time, length and inode.
pub type FileStamp = Option<(Option<std::time::SystemTime>, u64, u64)>;

impl FileStore {
    /// The store in `dir` (created on first write).
    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_path_buf() }
    }

    fn file(&self) -> PathBuf {
        self.dir.join("registry.json")
    }

    /// The registry file's stamp, to notice changes made by others. Every write renames
    /// a new file into place, so the inode changes even when the time and length do not.
    pub fn stamp(&self) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(self.file()).ok().map(|m| (m.modified().ok(), m.len(), m.ino()))
    }

    /// Reads the registry (empty when there is none yet).
    pub fn load(&self) -> Result<Registry, FileError> {
        let _lock = self.lock(false)?;
        self.read()
    }

    /// Changes the registry under the lock: `change` returns its result and whether it
    /// changed anything (only then is the file written).
    pub fn update<R>(&self, mut change: impl FnMut(&mut Registry) -> (R, bool)) -> Result<R, FileError> {
        let _lock = self.lock(true)?;
        let mut registry = self.read()?;
        let (result, changed) = change(&mut registry);
        if changed {
            self.write(&registry)?;
        }
        Ok(result)
    }

    fn presence_file(&self) -> PathBuf {
        self.dir.join("presence.json")
    }

    /// Reads `presence.json` (empty when there is none yet).
    pub fn load_presence(&self) -> Result<Presence, FileError> {
        let path = self.presence_file();
        match crate::state_file::read(&path)? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| FileError::corrupt(&path, e)),
            None => Ok(Presence::default()),
        }
    }

    /// Replaces `presence.json` whole (renamed into place: a reader sees the old or the new).
    pub fn save_presence(&self, presence: &Presence) -> Result<(), FileError> {
        let path = self.presence_file();
        let text = serde_json::to_vec(presence).map_err(|e| FileError::corrupt(&path, e))?;
        crate::state_file::replace(&path, &text, Some(0o600)).map_err(FileError::io(&path))
    }

    fn lock(&self, exclusive: bool) -> Result<fs::File, FileError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        let path = self.dir.join("registry.lock");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(FileError::io(&self.dir))?;
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(FileError::io(&path))?;
        // A lock file made by an older release is 0644: anyone could open it and lock.
        let mode = file.metadata().map_err(FileError::io(&path))?.permissions().mode();
        if mode & 0o077 != 0 {
            file.set_permissions(fs::Permissions::from_mode(0o600)).map_err(FileError::io(&path))?;
        }
        if exclusive { file.lock() } else { file.lock_shared() }.map_err(FileError::io(&path))?;
        Ok(file)
    }

    fn read(&self) -> Result<Registry, FileError> {
        let path = self.file();
        match crate::state_file::read(&path)? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| FileError::corrupt(&path, e)),
            None => Ok(Registry::default()),
        }
    }

    fn write(&self, registry: &Registry) -> Result<(), FileError> {
        let path = self.file();
        let text = serde_json::to_string_pretty(registry).map_err(|e| FileError::corrupt(&path, e))?;
        // Only hashes of tokens are stored, but member records are nobody else's business.
        crate::state_file::replace(&path, text.as_bytes(), Some(0o600)).map_err(FileError::io(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_from_two_writers_are_both_kept_and_a_corrupt_file_is_an_error() {
        let dir = std::env::temp_dir().join(format!("proxy-registry-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (one, two) = (FileStore::new(&dir), FileStore::new(&dir));
        let writers: Vec<_> = (0..8u8)
            .map(|i| {
                let store = if i % 2 == 0 { one.clone() } else { two.clone() };
                std::thread::spawn(move || {
                    store
                        .update(|r| {
                            r.record_cert(&format!("n{i}"), "eu", [i; 32], 10, 0);
                            ((), true)
                        })
                        .expect("update")
                })
            })
            .collect();
        for w in writers {
            w.join().expect("writer");
        }
        assert_eq!(one.load().expect("load").members.len(), 8);
        fs::write(dir.join("registry.json"), "{ not json").expect("write");
        assert!(matches!(one.load(), Err(FileError::Corrupt { .. })));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_state_directory_and_its_files_are_private_to_the_scheduler() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        let base = std::env::temp_dir().join(format!("proxy-registry-modes-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let dir = base.join("state");
        let store = FileStore::new(&dir);
        store.update(|r| (r.record_cert("n", "eu", [1; 32], 10, 0), true)).expect("update");
        assert_eq!(mode(&dir), 0o700, "state directory");
        assert_eq!(mode(&dir.join("registry.lock")), 0o600, "lock file");
        assert_eq!(mode(&dir.join("registry.json")), 0o600, "registry");

        // A lock file left world-readable by an older release is made private at next use.
        fs::set_permissions(dir.join("registry.lock"), fs::Permissions::from_mode(0o644)).expect("chmod");
        store.load().expect("load");
        assert_eq!(mode(&dir.join("registry.lock")), 0o600, "lock file tightened");
        let _ = fs::remove_dir_all(&base);
    }
}
