//! Pulling: resolve the reference to this platform's manifest, fetch the config, then
//! every layer at once — each layer's bytes are hashed into the content store and fed to
//! its unpacker on a blocking thread as they arrive, so unpacking overlaps the download
//! and layers unpack in parallel. A layer is locked (flock on its diff id) while it is
//! produced, so concurrent pulls of shared layers, from any process, do the work once.

use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use oci_spec::image::{ImageConfiguration, ImageManifest};

use crate::digest::Digest;
use crate::manifest::{
    self, check_config, check_manifest, descriptor_digest, layer_compression, Document, Platform,
};
use crate::progress::{Event, Progress};
use crate::reference::ImageRef;
use crate::registry::{RegistryError, RegistryOptions, Session};
use crate::store::content::Ingest;
use crate::store::lock;
use crate::store::metadata::{ImageRecord, LayerRecord};
use crate::store::snapshots::{SnapshotInfo, SnapshotIngest};
use crate::store::{Store, StoreError};
use crate::unpack::{unpack_layer, Compression, UnpackError, UnpackOptions, UnpackStats};
use crate::Error;

/// Largest manifest or config accepted (registries cap manifests at 4 MiB).
const MAX_DOCUMENT_BYTES: usize = 16 << 20;
/// Layers fetched at once.
const PARALLEL_LAYERS: usize = 6;
/// Download attempts per layer. Transient failures (no connection, 5xx/429, a stream cut
/// short) start the layer over after a growing pause, as Docker's layer downloads do;
/// content that arrives whole but wrong is never retried.
const LAYER_ATTEMPTS: u32 = 3;
const RETRY_BACKOFF: std::time::Duration = std::time::Duration::from_millis(500);

fn is_transient(err: &Error) -> bool {
    match err {
        Error::Registry(RegistryError::Connect { .. }) => true,
        Error::Registry(RegistryError::Status { status, .. }) => *status >= 500 || *status == 429,
        Error::Unpack(UnpackError::Source { .. }) => true,
        Error::Store(StoreError::SizeMismatch {
            expected, actual, ..
        }) => actual < expected,
        _ => false,
    }
}

/// Errors of a pull that are not one module's alone.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// One layer failed; the source says how.
    #[error("layer {digest} of {reference}: {source}")]
    Layer {
        /// The image.
        reference: String,
        /// The layer blob.
        digest: Digest,
        /// What failed.
        source: Box<Error>,
    },
    /// The data root's file system is full (or its quota used up) while a layer was
    /// stored: the disk's fault, not the registry's; not retried.
    #[error("no space left on device under {root}: {detail}")]
    NoSpace {
        /// The data root.
        root: std::path::PathBuf,
        /// What was being written when it ran out.
        detail: String,
    },
    /// A blocking unpack task panicked or was cancelled.
    #[error("unpack task for layer {digest} failed: {detail}")]
    Task {
        /// The layer blob.
        digest: Digest,
        /// The join error.
        detail: String,
    },
    /// An index nested where a manifest was expected.
    #[error("{digest} is an index where an image manifest was expected")]
    NestedIndex {
        /// The document.
        digest: Digest,
    },
    /// A manifest or config larger than any real one.
    #[error(
        "{digest} is larger than {MAX_DOCUMENT_BYTES} bytes; refusing it as a manifest or config"
    )]
    DocumentTooLarge {
        /// The document.
        digest: Digest,
    },
}

/// Settings of a pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Registry access.
    pub registry: RegistryOptions,
    /// Unpack limits.
    pub unpack: UnpackOptions,
    /// The platform to pick from an index.
    pub platform: Platform,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            registry: RegistryOptions::default(),
            unpack: UnpackOptions::default(),
            platform: Platform::host(),
        }
    }
}

/// One layer to make present: blob digest, size, media type and the diff id it must have.
#[derive(Debug, Clone)]
pub(crate) struct LayerJob {
    pub desc: oci_spec::image::Descriptor,
    pub digest: Digest,
    pub diff_id: Digest,
    pub compression: Compression,
}

