//! A container of a pod ended: complete an init step, restart it by the pod's policy after a
//! back-off (`backoff.rs`, the kubelet's numbers: base × 2^restarts, capped; reset after 10
//! minutes of running), or settle the pod's phase when nothing is left to run.

use berth_runtime::pod::RestartPolicy;
use berth_runtime::state::ExitRecord;

use super::PodPhase;
use crate::agent::backoff::{self, Backoff, Restart};
use crate::agent::events::Event;
use crate::agent::node::Node;

/// Called by the owner once a pod container's exit is recorded.
pub fn on_container_exit(node: &mut Node, container_id: &str, exit: &ExitRecord) {
    let Some(c) = node.containers.get(container_id) else {
        return;
    };
    let Some(member) = c.record().task.pod.clone() else {
        return;
    };
    let ran_for = c.record().ran_for(exit);
    let backoff = Backoff::kubelet(
        node.settings.restart_backoff,
        node.settings.restart_backoff_max,
    );
    let Some(pod) = node.pods.get_mut(&member.pod_id) else {
        return;
    };
    let Some(slot) = pod.record.containers.get_mut(&member.container) else {
        return;
    };
    if slot.id.as_deref() != Some(container_id) {
        return;
    }
    slot.last_exit = Some(exit.clone());
    if backoff.resets(ran_for) {
        slot.restart_count = 0;
    }
    if member.init && exit.exit_code == 0 {
        slot.done = true;
    }
    let policy = pod.record.spec.restart_policy;
    let phase = pod.record.phase;
    let pod_id = pod.record.id.clone();
    let what = format!("recording the exit of {}", member.container);
    if member.init {
        if phase != PodPhase::Starting {
            return;
        }
        if exit.exit_code == 0 {
            super::save_or_report(node, &pod_id, &what);
            super::run::advance(node, &pod_id);
        } else if policy == RestartPolicy::Never {
            let msg = format!(
                "init container {} exited with code {}",
                member.container, exit.exit_code
            );
            super::run::fail(node, &pod_id, msg);
        } else {
            super::save_or_report(node, &pod_id, &what);
            schedule(node, &pod_id, &member.container, container_id);
        }
        return;
    }
    if phase != PodPhase::Running {
        super::save_or_report(node, &pod_id, &what);
        return;
    }
    if policy.restarts(exit.exit_code) {
        super::save_or_report(node, &pod_id, &what);
        schedule(node, &pod_id, &member.container, container_id);
        return;
    }
    settle(node, &pod_id);
}

/// A running pod's slots whose container ended while nobody acted on it are handed to the
/// policy: after an agent restart (killed during the back-off), and when the pod reaches
/// `running` (an app container that ended while the others were still starting).
pub fn resume(node: &mut Node, pod_id: &str) {
    let Some(pod) = node.pods.get(pod_id) else {
        return;
    };
    if pod.record.phase != PodPhase::Running {
        return;
    }
    let ended: Vec<(String, ExitRecord)> = pod
        .record
        .containers
        .values()
        .filter(|slot| !slot.init)
        .filter_map(|slot| {
            let c = node.containers.get(slot.id.as_ref()?)?;
            // Only exits the owner already knows; others arrive as supervisor exits, and
            // one still being released reaches the policy when its release is done.
            if c.releasing.is_some() {
                return None;
            }
            let exit = c.exit.borrow().clone()?;
            Some((c.record().id.clone(), exit))
        })
        .collect();
    for (cid, exit) in ended {
        on_container_exit(node, &cid, &exit);
    }
}

