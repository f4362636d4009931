//! Content-addressed blobs. A blob is only ever visible under its digest after its bytes
//! were hashed, checked against the announced digest and size, fsynced and renamed — the
//! same protocol as containerd's local content store.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use super::fsutil::{fsync_dir, unique_name};
use super::{Store, StoreError};
use crate::digest::{Digest, Hasher};

impl Store {
    /// Where the blob `digest` lives (whether or not it is there).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    /// True when the blob is present.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Opens a blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, StoreError> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::MissingBlob {
                digest: digest.clone(),
            },
            _ => StoreError::io("open blob", path)(e),
        })
    }

    /// Reads a small blob (manifest, config) whole.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(digest);
        std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::MissingBlob {
                digest: digest.clone(),
            },
            _ => StoreError::io("read blob", path)(e),
        })
    }

    /// Stores `bytes`, which must hash to `expected` when given; returns the digest.
    pub fn write_blob(
        &self,
        bytes: &[u8],
        expected: Option<&Digest>,
    ) -> Result<Digest, StoreError> {
        let mut ingest = self.ingest(expected.cloned(), Some(bytes.len() as u64))?;
        ingest
            .write_all(bytes)
            .map_err(StoreError::io("write", ingest.path.clone()))?;
        ingest.commit()
    }

    /// Starts writing a blob. `expected` digest and size are checked by [`Ingest::commit`];
    /// dropping the ingest without committing removes the partial file.
    pub fn ingest(
        &self,
        expected: Option<Digest>,
        size: Option<u64>,
    ) -> Result<Ingest, StoreError> {
        let path = self.content_ingest_dir().join(unique_name("blob-"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(StoreError::io("create ingest", &path))?;
        Ok(Ingest {
            store: self.clone(),
            path,
            file: Some(BufWriter::with_capacity(256 * 1024, file)),
            hasher: Hasher::default(),
            expected,
            size,
        })
    }

    /// Every blob digest present.
    pub fn list_blobs(&self) -> Result<Vec<Digest>, StoreError> {
        super::list_digests(&self.blobs_dir())
    }

    /// Size of a stored blob in bytes.
    pub fn blob_size(&self, digest: &Digest) -> Result<u64, StoreError> {
        let path = self.blob_path(digest);
        std::fs::metadata(&path)
            .map(|m| m.len())
            .map_err(StoreError::io("stat blob", path))
    }
}

/// A blob being written: hashes as it goes, becomes visible only on [`Ingest::commit`].
#[derive(Debug)]
pub struct Ingest {
    store: Store,
    path: PathBuf,
    file: Option<BufWriter<File>>,
    hasher: Hasher,
    expected: Option<Digest>,
    size: Option<u64>,
}

impl Ingest {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.hasher.len()
    }

    /// Verifies digest and size, fsyncs and renames into place. If the blob already exists
    /// (another writer won the race) the new copy is discarded; the content is identical.
    pub fn commit(mut self) -> Result<Digest, StoreError> {
        let hasher = std::mem::take(&mut self.hasher);
        let written = hasher.len();
        let actual = hasher.finish();
        if let Some(expected) = &self.expected {
            if let Some(size) = self.size {
                if size != written {
                    return Err(StoreError::SizeMismatch {
                        digest: expected.clone(),
                        expected: size,
                        actual: written,
                    });
                }
            }
            if *expected != actual {
                return Err(StoreError::DigestMismatch {
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        let Some(writer) = self.file.take() else {
            return Err(StoreError::io("commit", &self.path)(std::io::Error::other(
                "already committed",
            )));
        };
        let file = writer
            .into_inner()
            .map_err(|e| StoreError::io("flush", &self.path)(e.into_error()))?;
        file.sync_all()
            .map_err(StoreError::io("fsync", &self.path))?;
        let _ = file.set_permissions(std::fs::Permissions::from_mode(0o444));
        drop(file);
        let target = self.store.blob_path(&actual);
        if target.exists() {
            let _ = std::fs::remove_file(&self.path);
        } else {
            std::fs::rename(&self.path, &target).map_err(StoreError::io("rename blob", &target))?;
            fsync_dir(&self.store.blobs_dir())?;
        }
        Ok(actual)
    }
}

impl Write for Ingest {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let Some(file) = self.file.as_mut() else {
            return Err(std::io::Error::other("ingest already committed"));
        };
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_and_cleans_up() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let good = Digest::of(b"hello");
        assert_eq!(store.write_blob(b"hello", Some(&good))?, good);
        assert_eq!(store.read_blob(&good)?, b"hello");
        let bad = store.write_blob(b"hellO", Some(&good));
        assert!(matches!(bad, Err(StoreError::DigestMismatch { .. })));
        let mut short = store.ingest(Some(good.clone()), Some(5))?;
        short.write_all(b"hell")?;
        assert!(matches!(
            short.commit(),
            Err(StoreError::SizeMismatch { .. })
        ));
        assert_eq!(std::fs::read_dir(store.content_ingest_dir())?.count(), 0);
        assert_eq!(store.read_blob(&good)?, b"hello");
        Ok(())
    }
}
