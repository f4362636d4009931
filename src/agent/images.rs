//! Image actions: the store's operations, run by the owner (pulls and imports in tasks it
//! spawns, progress streamed to the caller).

use std::sync::Arc;

use berth_images::import::{import as import_images, ImportOptions};
use berth_images::progress::{Event, Progress};
use berth_images::pull::{pull as pull_image, PullOptions};
use berth_images::reference::ImageRef;
use berth_images::registry::RegistryOptions;
use berth_images::unpack::UnpackOptions;
use serde_json::json;
use tokio::sync::mpsc;

use super::error::ApiError;
use super::node::{Action, Node, Reply};
use crate::api::{
    ImageView, ImportQuery, LayerView, ProgressLine, PruneView, PullRequest, RemoveImageRequest,
    RemoveImageResponse,
};

/// Forwards library progress events to the response stream (dropped if the client is slow).
struct Forward(mpsc::Sender<ProgressLine>);

impl std::fmt::Debug for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Forward")
    }
}

impl Progress for Forward {
    fn event(&self, event: Event) {
        let _ = self.0.try_send(ProgressLine::Progress(event));
    }
}

fn platform(text: Option<&str>) -> Result<berth_images::manifest::Platform, String> {
    match text {
        Some(t) => t.parse().map_err(|e: String| e),
        None => Ok(berth_images::manifest::Platform::host()),
    }
}

fn unpack_options(node: &Node, max: Option<u64>) -> UnpackOptions {
    let mut o = UnpackOptions::default();
    if let Some(m) = node.settings.config.max_layer_bytes {
        o.max_bytes = m;
    }
    if let Some(m) = max {
        o.max_bytes = m;
    }
    o
}

/// The images `name` (reference or id prefix) resolves to; a typed error when none does.
pub fn find(
    store: &berth_images::store::Store,
    name: &str,
) -> Result<Vec<berth_images::store::metadata::ImageRecord>, ApiError> {
    use berth_images::store::StoreError;
    match store.find_images(name) {
        Ok(found) if found.is_empty() => Err(ApiError::no_such_image(name)),
        Ok(found) => Ok(found),
        Err(StoreError::NoSuchImage { .. }) => Err(ApiError::no_such_image(name)),
        Err(e @ StoreError::AmbiguousImage { .. }) => {
            Err(ApiError::new(crate::api::ErrorCode::Ambiguous, e.to_string()).about(name))
        }
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// The API view of a stored image.
pub fn view(record: &berth_images::store::metadata::ImageRecord) -> ImageView {
    let (repository, tag) = match ImageRef::parse(&record.reference) {
        Ok(r) => (r.name(), r.tag().map(str::to_string)),
        Err(_) => (record.reference.clone(), None),
    };
    ImageView {
        reference: record.reference.clone(),
        repository,
        tag,
        digest: record.digest.to_string(),
        manifest: record.manifest.to_string(),
        id: record.config.to_string(),
        platform: record.platform.clone(),
        layers: record
            .layers
            .iter()
            .map(|l| LayerView {
                digest: l.digest.to_string(),
                diff_id: l.diff_id.to_string(),
                media_type: l.media_type.clone(),
                size: l.size,
                unpacked_size: l.unpacked_size,
            })
            .collect(),
        size: record.size,
        created: record.created.clone(),
        stored_at: record.stored_at,
    }
}

/// The stored images, or those `reference` names: a bare repository (`busybox`) matches
/// all its tags, as `docker images busybox` does.
pub fn list(node: &Node, reference: Option<&str>) -> Result<Vec<ImageView>, ApiError> {
    let mut images = node
        .settings
        .store
        .list_images()
        .map_err(ApiError::internal)?;
    if let Some(filter) = reference {
        let wanted = ImageRef::parse(filter)
            .map_err(|e| ApiError::bad_request(e.to_string()).in_field("reference"))?;
        let has_tag = filter
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':') || last.contains('@'));
        images.retain(|image| match ImageRef::parse(&image.reference) {
            Ok(r) if has_tag => r == wanted,
            Ok(r) => r.name() == wanted.name(),
            Err(_) => false,
        });
    }
    Ok(images.iter().map(view).collect())
}

/// The clients of one pull in flight: each gets its progress and its result. `None` once
/// the pull has ended (a client that comes later starts a new one).
pub type PullWaiters = Arc<std::sync::Mutex<Option<Vec<mpsc::Sender<ProgressLine>>>>>;

