use std::fs::{File, OpenOptions};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use super::StoreError;

/// A held flock; released when dropped (or when the process dies, so a crash never leaves
/// a lock behind).
#[derive(Debug)]
pub struct FileLock {
    _lock: Flock<File>,
}

impl FileLock {
    /// Blocks until `path` is locked exclusively.
    pub fn exclusive(path: &Path) -> Result<Self, StoreError> {
        Self::take(path, FlockArg::LockExclusive)
    }

    /// Blocks until `path` is locked shared.
    pub fn shared(path: &Path) -> Result<Self, StoreError> {
        Self::take(path, FlockArg::LockShared)
    }

    fn take(path: &Path, arg: FlockArg) -> Result<Self, StoreError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(StoreError::io("open lock", path))?;
        let lock = Flock::lock(file, arg)
            .map_err(|(_, errno)| StoreError::io("lock", path)(errno.into()))?;
        Ok(Self { _lock: lock })
    }
}

/// Takes a lock on a blocking thread so the async runtime never stalls on it.
pub async fn exclusive_async(path: std::path::PathBuf) -> Result<FileLock, StoreError> {
    tokio::task::spawn_blocking(move || FileLock::exclusive(&path))
        .await
        .map_err(|e| StoreError::io("lock", "<task>")(std::io::Error::other(e)))?
}

/// Shared variant of [`exclusive_async`].
pub async fn shared_async(path: std::path::PathBuf) -> Result<FileLock, StoreError> {
    tokio::task::spawn_blocking(move || FileLock::shared(&path))
        .await
        .map_err(|e| StoreError::io("lock", "<task>")(std::io::Error::other(e)))?
}
