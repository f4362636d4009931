//! The atomic writer and unique names, from the leaf crate `berth-fsutil`, with the
//! store's error type.

use std::path::Path;

use super::StoreError;

pub use berth_fsutil::atomic::unique_name;

impl From<berth_fsutil::FsError> for StoreError {
    fn from(e: berth_fsutil::FsError) -> Self {
        StoreError::io(e.op, e.path)(e.source)
    }
}

/// [`berth_fsutil::atomic::fsync_dir`].
pub fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    Ok(berth_fsutil::atomic::fsync_dir(dir)?)
}

/// [`berth_fsutil::atomic::write_atomic`].
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    Ok(berth_fsutil::atomic::write_atomic(path, bytes, mode)?)
}