/// The pod's phase once no app container will run again.
fn settle(node: &mut Node, pod_id: &str) {
    let Some(pod) = node.pods.get(pod_id) else {
        return;
    };
    let mut all_done = true;
    let mut failed = false;
    for (name, slot) in &pod.record.containers {
        if slot.init {
            continue;
        }
        let exited = slot
            .id
            .as_ref()
            .and_then(|cid| node.containers.get(cid))
            .and_then(|c| c.known_exit());
        match exited {
            Some(e) => failed |= e.exit_code != 0,
            None => {
                tracing::debug!(pod = %pod.record.name, container = %name, "still running");
                all_done = false;
            }
        }
    }
    if !all_done {
        super::save_or_report(node, pod_id, "recording a container's exit");
        return;
    }
    let phase = if failed {
        PodPhase::Failed
    } else {
        PodPhase::Succeeded
    };
    match super::phase::advance(node, pod_id, phase, None) {
        // Nobody waits on the write; a failure is journaled and logged.
        Ok(written) => written.reported(),
        Err(e) => {
            tracing::error!(pod = %pod_id, error = %e.message, "settling the pod's phase");
        }
    }
}

/// Restarts the slot after its back-off.
fn schedule(node: &mut Node, pod_id: &str, name: &str, previous: &str) {
    let Some(pod) = node.pods.get(pod_id) else {
        return;
    };
    let count = pod
        .record
        .containers
        .get(name)
        .map_or(0, |s| s.restart_count);
    let delay = Backoff::kubelet(
        node.settings.restart_backoff,
        node.settings.restart_backoff_max,
    )
    .delay(count);
    tracing::info!(pod = %pod.record.name, container = name, ?delay, "restarting after back-off");
    let ev = Event::new(
        "container",
        "backoff",
        previous,
        &format!("{}_{name}", pod.record.name),
    )
    .with("pod", &pod.record.name);
    let what = Restart::Member {
        pod: pod_id.to_string(),
        name: name.to_string(),
        previous: previous.to_string(),
    };
    backoff::schedule(node, what, delay, ev);
}

/// Replaces the ended instance of a slot with a new one (unless the pod moved on): the old
/// one is removed, then the new one created and started, each off the owner.
pub fn restart_member(node: &mut Node, pod_id: &str, name: &str, previous: &str) {
    let Some(pod) = node.pods.get(pod_id) else {
        return;
    };
    if !matches!(pod.record.phase, PodPhase::Starting | PodPhase::Running) {
        return;
    }
    if pod
        .record
        .containers
        .get(name)
        .and_then(|s| s.id.as_deref())
        != Some(previous)
    {
        return;
    }
    let (pod_id, name) = (pod_id.to_string(), name.to_string());
    if node.containers.contains_key(previous) {
        crate::agent::remove::remove(node, previous, true, move |node, result| match result {
            Ok(()) => replace_member(node, &pod_id, &name),
            Err(e) => tracing::error!(error = %e.message, "removing the ended instance"),
        });
    } else {
        replace_member(node, &pod_id, &name);
    }
}

/// The slot's ended instance is gone: a new one, counted as a restart.
fn replace_member(node: &mut Node, pod_id: &str, name: &str) {
    let Some(pod) = node.pods.get_mut(pod_id) else {
        return;
    };
    if !matches!(pod.record.phase, PodPhase::Starting | PodPhase::Running) {
        return;
    }
    let pod_name = pod.record.name.clone();
    let count = match pod.record.containers.get_mut(name) {
        Some(slot) => {
            slot.restart_count += 1;
            slot.id = None;
            slot.restart_count
        }
        None => return,
    };
    let (pod_id, name) = (pod_id.to_string(), name.to_string());
    super::run::create_member(
        node,
        &pod_id.clone(),
        &name.clone(),
        true,
        move |node, r| match r {
            Ok(cid) => {
                let ev = Event::new(
                    "container",
                    "restarted",
                    &cid,
                    &format!("{pod_name}_{name}"),
                )
                .with("pod", &pod_name)
                .with("restartCount", count);
                node.emit(ev);
            }
            Err(e) => {
                tracing::error!(pod = %pod_name, container = name, error = %e.message, "restart failed");
                if let Some(pod) = node.pods.get_mut(&pod_id) {
                    pod.record.message = Some(format!("restarting {name}: {}", e.message));
                }
                super::save_or_report(node, &pod_id, "recording a failed restart");
            }
        },
    );
}
