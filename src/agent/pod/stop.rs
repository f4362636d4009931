//! `pod stop` (TERM, then KILL after the grace period; nothing restarts afterwards),
//! `pod rm` (containers, pod init, namespaces, volumes, cgroup, state dir) and the
//! tear-down of a pod caught half-started by an agent crash.

use std::time::Duration;

use berth_runtime::state::Status;
use nix::sys::signal::Signal;

use super::{members, PodPhase};
use crate::agent::error::ApiError;
use crate::agent::events::Event;
use crate::agent::node::{Action, Node, Reply};

/// Stops every container; the reply comes once all have exited.
pub fn stop(node: &mut Node, key: &str, timeout: Duration, reply: Reply<()>) {
    let id = match super::resolve(node, key).and_then(|id| {
        refuse_while_setting_up(node, &id, key)?;
        Ok(id)
    }) {
        Ok(id) => id,
        Err(e) => {
            let _ = reply.send(Err(e));
            return;
        }
    };
    let mut waits = Vec::new();
    for cid in members(node, &id) {
        if let Some(c) = node.containers.get(&cid) {
            if c.status() != Status::Stopped {
                let _ = crate::agent::kill::kill(node, &cid, Signal::SIGTERM, false);
            }
        }
        if let Some(c) = node.containers.get(&cid) {
            waits.push((cid, c.exit.subscribe()));
        }
    }
    let name = match node.pods.get_mut(&id) {
        Some(pod) => {
            if matches!(pod.record.phase, PodPhase::Starting | PodPhase::Running) {
                pod.record.phase = PodPhase::Stopped;
                let _ = pod.save();
            }
            pod.record.name.clone()
        }
        None => return,
    };
    node.emit(Event::new("pod", "stopped", &id, &name));
    let tx = node.tx.clone();
    tokio::spawn(async move {
        for (cid, mut exit) in waits {
            let exited = tokio::time::timeout(timeout, async {
                exit.wait_for(|e| e.is_some()).await.is_ok()
            })
            .await;
            if exited.is_err() {
                let (r, rx) = tokio::sync::oneshot::channel();
                let _ = tx
                    .send(Action::Kill {
                        id: cid,
                        signal: Signal::SIGKILL,
                        all: true,
                        reply: r,
                    })
                    .await;
                let _ = rx.await;
                let _ = tokio::time::timeout(Duration::from_secs(10), async {
                    exit.wait_for(|e| e.is_some()).await.is_ok()
                })
                .await;
            }
        }
        let _ = reply.send(Ok(()));
    });
}

/// Removes a pod (`force`: running containers too).
pub async fn remove(node: &mut Node, key: &str, force: bool) -> Result<(), ApiError> {
    let id = super::resolve(node, key)?;
    refuse_while_setting_up(node, &id, key)?;
    let running = members(node, &id).iter().any(|cid| {
        node.containers
            .get(cid)
            .is_some_and(|c| c.status() != Status::Stopped)
    });
    if running && !force {
        return Err(ApiError::conflict(format!(
            "pod {key} has running containers: stop it first, or use -f"
        )));
    }
    let name = node
        .pods
        .get(&id)
        .map(|p| p.record.name.clone())
        .unwrap_or_default();
    if !teardown(node, &id).await {
        return Err(ApiError::internal(format!(
            "pod {key} could not be removed completely; see the agent's log"
        )));
    }
    node.emit(Event::new("pod", "removed", &id, &name));
    Ok(())
}

/// A pod whose sandbox task runs cannot be stopped or removed until it reports (at most
/// the plugins' timeouts): it would tear down what the task is still making.
fn refuse_while_setting_up(node: &Node, id: &str, key: &str) -> Result<(), ApiError> {
    if node.pods.get(id).is_some_and(|p| p.setting_up) {
        return Err(ApiError::conflict(format!(
            "pod {key} is still being set up (namespaces, network); retry once it started or failed"
        )));
    }
    Ok(())
}

/// A pod found half-started at agent start: removed, never left half.
pub async fn abandon(node: &mut Node, id: &str) {
    let name = node
        .pods
        .get(id)
        .map(|p| p.record.name.clone())
        .unwrap_or_default();
    tracing::warn!(pod = %name, "removing a pod the agent was starting when it stopped");
    teardown(node, id).await;
    node.emit(
        Event::new("pod", "failed", id, &name)
            .with("message", "agent stopped while starting the pod"),
    );
}

/// Removes everything of a pod, in reverse order of creation. True when all is gone.
pub async fn teardown(node: &mut Node, id: &str) -> bool {
    if let Some(pod) = node.pods.get_mut(id) {
        // Nothing restarts while it goes.
        pod.record.phase = PodPhase::Stopped;
        let _ = pod.save();
    }
    let mut clean = true;
    for cid in members(node, id) {
        if let Err(e) = crate::agent::remove::remove(node, &cid, true).await {
            tracing::error!(error = %e.message, "removing a pod container");
            clean = false;
        }
    }
    let Some(pod) = node.pods.get(id) else {
        return clean;
    };
    let init = pod.record.pod_init;
    let cgroup = pod.record.cgroup_path.clone();
    let dir = pod.dir.clone();
    let settings = node.settings.clone();
    let pod_id = id.to_string();
    let released = tokio::task::spawn_blocking(move || {
        // Before the namespace goes (plugins clean up inside it); a DEL that fails is
        // retried at the next agent start, from the cache.
        if let Err(e) = crate::agent::network::detach(&settings, &pod_id) {
            tracing::error!(error = %e.message, "cni DEL of a pod");
        }
        if let Some(p) = init.filter(|p| p.is_alive()) {
            // Our own pod init (pid and start time recorded).
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid), Signal::SIGKILL);
        }
        berth_runtime::cgroups::remove_empty_up_to(&cgroup, &cgroup);
        if let Err(e) = berth_runtime::sandbox::release_volumes(&dir.join("volumes")) {
            tracing::error!(error = %e, "unmounting the pod's volumes");
            return false;
        }
        if let Err(e) = berth_runtime::sandbox::release(&dir.join("ns")) {
            tracing::error!(error = %e, "releasing the pod's namespaces");
            return false;
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "removing the pod dir");
                false
            }
        }
    })
    .await
    .unwrap_or(false);
    if released {
        node.pods.remove(id);
    }
    clean && released
}
