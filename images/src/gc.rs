//! Garbage collection: removes blobs and snapshots that no image record and no lease
//! references, and ingest leftovers of crashed writers.
//!
//! Safety against concurrent work: every pull and import holds `locks/gc.lock` shared for
//! its whole duration, GC holds it exclusive; so GC never sees a half-made image, and any
//! ingest directory it finds belongs to a dead writer.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Serialize;

use crate::digest::Digest;
use crate::store::lock::FileLock;
use crate::store::{Store, StoreError};

/// Errors of garbage collection.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// Something could not be removed.
    #[error("removing {path}: {source}")]
    Remove {
        /// What.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What a collection removed.
#[derive(Debug, Default, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs removed.
    pub blobs_removed: Vec<Digest>,
    /// Snapshots removed (by diff id).
    pub snapshots_removed: Vec<Digest>,
    /// Leftover ingest files and directories removed.
    pub ingests_removed: usize,
    /// Bytes of blobs freed (snapshot sizes come from their records).
    pub bytes_freed: u64,
}

/// Runs a collection. Blocks while pulls or imports are in progress.
pub fn collect(store: &Store) -> Result<GcReport, crate::Error> {
    let _gc = FileLock::exclusive(&store.locks_dir().join("gc.lock"))?;
    let mut keep: BTreeSet<Digest> = store.leased_digests()?;
    for image in store.list_images()? {
        keep.extend(image.blobs().cloned());
        keep.extend(image.snapshots().cloned());
    }
    let mut report = GcReport::default();
    for blob in store.list_blobs()? {
        if !keep.contains(&blob) {
            report.bytes_freed += store.blob_size(&blob).unwrap_or(0);
            let path = store.blob_path(&blob);
            std::fs::remove_file(&path).map_err(|source| GcError::Remove { path, source })?;
            report.blobs_removed.push(blob);
        }
    }
    for snapshot in store.list_snapshots()? {
        if !keep.contains(&snapshot) {
            report.bytes_freed += store
                .snapshot_info(&snapshot)
                .map(|i| i.unpacked_size)
                .unwrap_or(0);
            store.remove_snapshot(&snapshot)?;
            report.snapshots_removed.push(snapshot);
        }
    }
    for dir in [store.content_ingest_dir(), store.snapshot_ingest_dir()] {
        let entries = std::fs::read_dir(&dir).map_err(StoreError::io("list", &dir))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.map_err(|source| GcError::Remove { path, source })?;
            report.ingests_removed += 1;
        }
    }
    // Sidecars whose snapshot directory is gone (a crash between the two removals).
    let dir = store.snapshots_dir();
    for entry in std::fs::read_dir(&dir)
        .map_err(StoreError::io("list", &dir))?
        .flatten()
    {
        let path = entry.path();
        let orphan =
            path.extension().is_some_and(|e| e == "json") && !path.with_extension("").is_dir();
        if orphan {
            std::fs::remove_file(&path).map_err(|source| GcError::Remove { path, source })?;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_keep_content_and_stale_ingests_go() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let kept = store.write_blob(b"leased", None)?;
        let dropped = store.write_blob(b"orphan", None)?;
        std::fs::write(store.content_ingest_dir().join("dead-writer"), b"partial")?;
        store.put_lease("ctr-1", std::slice::from_ref(&kept))?;
        let report = collect(&store)?;
        assert_eq!(report.blobs_removed, vec![dropped]);
        assert_eq!(report.ingests_removed, 1);
        assert!(store.has_blob(&kept));
        store.remove_lease("ctr-1")?;
        assert_eq!(collect(&store)?.blobs_removed, vec![kept]);
        assert!(store.put_lease("../evil", &[]).is_err());
        Ok(())
    }
}
