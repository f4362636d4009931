//! The on-disk store under the data root (default `/var/lib/berth`).
//!
//! ```text
//! <root>/
//!   content/
//!     blobs/sha256/<hex>        verified blobs (manifests, configs, compressed layers), 0444
//!     ingest/<unique>           blobs being written; removed on failure, stale ones by GC
//!   snapshots/
//!     sha256/<diff-id hex>/     one unpacked layer, whiteouts in overlayfs form
//!     ingest/<unique>/          a layer being unpacked; renamed into place when verified
//!   metadata/images.json        image records (see `metadata.rs` for the schema)
//!   leases/<name>               snapshot/blob digests in use by something else (containers)
//!   locks/                      flock files: gc.lock, images.lock, <digest>.lock
//! ```
//!
//! Every file that is renamed into place was fsynced first, and its directory after.

/// Content-addressed blobs and the verifying ingest writer.
pub mod content;
/// Atomic file writes and directory fsyncs.
pub mod fsutil;
/// Leases: named sets of digests that GC must keep.
pub mod leases;
/// Advisory file locks (flock) shared by every process that uses one data root.
pub mod lock;
/// Image records (`metadata/images.json`).
pub mod metadata;
/// Layer snapshot directories.
pub mod snapshots;

use std::path::{Path, PathBuf};

use crate::digest::Digest;

/// Errors of the on-disk store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Written content did not hash to the digest it was announced with.
    #[error("digest mismatch for {expected}: content hashes to {actual}")]
    DigestMismatch {
        /// The announced digest.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// Written content was shorter or longer than announced.
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual} (truncated or padded blob)")]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// The announced size.
        expected: u64,
        /// What arrived.
        actual: u64,
    },
    /// A blob that should be in the store is not.
    #[error("blob {digest} is not in the store")]
    MissingBlob {
        /// The blob.
        digest: Digest,
    },
    /// The image metadata file is unreadable or from an unknown version.
    #[error("image metadata {path} is unusable: {reason}")]
    BadMetadata {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No image matches the given name or id.
    #[error("no such image: {name}")]
    NoSuchImage {
        /// What was asked for.
        name: String,
    },
    /// A short id matches several images.
    #[error("image id {name} is ambiguous: it matches {count} images")]
    AmbiguousImage {
        /// What was asked for.
        name: String,
        /// How many matched.
        count: usize,
    },
    /// A lease name is not a plain file name.
    #[error("invalid lease name {name:?}")]
    BadLeaseName {
        /// The rejected name.
        name: String,
    },
}

impl StoreError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { op, path, source }
    }
}

/// Paths of one data root. Cheap to clone; every process using the same root shares the
/// same locks, so a CLI and a daemon never corrupt each other's work.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating the directories of) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let store = Self { root: root.into() };
        if !store.root.exists() {
            // A new data root is the daemon's alone (image content may hold setuid files
            // and device nodes): 0700, as Docker and containerd keep theirs.
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&store.root)
                .map_err(StoreError::io("create data root", &store.root))?;
        }
        for dir in [
            store.blobs_dir(),
            store.content_ingest_dir(),
            store.snapshots_dir(),
            store.snapshot_ingest_dir(),
            store.metadata_dir(),
            store.leases_dir(),
            store.locks_dir(),
        ] {
            std::fs::create_dir_all(&dir).map_err(StoreError::io("create directory", &dir))?;
        }
        Ok(store)
    }

    /// The data root.
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.root.join("content/blobs/sha256")
    }
    pub(crate) fn content_ingest_dir(&self) -> PathBuf {
        self.root.join("content/ingest")
    }
    pub(crate) fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots/sha256")
    }
    pub(crate) fn snapshot_ingest_dir(&self) -> PathBuf {
        self.root.join("snapshots/ingest")
    }
    pub(crate) fn metadata_dir(&self) -> PathBuf {
        self.root.join("metadata")
    }
    pub(crate) fn leases_dir(&self) -> PathBuf {
        self.root.join("leases")
    }
    pub(crate) fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }
}

/// The entries of `dir` whose names are 64 hex digits (blobs, snapshots); sidecars and
/// anything else are skipped.
fn list_digests(dir: &Path) -> Result<Vec<Digest>, StoreError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(StoreError::io("list", dir))? {
        let entry = entry.map_err(StoreError::io("list", dir))?;
        if let Some(d) = entry
            .file_name()
            .to_str()
            .and_then(|n| Digest::from_hex(n).ok())
        {
            out.push(d);
        }
    }
    Ok(out)
}