/// Pulls `reference` into `store` and records it; returns the record.
pub async fn pull(
    store: &Store,
    reference: &ImageRef,
    options: &PullOptions,
    progress: Arc<dyn Progress>,
) -> Result<ImageRecord, Error> {
    let _gc = lock::shared_async(store.locks_dir().join("gc.lock")).await?;
    let session = Session::open(&options.registry, reference).await?;
    let (top_bytes, top_digest) = session.fetch_manifest(reference).await?;
    store.write_blob(&top_bytes, Some(&top_digest))?;
    let (manifest_bytes, manifest_digest) =
        match manifest::parse_document(&top_bytes, &top_digest, None)? {
            Document::Manifest(_) => (top_bytes, top_digest.clone()),
            Document::Index(index) => {
                let desc = manifest::select_platform(&index, &top_digest, &options.platform)?;
                let child = reference.with_digest(&descriptor_digest(&desc, &top_digest)?);
                let (bytes, digest) = session.fetch_manifest(&child).await?;
                store.write_blob(&bytes, Some(&digest))?;
                (bytes, digest)
            }
        };
    let target = Resolved {
        name: reference.to_string(),
        top_digest,
        manifest_digest,
    };
    let settings = (&options.platform, &options.unpack);
    record_image(
        store,
        target,
        &manifest_bytes,
        Some(&session),
        settings,
        &progress,
    )
    .await
}

/// What a reference or archive entry resolved to.
#[derive(Debug)]
pub(crate) struct Resolved {
    /// The canonical reference to record the image under.
    pub name: String,
    /// What the name points at (index or manifest).
    pub top_digest: Digest,
    /// This platform's manifest.
    pub manifest_digest: Digest,
}

/// From a platform manifest to a recorded image, for pulls (with a session to fetch what
/// is missing) and imports (everything already stored): checks the manifest and config,
/// makes every layer present, writes the record.
pub(crate) async fn record_image(
    store: &Store,
    target: Resolved,
    manifest_bytes: &[u8],
    session: Option<&Session>,
    (platform, unpack): (&Platform, &UnpackOptions),
    progress: &Arc<dyn Progress>,
) -> Result<ImageRecord, Error> {
    let Resolved {
        name,
        top_digest,
        manifest_digest,
    } = target;
    let Document::Manifest(manifest) =
        manifest::parse_document(manifest_bytes, &manifest_digest, None)?
    else {
        return Err(PullError::NestedIndex {
            digest: manifest_digest,
        }
        .into());
    };
    check_manifest(&manifest, &manifest_digest)?;
    let config_digest = descriptor_digest(manifest.config(), &manifest_digest)?;
    if let (false, Some(session)) = (store.has_blob(&config_digest), session) {
        let bytes = fetch_small(session, manifest.config(), &config_digest).await?;
        store.write_blob(&bytes, Some(&config_digest))?;
    }
    let config = manifest::parse_config(&store.read_blob(&config_digest)?, &config_digest)?;
    check_config(&config, &config_digest, manifest.layers().len(), platform)?;
    progress.event(Event::Resolved {
        reference: name.clone(),
        manifest: manifest_digest.to_string(),
        layers: manifest.layers().len(),
    });
    let jobs = layer_jobs(&manifest, &manifest_digest, &config)?;
    let layers = ensure_layers(store, &name, jobs, session, unpack, progress).await?;
    let record = image_record(
        name,
        top_digest,
        manifest_digest,
        config_digest,
        &config,
        platform,
        layers,
    );
    store.put_image(record.clone())?;
    Ok(record)
}

async fn fetch_small(
    session: &Session,
    desc: &oci_spec::image::Descriptor,
    digest: &Digest,
) -> Result<Vec<u8>, Error> {
    if desc.size() as usize > MAX_DOCUMENT_BYTES {
        return Err(PullError::DocumentTooLarge {
            digest: digest.clone(),
        }
        .into());
    }
    let mut stream = session.blob_stream(desc).await?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| crate::registry::RegistryError::Connect {
            registry: digest.to_string(),
            detail: e.to_string(),
        })?;
        out.extend_from_slice(&chunk);
        if out.len() > MAX_DOCUMENT_BYTES {
            return Err(PullError::DocumentTooLarge {
                digest: digest.clone(),
            }
            .into());
        }
    }
    Ok(out)
}

/// The layer jobs of a manifest, paired with the config's diff ids.
pub(crate) fn layer_jobs(
    manifest: &ImageManifest,
    manifest_digest: &Digest,
    config: &ImageConfiguration,
) -> Result<Vec<LayerJob>, Error> {
    let mut jobs = Vec::new();
    for (desc, diff_id) in manifest.layers().iter().zip(config.rootfs().diff_ids()) {
        let digest = descriptor_digest(desc, manifest_digest)?;
        let diff_id: Digest = diff_id.parse()?;
        let compression =
            layer_compression(desc.media_type().as_ref()).unwrap_or(Compression::Detect);
        jobs.push(LayerJob {
            desc: desc.clone(),
            digest,
            diff_id,
            compression,
        });
    }
    Ok(jobs)
}

