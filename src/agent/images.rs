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
use crate::api::{ImportQuery, ProgressLine, PullRequest, RemoveImageRequest, RemoveImageResponse};

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

pub fn pull(node: &Node, req: PullRequest, lines: mpsc::Sender<ProgressLine>) {
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
            let progress: Arc<dyn Progress> = Arc::new(Forward(lines.clone()));
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
                ProgressLine::Image(Box::new(record))
            }
            Err(e) => ProgressLine::Error(e),
        };
        let _ = lines.send(last).await;
    });
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
                    let _ = lines.send(ProgressLine::Image(Box::new(r))).await;
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
    let images = store
        .find_images(name)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if images.is_empty() {
        return Err(ApiError::not_found(format!("no such image: {name}")));
    }
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
            "Record": image,
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
            let matched = store
                .find_images(&req.name)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            if matched.is_empty() {
                return Err(ApiError::not_found(format!("no such image: {}", req.name)));
            }
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

pub fn prune(node: &Node, reply: Reply<berth_images::gc::GcReport>) {
    let store = node.settings.store.clone();
    tokio::task::spawn_blocking(move || {
        let _ = reply.send(berth_images::gc::collect(&store).map_err(ApiError::internal));
    });
}

pub fn rootfs(node: &Node, req: crate::api::RootfsRequest, reply: Reply<()>) {
    let store = node.settings.store.clone();
    tokio::task::spawn_blocking(move || {
        let result = (|| {
            let image = store
                .find_images(&req.image)
                .map_err(|e| ApiError::bad_request(e.to_string()))?
                .pop()
                .ok_or_else(|| ApiError::not_found(format!("no such image: {}", req.image)))?;
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
            berth_images::unpack::flatten::flatten(&layers, &req.dest).map_err(|e| {
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
