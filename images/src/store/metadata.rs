//! Image records.
//!
//! `metadata/images.json`, rewritten atomically under `locks/images.lock`:
//!
//! ```text
//! {
//!   "version": 1,
//!   "images": {
//!     "<canonical reference>": {
//!       "reference": "docker.io/library/busybox:latest",
//!       "digest":    "sha256:…",   what the reference resolved to (index or manifest)
//!       "manifest":  "sha256:…",   the platform manifest
//!       "config":    "sha256:…",   the image config; its short form is the IMAGE ID
//!       "platform":  "linux/amd64",
//!       "layers": [ { "digest", "diff_id", "media_type", "size", "unpacked_size" } ],
//!       "size": 1234,              unpacked bytes of all layers
//!       "created": "…",            from the config, RFC 3339, if present
//!       "stored_at": 1700000000    seconds since the epoch
//!     }
//!   }
//! }
//! ```
//!
//! A file with another `version` is refused rather than guessed at; migrations go here.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::fsutil::write_atomic;
use super::lock::FileLock;
use super::{Store, StoreError};
use crate::digest::Digest;
use crate::reference::ImageRef;

const VERSION: u32 = 1;

/// One layer of an image record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRecord {
    /// Digest of the blob as stored (compressed).
    pub digest: Digest,
    /// Digest of the uncompressed tar; names the snapshot.
    pub diff_id: Digest,
    /// Media type of the blob.
    pub media_type: String,
    /// Blob size in bytes.
    pub size: u64,
    /// Uncompressed tar size in bytes.
    pub unpacked_size: u64,
}

/// An image known to the store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    /// Canonical reference (the key).
    pub reference: String,
    /// What the reference resolved to: index or manifest digest (Docker's RepoDigest).
    pub digest: Digest,
    /// The platform manifest.
    pub manifest: Digest,
    /// The config blob; the image id.
    pub config: Digest,
    /// `os/arch[/variant]`.
    pub platform: String,
    /// Layers, bottom first.
    pub layers: Vec<LayerRecord>,
    /// Unpacked bytes of all layers.
    pub size: u64,
    /// Creation time from the config.
    #[serde(default)]
    pub created: Option<String>,
    /// When the record was written, seconds since the epoch.
    pub stored_at: u64,
}

impl ImageRecord {
    /// Every blob digest this image needs kept.
    pub fn blobs(&self) -> impl Iterator<Item = &Digest> {
        [&self.digest, &self.manifest, &self.config]
            .into_iter()
            .chain(self.layers.iter().map(|l| &l.digest))
    }

    /// Every snapshot (diff id) this image needs kept, bottom first.
    pub fn snapshots(&self) -> impl Iterator<Item = &Digest> {
        self.layers.iter().map(|l| &l.diff_id)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct ImagesFile {
    version: u32,
    images: BTreeMap<String, ImageRecord>,
}

impl Store {
    fn images_path(&self) -> PathBuf {
        self.metadata_dir().join("images.json")
    }

    fn images_lock(&self) -> Result<FileLock, StoreError> {
        FileLock::exclusive(&self.locks_dir().join("images.lock"))
    }

    fn load_images(&self) -> Result<ImagesFile, StoreError> {
        let path = self.images_path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(ImagesFile {
                    version: VERSION,
                    images: BTreeMap::new(),
                })
            }
            Err(e) => return Err(StoreError::io("read", path)(e)),
        };
        let file: ImagesFile =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::BadMetadata {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if file.version != VERSION {
            return Err(StoreError::BadMetadata {
                path,
                reason: format!(
                    "version {} (this berth reads version {VERSION})",
                    file.version
                ),
            });
        }
        Ok(file)
    }

    fn save_images(&self, file: &ImagesFile) -> Result<(), StoreError> {
        let path = self.images_path();
        let bytes = serde_json::to_vec_pretty(file).map_err(|e| StoreError::BadMetadata {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&path, &bytes, 0o600)
    }

    /// All image records, sorted by reference.
    pub fn list_images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let _lock = self.images_lock()?;
        Ok(self.load_images()?.images.into_values().collect())
    }

    /// Adds or replaces the record of `record.reference`.
    pub fn put_image(&self, record: ImageRecord) -> Result<(), StoreError> {
        let _lock = self.images_lock()?;
        let mut file = self.load_images()?;
        file.images.insert(record.reference.clone(), record);
        self.save_images(&file)
    }

    /// Finds images by reference (normalised) or by id (`sha256:…` or a hex prefix of the
    /// config digest, as Docker's IMAGE ID).
    pub fn find_images(&self, name: &str) -> Result<Vec<ImageRecord>, StoreError> {
        let _lock = self.images_lock()?;
        let file = self.load_images()?;
        Ok(resolve(&file, name)?
            .into_iter()
            .filter_map(|k| file.images.get(&k).cloned())
            .collect())
    }

    /// Removes the records `name` resolves to and returns them.
    pub fn remove_images(&self, name: &str) -> Result<Vec<ImageRecord>, StoreError> {
        let _lock = self.images_lock()?;
        let mut file = self.load_images()?;
        let keys = resolve(&file, name)?;
        let removed = keys.iter().filter_map(|k| file.images.remove(k)).collect();
        self.save_images(&file)?;
        Ok(removed)
    }
}

fn resolve(file: &ImagesFile, name: &str) -> Result<Vec<String>, StoreError> {
    if let Ok(r) = ImageRef::parse(name) {
        let key = r.to_string();
        if file.images.contains_key(&key) {
            return Ok(vec![key]);
        }
    }
    let id = name.strip_prefix("sha256:").unwrap_or(name);
    let is_hex = id.len() >= 4 && id.bytes().all(|b| b.is_ascii_hexdigit());
    if is_hex {
        let matched: Vec<&ImageRecord> = file
            .images
            .values()
            .filter(|r| r.config.hex().starts_with(id))
            .collect();
        let ids: std::collections::BTreeSet<&Digest> = matched.iter().map(|r| &r.config).collect();
        if ids.len() > 1 {
            return Err(StoreError::AmbiguousImage {
                name: name.to_string(),
                count: ids.len(),
            });
        }
        if !matched.is_empty() {
            return Ok(matched.iter().map(|r| r.reference.clone()).collect());
        }
    }
    Err(StoreError::NoSuchImage {
        name: name.to_string(),
    })
}
