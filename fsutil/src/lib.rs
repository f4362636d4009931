//! Berth's file-system helpers, a leaf crate every other crate may use without pulling in
//! the image store's dependencies (registry client, TLS, compression).

/// Atomic writes of state files (temp, fsync, rename, fsync dir) and unique temp names.
pub mod atomic;
/// The copy fallback of overlayfs: snapshots applied one after the other to a directory.
pub mod flatten;

use std::path::PathBuf;

/// A file-system operation failed.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct FsError {
    /// What was being done.
    pub op: &'static str,
    /// On what.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

impl FsError {
    /// A `map_err` adapter naming the operation and path.
    pub fn io<'a>(
        op: &'static str,
        path: &'a std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> Self + 'a {
        move |source| FsError {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}