/// Sends every progress line to each client of the pull (dropped for a slow one).
#[derive(Debug)]
struct FanOut(PullWaiters);

impl Progress for FanOut {
    fn event(&self, event: Event) {
        if let Ok(guard) = self.0.lock() {
            for w in guard.iter().flatten() {
                let _ = w.try_send(ProgressLine::Progress(event.clone()));
            }
        }
    }
}

/// What makes two pull requests the same pull: everything but the client.
fn pull_key(req: &PullRequest) -> String {
    format!(
        "{}\0{:?}\0{:?}\0{:?}\0{:?}\0{:?}",
        req.reference,
        req.platform,
        req.creds,
        req.authfile,
        req.insecure_registries,
        req.max_layer_bytes
    )
}

/// Pulls an image; a pull of the same image with the same options already in flight is
/// joined instead (ten `run`s of a missing image fetch it once).
pub fn pull(node: &mut Node, req: PullRequest, lines: mpsc::Sender<ProgressLine>) {
    let key = pull_key(&req);
    if let Some(waiters) = node.pulls.get(&key) {
        if let Ok(mut guard) = waiters.lock() {
            if let Some(list) = guard.as_mut() {
                list.push(lines);
                return;
            }
        }
    }
    let waiters: PullWaiters = Arc::new(std::sync::Mutex::new(Some(vec![lines])));
    node.pulls.insert(key.clone(), waiters.clone());
    let settings = node.settings.clone();
    let tx = node.tx.clone();
    let unpack = unpack_options(node, req.max_layer_bytes);
    tokio::spawn(async move {
        let result = async {
            let reference = ImageRef::parse(&req.reference).map_err(|e| e.to_string())?;
            let mut insecure = settings.config.insecure_registries.clone();
            insecure.extend(req.insecure_registries.iter().cloned());
            let credentials = match &req.creds {
                Some(text) => {
                    let (u, p) = text.split_once(':').ok_or("--creds wants USER:PASSWORD")?;
                    Some((u.to_string(), p.to_string()))
                }
                None => None,
            };
            let options = PullOptions {
                registry: RegistryOptions {
                    insecure,
                    credentials,
                    authfile: req.authfile.clone(),
                },
                unpack,
                platform: platform(req.platform.as_deref())?,
            };
            let progress: Arc<dyn Progress> = Arc::new(FanOut(waiters.clone()));
            pull_image(&settings.store, &reference, &options, progress)
                .await
                .map_err(|e| format!("pulling {reference}: {}", crate::chain(&e.into())))
        }
        .await;
        let last = match result {
            Ok(record) => {
                let ev = super::events::Event::new(
                    "image",
                    "pulled",
                    &record.reference,
                    &record.reference,
                )
                .with("digest", &record.digest);
                let _ = tx.send(Action::Emit(ev)).await;
                ProgressLine::Image(Box::new(view(&record)))
            }
            Err(e) => ProgressLine::Error(e),
        };
        // Closed under the lock: a client either joined before (and hears the end) or
        // finds the pull over and starts its own.
        let clients = waiters
            .lock()
            .ok()
            .and_then(|mut g| g.take())
            .unwrap_or_default();
        let _ = tx.send(Action::PullEnded(key)).await;
        for c in clients {
            let _ = c.send(last.clone()).await;
        }
    });
}

/// A pull ended: forget it (unless a newer pull of the same image took its place).
pub fn pull_ended(node: &mut Node, key: &str) {
    let over = node
        .pulls
        .get(key)
        .is_some_and(|w| w.lock().map(|g| g.is_none()).unwrap_or(true));
    if over {
        node.pulls.remove(key);
    }
}

pub fn import(node: &Node, q: ImportQuery, lines: mpsc::Sender<ProgressLine>) {
    let settings = node.settings.clone();
    let unpack = unpack_options(node, q.max_layer_bytes);
    tokio::spawn(async move {
        let result = async {
            let path = q.path.clone().ok_or("no archive given")?;
            let tag = q
                .tag
                .as_deref()
                .map(ImageRef::parse)
                .transpose()
                .map_err(|e| e.to_string())?;
            let options = ImportOptions {
                tag,
                unpack,
                platform: platform(q.platform.as_deref())?,
            };
            let progress: Arc<dyn Progress> = Arc::new(Forward(lines.clone()));
            import_images(
                &settings.store,
                std::path::Path::new(&path),
                &options,
                progress,
            )
            .await
            .map_err(|e| format!("importing {path}: {}", crate::chain(&e.into())))
        }
        .await;
        match result {
            Ok(records) => {
                for r in records {
                    let _ = lines.send(ProgressLine::Image(Box::new(view(&r)))).await;
                }
            }
            Err(e) => {
                let _ = lines.send(ProgressLine::Error(e)).await;
            }
        }
    });
}

