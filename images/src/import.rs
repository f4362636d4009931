//! Importing local archives: `docker save` output (tar, optionally gzipped) and OCI image
//! layouts (directory or tar), from a path or from standard input (`-`). Every file of the
//! archive is first ingested into the content store — hashed on the way, and for OCI `blobs/sha256/<hex>` checked against its name —
//! then the image is resolved from the store exactly as a pull would be, and its layers are
//! unpacked in parallel by the same code.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;

use crate::digest::Digest;
use crate::manifest::{self, descriptor_digest, Document, Platform};
use crate::progress::Progress;
use crate::pull::{record_image, Resolved};
use crate::reference::ImageRef;
use crate::store::lock;
use crate::store::metadata::ImageRecord;
use crate::store::{Store, StoreError};
use crate::unpack::UnpackOptions;
use crate::Error;

/// Largest JSON file of an archive kept in memory (manifest.json, index.json).
const MAX_JSON_BYTES: u64 = 16 << 20;

/// Errors of an import.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Neither `index.json` nor `manifest.json` was found.
    #[error("{path} is neither a docker save archive (manifest.json) nor an OCI image layout (index.json)")]
    UnknownFormat {
        /// The input.
        path: PathBuf,
    },
    /// The input could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The input.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The archive's own metadata is wrong.
    #[error("{path}: {reason}")]
    BadArchive {
        /// The input.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `--tag` given for an archive holding several images.
    #[error("{path} holds {count} images; --tag names exactly one")]
    TagNeedsOneImage {
        /// The input.
        path: PathBuf,
        /// Images found.
        count: usize,
    },
}

/// Settings of an import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Name to give the image instead of the one in the archive.
    pub tag: Option<ImageRef>,
    /// Unpack limits.
    pub unpack: UnpackOptions,
    /// Platform picked from a multi-platform index.
    pub platform: Platform,
}

/// The files of an archive, ingested: path → blob digest; small JSON files also in memory.
#[derive(Debug, Default)]
struct Ingested {
    blobs: HashMap<String, Digest>,
    json: HashMap<String, Vec<u8>>,
}

/// Imports the archive or layout at `path`; returns the records written.
pub async fn import(
    store: &Store,
    path: &Path,
    options: &ImportOptions,
    progress: Arc<dyn Progress>,
) -> Result<Vec<ImageRecord>, Error> {
    let _gc = lock::shared_async(store.locks_dir().join("gc.lock")).await?;
    let (store2, path2) = (store.clone(), path.to_path_buf());
    let files = tokio::task::spawn_blocking(move || ingest_all(&store2, &path2))
        .await
        .map_err(|e| ImportError::Read {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })??;
    let stem = stem(path);
    let images: Vec<(String, Digest, Digest)> = if let Some(index) = files.json.get("index.json") {
        oci_images(store, path, &files, index, &stem, &options.platform)?
    } else if let Some(manifest) = files.json.get("manifest.json") {
        docker_images(store, path, &files, manifest, &stem)?
    } else {
        return Err(ImportError::UnknownFormat {
            path: path.to_path_buf(),
        }
        .into());
    };
    if options.tag.is_some() && images.len() != 1 {
        return Err(ImportError::TagNeedsOneImage {
            path: path.to_path_buf(),
            count: images.len(),
        }
        .into());
    }
    let mut records = Vec::new();
    for (name, top_digest, manifest_digest) in images {
        let name = options.tag.as_ref().map(|t| t.to_string()).unwrap_or(name);
        let bytes = store.read_blob(&manifest_digest)?;
        let target = Resolved {
            name,
            top_digest,
            manifest_digest,
        };
        let settings = (&options.platform, &options.unpack);
        let record = record_image(store, target, &bytes, None, settings, &progress).await?;
        records.push(record);
    }
    Ok(records)
}