/// Makes every layer present (blob and snapshot), in parallel; returns records in order.
pub(crate) async fn ensure_layers(
    store: &Store,
    reference: &str,
    jobs: Vec<LayerJob>,
    session: Option<&Session>,
    unpack: &UnpackOptions,
    progress: &Arc<dyn Progress>,
) -> Result<Vec<LayerRecord>, Error> {
    let mut records: Vec<(usize, LayerRecord)> =
        futures_util::stream::iter(jobs.into_iter().enumerate())
            .map(|(i, job)| async move {
                let digest = job.digest.clone();
                match ensure_layer(store, job, session, unpack, progress).await {
                    Ok(r) => Ok((i, r)),
                    Err(e) => {
                        progress.event(Event::LayerFailed {
                            digest: digest.to_string(),
                        });
                        Err(Error::from(PullError::Layer {
                            reference: reference.to_string(),
                            digest,
                            source: Box::new(e),
                        }))
                    }
                }
            })
            .buffer_unordered(PARALLEL_LAYERS)
            .try_collect()
            .await?;
    records.sort_by_key(|(i, _)| *i);
    Ok(records.into_iter().map(|(_, r)| r).collect())
}

async fn ensure_layer(
    store: &Store,
    job: LayerJob,
    session: Option<&Session>,
    unpack: &UnpackOptions,
    progress: &Arc<dyn Progress>,
) -> Result<LayerRecord, Error> {
    let _lock = lock::exclusive_async(
        store
            .locks_dir()
            .join(format!("{}.lock", job.diff_id.hex())),
    )
    .await?;
    let size = job.desc.size();
    let record = |info: SnapshotInfo| LayerRecord {
        digest: job.digest.clone(),
        diff_id: job.diff_id.clone(),
        media_type: job.desc.media_type().to_string(),
        size,
        unpacked_size: info.unpacked_size,
    };
    let have_blob = store.has_blob(&job.digest);
    if have_blob {
        if let Some(info) = store.snapshot_info(&job.diff_id) {
            progress.event(Event::LayerCached {
                digest: job.digest.to_string(),
            });
            return Ok(record(info));
        }
    }
    progress.event(Event::LayerStarted {
        digest: job.digest.to_string(),
        size,
        from_store: have_blob,
    });
    let info = if have_blob {
        let (store2, job2, opts) = (store.clone(), job.clone(), *unpack);
        join(
            &job.digest,
            tokio::task::spawn_blocking(move || unpack_stored(&store2, &job2, &opts)),
        )
        .await?
    } else {
        let Some(session) = session else {
            return Err(StoreError::MissingBlob {
                digest: job.digest.clone(),
            }
            .into());
        };
        let mut attempt = 1;
        loop {
            match stream_layer(store, &job, session, unpack, progress).await {
                Ok(info) => break info,
                Err(e) if e.is_no_space() => {
                    tracing::error!(digest = %job.digest, root = %store.root().display(), "disk full while storing a layer: {e}");
                    return Err(PullError::NoSpace {
                        root: store.root().to_path_buf(),
                        detail: e.to_string(),
                    }
                    .into());
                }
                Err(e) if attempt < LAYER_ATTEMPTS && is_transient(&e) => {
                    tracing::debug!(digest = %job.digest, attempt, "layer download failed, retrying: {e}");
                    progress.event(Event::LayerRetrying {
                        digest: job.digest.to_string(),
                        attempt,
                        error: e.to_string(),
                    });
                    tokio::time::sleep(RETRY_BACKOFF * attempt).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    };
    progress.event(Event::LayerDone {
        digest: job.digest.to_string(),
    });
    Ok(record(info))
}

async fn join(
    digest: &Digest,
    task: tokio::task::JoinHandle<Result<SnapshotInfo, Error>>,
) -> Result<SnapshotInfo, Error> {
    task.await.map_err(|e| PullError::Task {
        digest: digest.clone(),
        detail: e.to_string(),
    })?
}

/// Unpacks a layer whose blob is already stored (import, or a snapshot removed by hand).
fn unpack_stored(
    store: &Store,
    job: &LayerJob,
    options: &UnpackOptions,
) -> Result<SnapshotInfo, Error> {
    let file = store.open_blob(&job.digest)?;
    let snapshot = store.begin_snapshot()?;
    let reader = io::BufReader::with_capacity(1 << 20, file);
    let stats = unpack_layer(reader, job.compression, snapshot.path(), options)?;
    commit_snapshot(snapshot, job, stats)
}

/// Checks the diff id of an unpacked layer and commits its snapshot.
fn commit_snapshot(
    snapshot: SnapshotIngest,
    job: &LayerJob,
    stats: UnpackStats,
) -> Result<SnapshotInfo, Error> {
    if stats.diff_id != job.diff_id {
        let (expected, actual) = (job.diff_id.clone(), stats.diff_id);
        return Err(UnpackError::DiffIdMismatch { expected, actual }.into());
    }
    let info = SnapshotInfo {
        version: 1,
        unpacked_size: stats.unpacked_size,
        entries: stats.entries,
    };
    snapshot.commit(&job.diff_id, info)?;
    Ok(info)
}

/// Downloads a layer and unpacks it while it arrives.
async fn stream_layer(
    store: &Store,
    job: &LayerJob,
    session: &Session,
    unpack: &UnpackOptions,
    progress: &Arc<dyn Progress>,
) -> Result<SnapshotInfo, Error> {
    let mut stream = session.blob_stream(&job.desc).await?;
    // A few chunks of slack: the unpacker is the bottleneck, and a deeper queue only holds
    // network buffers (measured: 64 chunks per layer gave 130 MiB peak RSS, 4 give 45 MiB).
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
    let ingest = store.ingest(Some(job.digest.clone()), Some(job.desc.size()))?;
    let (store2, job2, opts) = (store.clone(), job.clone(), *unpack);
    let worker = tokio::task::spawn_blocking(move || {
        let mut reader = TeeReader {
            rx,
            current: Bytes::new(),
            ingest: Some(ingest),
            received: 0,
            limit: job2.desc.size(),
        };
        unpack_streamed(&store2, &job2, &opts, &mut reader)
    });
    let mut done = 0u64;
    let mut last_report = 0u64;
    while let Some(chunk) = stream.next().await {
        let failed = chunk.is_err();
        if let Ok(bytes) = &chunk {
            done += bytes.len() as u64;
            if done - last_report >= 256 * 1024 {
                last_report = done;
                progress.event(Event::LayerProgress {
                    digest: job.digest.to_string(),
                    done,
                });
            }
        }
        if tx.send(chunk).await.is_err() || failed {
            break;
        }
    }
    progress.event(Event::LayerProgress {
        digest: job.digest.to_string(),
        done,
    });
    drop(tx);
    join(&job.digest, worker).await
}

fn unpack_streamed(
    store: &Store,
    job: &LayerJob,
    options: &UnpackOptions,
    reader: &mut TeeReader,
) -> Result<SnapshotInfo, Error> {
    let snapshot = store.begin_snapshot()?;
    let result = unpack_layer(&mut *reader, job.compression, snapshot.path(), options);
    let stats = match result {
        Ok(stats) => stats,
        // A full disk is the verdict: draining the rest would only fail to write it too
        // and then blame the blob's size.
        Err(unpack_err) if crate::error::is_no_space(&unpack_err) => {
            return Err(unpack_err.into());
        }
        Err(unpack_err) => {
            // A corrupt blob often shows first as a corrupt stream; the digest says which it
            // is. Read what is left (bounded by the descriptor's size) and prefer that verdict.
            if let Err(e) = io::copy(reader, &mut io::sink()) {
                // The stream ended in an error (a dropped connection, too many bytes); what
                // arrived is still judged below.
                tracing::debug!("layer stream failed after unpack error: {e}");
            }
            return match reader.ingest.take().map(Ingest::commit) {
                Some(Err(
                    e @ (StoreError::DigestMismatch { .. } | StoreError::SizeMismatch { .. }),
                )) => Err(e.into()),
                _ => Err(unpack_err.into()),
            };
        }
    };
    let Some(ingest) = reader.ingest.take() else {
        return Err(StoreError::MissingBlob {
            digest: job.digest.clone(),
        }
        .into());
    };
    ingest.commit()?;
    commit_snapshot(snapshot, job, stats)
}

/// Reads the chunks a download task sends, writing each into the blob ingest first. A
/// registry that sends more than the descriptor's size is cut off there, so a hostile
/// endless blob cannot fill the disk.
struct TeeReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
    ingest: Option<Ingest>,
    received: u64,
    limit: u64,
}

impl Read for TeeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Err(e)) => return Err(e),
                Some(Ok(chunk)) => {
                    self.received += chunk.len() as u64;
                    if let Some(ingest) = self.ingest.as_mut() {
                        ingest.write_all(&chunk)?;
                    }
                    if self.received > self.limit {
                        return Err(io::Error::other(format!(
                            "registry sent more than the {} bytes the manifest announces",
                            self.limit
                        )));
                    }
                    self.current = chunk;
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

/// Builds the record of an image whose layers are all present.
pub(crate) fn image_record(
    reference: String,
    digest: Digest,
    manifest: Digest,
    config_digest: Digest,
    config: &ImageConfiguration,
    platform: &Platform,
    layers: Vec<LayerRecord>,
) -> ImageRecord {
    let stored_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    ImageRecord {
        reference,
        digest,
        manifest,
        config: config_digest,
        platform: platform.to_string(),
        size: layers.iter().map(|l| l.unpacked_size).sum(),
        layers,
        created: config.created().clone(),
        stored_at,
    }
}
