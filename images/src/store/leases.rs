//! Leases: a named list of digests (blobs or snapshots) that GC must keep although no
//! image record names them — a running container whose image was removed, an import in
//! progress. `leases/<name>.json` = `{"version": 1, "digests": ["sha256:…", …]}`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::fsutil::write_atomic;
use super::{Store, StoreError};
use crate::digest::Digest;

#[derive(Debug, Serialize, Deserialize)]
struct LeaseFile {
    version: u32,
    digests: Vec<Digest>,
}

fn check_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadLeaseName {
            name: name.to_string(),
        })
    }
}

impl Store {
    /// Creates or replaces the lease `name`.
    pub fn put_lease(&self, name: &str, digests: &[Digest]) -> Result<(), StoreError> {
        check_name(name)?;
        let file = LeaseFile {
            version: 1,
            digests: digests.to_vec(),
        };
        let bytes = serde_json::to_vec(&file).map_err(|e| StoreError::BadMetadata {
            path: self.leases_dir().join(name),
            reason: e.to_string(),
        })?;
        write_atomic(
            &self.leases_dir().join(format!("{name}.json")),
            &bytes,
            0o600,
        )
    }

    /// Removes the lease `name` (no error if absent).
    /// The digests a lease keeps, in the order they were given.
    pub fn lease_digests(&self, name: &str) -> Result<Vec<Digest>, StoreError> {
        check_name(name)?;
        let path = self.leases_dir().join(format!("{name}.json"));
        let bytes = std::fs::read(&path).map_err(StoreError::io("read", path.clone()))?;
        let file: LeaseFile =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::BadMetadata {
                path,
                reason: e.to_string(),
            })?;
        Ok(file.digests)
    }

    pub fn remove_lease(&self, name: &str) -> Result<(), StoreError> {
        check_name(name)?;
        let path = self.leases_dir().join(format!("{name}.json"));
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(StoreError::io("remove", path)(e))
            }
            _ => Ok(()),
        }
    }

    /// Every digest held by any lease. An unreadable lease file is an error: GC must not
    /// guess what it protected.
    pub fn leased_digests(&self) -> Result<BTreeSet<Digest>, StoreError> {
        let dir = self.leases_dir();
        let mut out = BTreeSet::new();
        for entry in std::fs::read_dir(&dir).map_err(StoreError::io("list", &dir))? {
            let path = entry.map_err(StoreError::io("list", &dir))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(StoreError::io("read", &path))?;
            let file: LeaseFile =
                serde_json::from_slice(&bytes).map_err(|e| StoreError::BadMetadata {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            out.extend(file.digests);
        }
        Ok(out)
    }
}