/// `localhost/<file name without extensions>`, the name of an image whose archive names
/// only a tag (or nothing), as podman does for unqualified local images.
fn stem(path: &Path) -> String {
    if path == Path::new("-") {
        return "localhost/import".into();
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let base = name.split('.').next().unwrap_or("");
    let clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_matches(|c| c == '-' || c == '_').to_string();
    format!(
        "localhost/{}",
        if clean.is_empty() {
            "import".into()
        } else {
            clean
        }
    )
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    ImportError::BadArchive {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
    .into()
}

fn ingest_all(store: &Store, path: &Path) -> Result<Ingested, Error> {
    let read_err = |source| {
        Error::from(ImportError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let mut files = Ingested::default();
    // `-` is standard input, as `docker load` reads it: a tar is read in one pass.
    let input: Box<dyn Read> = if path == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        let meta = std::fs::metadata(path).map_err(read_err)?;
        if meta.is_dir() {
            ingest_dir(store, path, path, &mut files, 0)?;
            return Ok(files);
        }
        Box::new(std::fs::File::open(path).map_err(read_err)?)
    };
    let mut reader = BufReader::with_capacity(1 << 20, input);
    let gz = reader
        .fill_buf()
        .map_err(read_err)?
        .starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::bufread::MultiGzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    let mut archive = tar::Archive::new(reader);
    let mut symlinks: Vec<(String, String)> = Vec::new();
    for entry in archive
        .entries()
        .map_err(|e| bad(path, format!("not a tar archive: {e}")))?
    {
        let mut entry = entry.map_err(|e| bad(path, format!("malformed tar: {e}")))?;
        let Some(name) = crate::unpack::path::normalize(&entry.path_bytes()) else {
            continue;
        };
        let name = name.to_string_lossy().into_owned();
        let kind = entry.header().entry_type();
        if kind.is_symlink() {
            // Old `docker save` links duplicate layers: <id>/layer.tar -> ../<id2>/layer.tar
            if let Some(target) = entry.link_name_bytes() {
                let parent = Path::new(&name)
                    .parent()
                    .unwrap_or(Path::new(""))
                    .to_string_lossy()
                    .into_owned();
                let joined = format!("{parent}/{}", String::from_utf8_lossy(&target));
                if let Some(t) = crate::unpack::path::normalize(joined.as_bytes()) {
                    symlinks.push((name, t.to_string_lossy().into_owned()));
                }
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let size = entry.size();
        ingest_one(store, path, &name, size, &mut entry, &mut files)?;
    }
    for (link, target) in symlinks {
        if let Some(d) = files.blobs.get(&target).cloned() {
            files.blobs.insert(link, d);
        }
    }
    Ok(files)
}

fn ingest_dir(
    store: &Store,
    root: &Path,
    dir: &Path,
    files: &mut Ingested,
    depth: usize,
) -> Result<(), Error> {
    if depth > 8 {
        return Ok(());
    }
    let read_err = |source| {
        Error::from(ImportError::Read {
            path: dir.to_path_buf(),
            source,
        })
    };
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let path = entry.path();
        let meta = std::fs::metadata(&path).map_err(read_err)?;
        if meta.is_dir() {
            ingest_dir(store, root, &path, files, depth + 1)?;
        } else if meta.is_file() {
            let name = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            let mut file = std::fs::File::open(&path).map_err(read_err)?;
            ingest_one(store, root, &name, meta.len(), &mut file, files)?;
        }
    }
    Ok(())
}

fn ingest_one(
    store: &Store,
    archive: &Path,
    name: &str,
    size: u64,
    reader: &mut dyn Read,
    files: &mut Ingested,
) -> Result<(), Error> {
    let is_json = (name.ends_with(".json") || name == "oci-layout" || name == "repositories")
        && size <= MAX_JSON_BYTES;
    if is_json && !name.contains('/') {
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .map_err(|source| ImportError::Read {
                path: archive.join(name),
                source,
            })?;
        files.json.insert(name.to_string(), bytes.clone());
        let digest = store.write_blob(&bytes, None)?;
        files.blobs.insert(name.to_string(), digest);
        return Ok(());
    }
    // OCI layout blobs are named by their digest: hold them to it.
    let expected = name
        .strip_prefix("blobs/sha256/")
        .and_then(|hex| Digest::from_hex(hex).ok());
    let mut ingest = store.ingest(expected, Some(size))?;
    std::io::copy(reader, &mut ingest).map_err(|source| ImportError::Read {
        path: archive.join(name),
        source,
    })?;
    let digest = ingest.commit()?;
    files.blobs.insert(name.to_string(), digest);
    Ok(())
}

/// Images of an OCI layout: (name, top digest, platform manifest digest).
fn oci_images(
    store: &Store,
    path: &Path,
    files: &Ingested,
    index_bytes: &[u8],
    stem: &str,
    platform: &Platform,
) -> Result<Vec<(String, Digest, Digest)>, Error> {
    let index_digest = Digest::of(index_bytes);
    let Document::Index(index) = manifest::parse_document(index_bytes, &index_digest, None)? else {
        return Err(bad(path, "index.json is not an image index"));
    };
    let mut out = Vec::new();
    for desc in index.manifests() {
        let digest = descriptor_digest(desc, &index_digest)?;
        if !store.has_blob(&digest) || !files.blobs.values().any(|d| *d == digest) {
            return Err(StoreError::MissingBlob { digest }.into());
        }
        let annotations = desc.annotations().clone().unwrap_or_default();
        let name = match (
            annotations.get("io.containerd.image.name"),
            annotations.get("org.opencontainers.image.ref.name"),
        ) {
            (Some(full), _) => ImageRef::parse(full)?.to_string(),
            (None, Some(r)) if r.contains('/') || r.contains(':') => {
                ImageRef::parse(r)?.to_string()
            }
            (None, Some(tag)) => ImageRef::parse(&format!("{stem}:{tag}"))?.to_string(),
            (None, None) => ImageRef::parse(&format!("{stem}:latest"))?.to_string(),
        };
        let bytes = store.read_blob(&digest)?;
        let manifest_digest =
            match manifest::parse_document(&bytes, &digest, Some(desc.media_type().as_ref()))? {
                Document::Manifest(_) => digest.clone(),
                Document::Index(inner) => {
                    let chosen = manifest::select_platform(&inner, &digest, platform)?;
                    descriptor_digest(&chosen, &digest)?
                }
            };
        out.push((name, digest, manifest_digest));
    }
    if out.is_empty() {
        return Err(bad(path, "index.json lists no images"));
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Images of a `docker save` archive: a schema2 manifest is written for each.
fn docker_images(
    store: &Store,
    path: &Path,
    files: &Ingested,
    manifest_json: &[u8],
    stem: &str,
) -> Result<Vec<(String, Digest, Digest)>, Error> {
    let entries: Vec<DockerEntry> = serde_json::from_slice(manifest_json)
        .map_err(|e| bad(path, format!("manifest.json: {e}")))?;
    let find = |name: &str| {
        files.blobs.get(name).cloned().ok_or_else(|| {
            bad(
                path,
                format!("manifest.json names {name}, which is not in the archive"),
            )
        })
    };
    let mut out = Vec::new();
    for entry in entries {
        let config = find(&entry.config)?;
        let mut layers = Vec::new();
        for layer in &entry.layers {
            let digest = find(layer)?;
            let mut head = [0u8; 4];
            let n = store.open_blob(&digest)?.read(&mut head).unwrap_or(0);
            let media_type = match &head[..n] {
                [0x1f, 0x8b, ..] => manifest::DOCKER_LAYER_GZIP,
                [0x28, 0xb5, 0x2f, 0xfd] => "application/vnd.oci.image.layer.v1.tar+zstd",
                _ => manifest::DOCKER_LAYER_TAR,
            };
            layers.push(json!({"mediaType": media_type, "digest": digest.to_string(), "size": store.blob_size(&digest)?}));
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": manifest::DOCKER_MANIFEST,
            "config": {"mediaType": manifest::DOCKER_CONFIG, "digest": config.to_string(), "size": store.blob_size(&config)?},
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&manifest).map_err(|e| bad(path, e.to_string()))?;
        let digest = store.write_blob(&bytes, None)?;
        let tags = entry.repo_tags.unwrap_or_default();
        if tags.is_empty() {
            out.push((
                ImageRef::parse(&format!("{stem}:latest"))?.to_string(),
                digest.clone(),
                digest.clone(),
            ));
        }
        for tag in tags {
            out.push((
                ImageRef::parse(&tag)?.to_string(),
                digest.clone(),
                digest.clone(),
            ));
        }
    }
    Ok(out)
}
