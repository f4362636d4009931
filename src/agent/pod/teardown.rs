//! Tearing a pod down, in reverse order of creation: its containers (on the owner task:
//! they hold no network of their own), then — in a task, so the owner goes on serving
//! while CNI plugins run (each up to its timeout) — the CNI DEL, the pod init, the cgroup,
//! volumes, namespaces and the state dir. The task reports with `Action::PodReleased`;
//! what follows (answer `pod rm`, report a failed start) is carried in [`After`]. The pod
//! is `busy` meanwhile: it cannot be stopped or removed twice.

use nix::sys::signal::Signal;

use super::{members, PodPhase};
use crate::agent::error::ApiError;
use crate::agent::events::Event;
use crate::agent::node::{Action, AfterRemove, Node, Reply};
use crate::api::PodView;

/// What to do once the pod is gone.
#[derive(Debug)]
pub enum After {
    /// `pod rm`: answer the caller.
    Remove {
        /// As the caller named the pod.
        key: String,
        /// The caller.
        reply: Reply<()>,
    },
    /// A start that failed: report it, and answer the `pod run` caller if any.
    Fail {
        /// Why.
        message: String,
        /// The caller.
        reply: Option<Reply<PodView>>,
    },
    /// A pod found half-started at agent start.
    Abandon,
}

/// What a pod being torn down is busy with.
pub const BUSY: &str = "being removed";

/// Starts removing everything of pod `id`: its containers one after the other (each off
/// the owner), then the rest in [`release`].
pub fn start(node: &mut Node, id: &str, after: After) {
    if let Some(pod) = node.pods.get_mut(id) {
        pod.busy = Some(BUSY);
        // Nothing restarts while it goes (restarts happen only while starting or running).
        if matches!(pod.record.phase, PodPhase::Starting | PodPhase::Running) {
            match super::phase::advance(node, id, PodPhase::Stopped, None) {
                // Nobody waits on the write; a failure is journaled and logged.
                Ok(written) => written.reported(),
                Err(e) => {
                    // The removal goes on: it deletes the record this write was for.
                    tracing::error!(pod = %id, error = %e.message, "stopping a pod to remove it");
                }
            }
        }
    }
    // Members still being created (a restart in flight) go first: cancelled, and undone
    // before the pod's cgroup is removed.
    let mut containers: std::collections::VecDeque<String> = node
        .creating
        .iter()
        .filter(|(_, c)| c.pod.as_deref() == Some(id))
        .map(|(cid, _)| cid.clone())
        .collect();
    containers.extend(members(node, id));
    remove_members(node, id.to_string(), containers, true, after);
}

/// Removes the pod's containers one by one; `clean` stays true while each goes cleanly.
fn remove_members(
    node: &mut Node,
    id: String,
    mut containers: std::collections::VecDeque<String>,
    clean: bool,
    after: After,
) {
    let Some(cid) = containers.pop_front() else {
        release(node, &id, clean, after);
        return;
    };
    let next = move |node: &mut Node, result: Result<(), ApiError>| {
        let ok = match result {
            Ok(()) => true,
            // Gone already (a `--rm`, a restart's removal): nothing to do.
            Err(e) if e.is_not_found() => true,
            Err(e) => {
                tracing::error!(error = %e.message, "removing a pod container");
                false
            }
        };
        remove_members(node, id, containers, clean && ok, after);
    };
    if let Some(c) = node.creating.get_mut(&cid) {
        if let Some(cancel) = c.cancel.take() {
            let _ = cancel.send(());
        }
        c.removers.push(AfterRemove::new(next));
        return;
    }
    crate::agent::remove::remove(node, &cid, true, next);
}

/// The pod's containers are gone: the CNI DEL, the pod init, the cgroup, volumes,
/// namespaces and the state dir, in a task.
fn release(node: &mut Node, id: &str, clean: bool, after: After) {
    let Some(pod) = node.pods.get(id) else {
        finish(node, id, clean, after);
        return;
    };
    let init = pod.record.pod_init;
    let cgroup = pod.record.cgroup_path.clone();
    let dir = pod.dir.clone();
    let (settings, tx, pod_id) = (node.settings.clone(), node.tx.clone(), id.to_string());
    let writer = node.writer.clone();
    tokio::spawn(async move {
        // Writes of the record queued before now land before its dir goes.
        writer.flush().await;
        let id = pod_id.clone();
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
            match crate::agent::remove::remove_state_dir(&dir) {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(dir = %dir.display(), error = %e, "removing the pod dir");
                    false
                }
            }
        })
        .await
        .unwrap_or(false);
        let _ = tx
            .send(Action::PodReleased {
                id,
                released,
                clean: clean && released,
                after,
            })
            .await;
    });
}

/// The release task reported: forget the pod (if all of it is gone), then do `after`.
pub fn on_released(node: &mut Node, id: &str, released: bool, clean: bool, after: After) {
    if !released {
        // Kept, so `pod rm` can be tried again.
        if let Some(pod) = node.pods.get_mut(id) {
            pod.busy = None;
        }
    }
    finish(node, id, clean, after);
    if released {
        node.pods.remove(id);
        node.idmaps.release(id);
        node.disk.release(id);
    }
}

fn finish(node: &mut Node, id: &str, clean: bool, after: After) {
    let name = node
        .pods
        .get(id)
        .map(|p| p.record.name.clone())
        .unwrap_or_default();
    match after {
        After::Remove { key, reply } => {
            let answer = if clean {
                node.emit(Event::new("pod", "removed", id, &name));
                Ok(())
            } else {
                Err(ApiError::internal(format!(
                    "pod {key} could not be removed completely; see the agent's log"
                )))
            };
            let _ = reply.send(answer);
        }
        After::Fail { message, reply } => {
            if let Some(reply) = reply {
                let _ = reply.send(Err(ApiError::bad_request(format!(
                    "pod {name} failed to start: {message}"
                ))
                .with_exit_code(125)));
            }
        }
        After::Abandon => {}
    }
}
