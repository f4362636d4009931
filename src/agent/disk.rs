//! Image GC by disk watermarks, as the kubelet does it: when the data root's filesystem is
//! fuller than the high watermark, images no container uses are removed, least recently
//! stored first, with the content only they used, until use falls to the low watermark.
//! Running work keeps its images (and leases keep their layers). Each removal is an event.

use std::collections::HashSet;
use std::path::Path;

use super::events::Event;
use super::node::{Action, Node};

/// Percent of the filesystem in use (as `df` counts it: blocks not free to users).
pub fn used_percent(path: &Path) -> Option<f64> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    let total = s.blocks() as f64;
    let avail = s.blocks_available() as f64;
    let free = s.blocks_free() as f64;
    let used = total - free;
    (used + avail > 0.0).then(|| used * 100.0 / (used + avail))
}

/// Checks the watermarks; removal runs in the blocking pool and reports by events.
pub fn check(node: &mut Node) {
    if node.gc_running {
        return;
    }
    let (high, low) = node.settings.image_gc;
    let root = node.settings.root.clone();
    let Some(used) = used_percent(&root) else {
        return;
    };
    if used < f64::from(high) {
        return;
    }
    let in_use: HashSet<String> = node
        .containers
        .values()
        .map(|c| c.record().image_id.clone())
        .collect();
    node.gc_running = true;
    let store = node.settings.store.clone();
    let tx = node.tx.clone();
    tracing::info!(used, high, low, "disk above the image GC high watermark");
    tokio::spawn(async move {
        let tx2 = tx.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let mut images = store.list_images().unwrap_or_default();
            images.retain(|i| !in_use.contains(&i.config.to_string()));
            images.sort_by_key(|i| i.stored_at);
            for image in images {
                if used_percent(&root).is_some_and(|u| u <= f64::from(low)) {
                    break;
                }
                if let Err(e) = store.remove_images(&image.reference) {
                    tracing::warn!(image = %image.reference, error = %e, "image GC");
                    continue;
                }
                let _ = berth_images::gc::collect(&store);
                let ev = Event::new("image", "deleted", &image.reference, &image.reference)
                    .with("reason", "disk-pressure");
                let _ = tx2.blocking_send(Action::Emit(ev));
            }
        })
        .await;
        let _ = tx.send(Action::GcDone).await;
    });
}
