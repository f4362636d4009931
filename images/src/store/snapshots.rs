//! Layer snapshots: one directory per layer, named by the layer's diff id, holding that
//! layer alone with its whiteouts in overlayfs form (a 0:0 character device for a deleted
//! path, `trusted.overlay.opaque=y` on an opaque directory). Stacked as overlayfs lower
//! dirs they give the image's rootfs; `unpack::flatten` gives the same tree as a copy.
//!
//! Beside each directory, `<diff-id hex>.json` records `{"version": 1, "unpacked_size": N,
//! "entries": N}`, written before the directory is renamed into place.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::fsutil::{fsync_dir, unique_name, write_atomic};
use super::{Store, StoreError};
use crate::digest::Digest;

/// What the sidecar file of a snapshot records.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Schema version (1).
    pub version: u32,
    /// Bytes of the uncompressed layer tar.
    pub unpacked_size: u64,
    /// Tar entries written.
    pub entries: u64,
}

/// A mount, in the form containerd's snapshotters hand to the runtime: the images crate
/// says what to mount, the runtime mounts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Filesystem type (`overlay`, `bind`).
    pub kind: String,
    /// Mount source.
    pub source: String,
    /// Mount options (`lowerdir=…`, `ro`).
    pub options: Vec<String>,
}

impl Store {
    /// Directory of the snapshot of `diff_id` (whether or not it exists).
    pub fn snapshot_path(&self, diff_id: &Digest) -> PathBuf {
        self.snapshots_dir().join(diff_id.hex())
    }

    fn snapshot_info_path(&self, diff_id: &Digest) -> PathBuf {
        self.snapshots_dir().join(format!("{}.json", diff_id.hex()))
    }

    /// The recorded info of a committed snapshot, or `None` when it is absent.
    pub fn snapshot_info(&self, diff_id: &Digest) -> Option<SnapshotInfo> {
        if !self.snapshot_path(diff_id).is_dir() {
            return None;
        }
        let bytes = std::fs::read(self.snapshot_info_path(diff_id)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// A fresh, empty directory to unpack a layer into; removed on drop unless committed.
    pub fn begin_snapshot(&self) -> Result<SnapshotIngest, StoreError> {
        let path = self.snapshot_ingest_dir().join(unique_name("layer-"));
        std::fs::create_dir(&path).map_err(StoreError::io("create snapshot", &path))?;
        Ok(SnapshotIngest {
            store: self.clone(),
            path: Some(path),
        })
    }

    /// Every committed snapshot.
    pub fn list_snapshots(&self) -> Result<Vec<Digest>, StoreError> {
        super::list_digests(&self.snapshots_dir())
    }

    /// Removes a snapshot: first renamed out of the way (so it vanishes atomically), then
    /// deleted. `remove_dir_all` never follows symlinks, so hostile layer content cannot
    /// redirect the deletion.
    pub fn remove_snapshot(&self, diff_id: &Digest) -> Result<(), StoreError> {
        let path = self.snapshot_path(diff_id);
        let trash = self.snapshot_ingest_dir().join(unique_name("trash-"));
        std::fs::rename(&path, &trash).map_err(StoreError::io("remove snapshot", &path))?;
        let _ = std::fs::remove_file(self.snapshot_info_path(diff_id));
        std::fs::remove_dir_all(&trash).map_err(StoreError::io("remove snapshot", &trash))
    }

    /// The overlayfs lower dirs of a layer stack given bottom first, in overlayfs order
    /// (top first).
    pub fn lowerdirs(&self, diff_ids: &[Digest]) -> Vec<PathBuf> {
        diff_ids
            .iter()
            .rev()
            .map(|d| self.snapshot_path(d))
            .collect()
    }

    /// The read-only overlay mount of a layer stack given bottom first. A single layer is
    /// a read-only bind mount (overlayfs wants two lowers or an upper).
    pub fn rootfs_mounts(&self, diff_ids: &[Digest]) -> Vec<Mount> {
        let lowers = self.lowerdirs(diff_ids);
        if lowers.len() == 1 {
            return vec![Mount {
                kind: "bind".into(),
                source: lowers[0].display().to_string(),
                options: vec!["rbind".into(), "ro".into()],
            }];
        }
        let joined: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
        vec![Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options: vec![format!("lowerdir={}", joined.join(":")), "ro".into()],
        }]
    }
}

/// A layer being unpacked into a private directory.
#[derive(Debug)]
pub struct SnapshotIngest {
    store: Store,
    path: Option<PathBuf>,
}

impl SnapshotIngest {
    /// The directory to unpack into.
    pub fn path(&self) -> &std::path::Path {
        self.path
            .as_deref()
            .unwrap_or(std::path::Path::new("/nonexistent"))
    }

    /// Flushes the unpacked files (syncfs: one call for the whole tree, instead of an fsync
    /// per file), records `info`, and renames the directory into place. If another writer
    /// committed the same layer first, this copy is removed.
    pub fn commit(mut self, diff_id: &Digest, info: SnapshotInfo) -> Result<(), StoreError> {
        let Some(path) = self.path.take() else {
            return Ok(());
        };
        let result = (|| {
            let dir = std::fs::File::open(&path).map_err(StoreError::io("open snapshot", &path))?;
            nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir))
                .map_err(|e| StoreError::io("syncfs", &path)(e.into()))?;
            let target = self.store.snapshot_path(diff_id);
            if target.exists() {
                return Err(StoreError::io("commit snapshot", &target)(
                    std::io::ErrorKind::AlreadyExists.into(),
                ));
            }
            let info_bytes = serde_json::to_vec(&info).unwrap_or_default();
            write_atomic(&self.store.snapshot_info_path(diff_id), &info_bytes, 0o644)?;
            std::fs::rename(&path, &target).map_err(StoreError::io("rename snapshot", &target))?;
            fsync_dir(&self.store.snapshots_dir())
        })();
        match result {
            Err(StoreError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                let _ = std::fs::remove_dir_all(&path);
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&path);
                Err(e)
            }
            Ok(()) => Ok(()),
        }
    }
}

impl Drop for SnapshotIngest {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}