pub fn inspect(node: &Node, name: &str) -> Result<serde_json::Value, ApiError> {
    let store = &node.settings.store;
    let images = find(store, name)?;
    let mut out = Vec::new();
    for image in images {
        let config: serde_json::Value = store
            .read_blob(&image.config)
            .map_err(ApiError::internal)
            .and_then(|b| serde_json::from_slice(&b).map_err(ApiError::internal))?;
        let diff_ids: Vec<_> = image.snapshots().cloned().collect();
        let missing: Vec<String> = diff_ids
            .iter()
            .filter(|d| !store.snapshot_path(d).is_dir())
            .map(|d| d.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(ApiError::internal(format!(
                "image {} is missing snapshots {}; pull it again",
                image.reference,
                missing.join(", ")
            )));
        }
        out.push(json!({
            "Id": image.config,
            "RepoTags": [image.reference],
            "RepoDigests": [image.digest],
            "Record": view(&image),
            "Config": config,
            "Rootfs": {
                "LowerDirs": store.lowerdirs(&diff_ids),
                "Mounts": store.rootfs_mounts(&diff_ids),
            },
        }));
    }
    Ok(serde_json::Value::Array(out))
}

pub fn remove(node: &Node, req: RemoveImageRequest, reply: Reply<RemoveImageResponse>) {
    let store = node.settings.store.clone();
    tokio::task::spawn_blocking(move || {
        let result = (|| {
            let matched = find(&store, &req.name)?;
            if matched.len() > 1 && !req.force {
                let refs: Vec<&str> = matched.iter().map(|r| r.reference.as_str()).collect();
                return Err(ApiError::conflict(format!(
                    "image {} is referenced by {} references ({}): remove them by name, or use -f",
                    req.name,
                    refs.len(),
                    refs.join(", ")
                )));
            }
            let removed = store.remove_images(&req.name).map_err(ApiError::internal)?;
            // Content only the removed images used goes now, as with `docker rmi`; layers a
            // container still uses are leased and stay.
            let report = berth_images::gc::collect(&store).map_err(ApiError::internal)?;
            Ok(RemoveImageResponse {
                untagged: removed.into_iter().map(|r| r.reference).collect(),
                deleted: report.blobs_removed.iter().map(|d| d.to_string()).collect(),
            })
        })();
        let _ = reply.send(result);
    });
}

pub fn prune(node: &Node, reply: Reply<PruneView>) {
    let store = node.settings.store.clone();
    tokio::task::spawn_blocking(move || {
        let report = berth_images::gc::collect(&store).map_err(ApiError::internal);
        let _ = reply.send(report.map(|r| PruneView {
            blobs_removed: r.blobs_removed.iter().map(|d| d.to_string()).collect(),
            snapshots_removed: r.snapshots_removed.iter().map(|d| d.to_string()).collect(),
            ingests_removed: r.ingests_removed,
            bytes_freed: r.bytes_freed,
        }));
    });
}

pub fn rootfs(node: &Node, req: crate::api::RootfsRequest, reply: Reply<()>) {
    let store = node.settings.store.clone();
    tokio::task::spawn_blocking(move || {
        let result = (|| {
            let image = find(&store, &req.image)?
                .pop()
                .ok_or_else(|| ApiError::no_such_image(&req.image))?;
            let meta = std::fs::metadata(&req.dest).map_err(|e| {
                ApiError::bad_request(format!("destination {}: {e}", req.dest.display()))
            })?;
            let empty = std::fs::read_dir(&req.dest)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if !meta.is_dir() || !empty {
                return Err(ApiError::bad_request(format!(
                    "destination {} must be an existing empty directory",
                    req.dest.display()
                )));
            }
            let layers: Vec<_> = image.snapshots().map(|d| store.snapshot_path(d)).collect();
            berth_fsutil::flatten::flatten(&layers, &req.dest).map_err(|e| {
                ApiError::internal(format!(
                    "writing rootfs of {} to {}: {e}",
                    image.reference,
                    req.dest.display()
                ))
            })
        })();
        let _ = reply.send(result);
    });
}
