//! Graded reclaim, applied: the controller (`berth_runtime::reclaim`) decides on the owner
//! from each round of samples; here its steps become `reclaim` events and counters, its
//! knobs are written to the revocable tier's cgroup off the owner (`berth_runtime::tier`),
//! and a revoke kills the cheapest revocable task.
//!
//! The cheapest victim is the revocable task that has run the shortest time (the least
//! work lost); a pod member takes its whole pod with it. A revoked task's exit reads
//! `revoked` and its restart policy does not bring it back; a revoked pod fails with the
//! reason. Guaranteed, burstable and best-effort work is never touched here.

use berth_runtime::reclaim::{Knobs, Outcome};
use berth_runtime::tier::{CappedTask, Tier};

use super::error::ApiError;
use super::events::Event;
use super::node::Node;

/// Applies a round's outcome.
pub fn apply(node: &mut Node, outcome: Outcome) {
    for step in &outcome.steps {
        *node.usage.steps.entry(step.step.to_string()).or_default() += u64::from(step.applied);
        let phase = if step.applied { "applied" } else { "undone" };
        tracing::info!(
            step = step.step,
            phase,
            target = step.target,
            signal = step.signal,
            value = step.value,
            threshold = step.threshold,
            "reclaim"
        );
        let tier = node.settings.revocable_cgroup();
        node.emit(
            Event::new("reclaim", step.step, "revocable", "revocable")
                .with("phase", phase)
                .with("target", format!("{:.0}", step.target))
                .with("signal", step.signal)
                .with("value", format!("{:.2}", step.value))
                .with("threshold", format!("{:.2}", step.threshold))
                .with("cgroup", tier.display()),
        );
    }
    write_knobs(node);
    if outcome.revoke {
        revoke_one(node);
    }
}

/// Whether two knob settings differ enough to write (a CPU cap moves by 10 millicores or
/// more, anything else changes).
fn differs(a: &Knobs, b: &Knobs) -> bool {
    let cap = |k: &Knobs| k.cpu_cap.map(|c| (c / 10.0).round() as i64);
    let high = |k: &Knobs| k.memory_high.map(|m| (m / 1048576.0).round() as i64);
    cap(a) != cap(b) || high(a) != high(b) || a.frozen != b.frozen
}

/// The revocable tasks a CPU cap is split over on v1: running revocable containers with
/// their own limits.
fn capped_tasks(node: &Node) -> Vec<CappedTask> {
    let mut tasks: Vec<CappedTask> = node
        .containers
        .values()
        .filter(|c| c.record().task.revocable && c.exit.borrow().is_none())
        .map(|c| CappedTask {
            cgroup: c.record().cgroup_path.clone(),
            limit: c.record().task.resources.cpus.map(|n| (n * 1000.0) as u64),
        })
        .collect();
    tasks.sort_by(|a, b| a.cgroup.cmp(&b.cgroup));
    tasks
}

/// Writes the controller's knobs to the revocable tier when they (or, while a CPU cap is
/// split over them, the tier's tasks) changed; one write in flight at a time, the next
/// round catches up. The first round after a start always writes: a cap a killed agent
/// left on the tasks is given back.
fn write_knobs(node: &mut Node) {
    let wanted = node.usage.reclaim().knobs();
    let tasks = capped_tasks(node);
    let changed = match &node.usage.written {
        None => true,
        Some((knobs, written_tasks)) => {
            differs(&wanted, knobs) || (wanted.cpu_cap.is_some() && *written_tasks != tasks)
        }
    };
    if node.usage.writing || !changed {
        return;
    }
    node.usage.writing = true;
    let tier = Tier::new(&node.settings.revocable_cgroup());
    node.spawn_blocking(
        "turning the revocable tier's knobs",
        move || {
            let cap = wanted.cpu_cap.map(|c| c.round() as u64);
            tier.set_cpu_cap(cap, &tasks)
                .and_then(|()| tier.set_memory_high(wanted.memory_high.map(|m| m as u64)))
                .and_then(|()| tier.set_frozen(wanted.frozen))
                .map(|()| tasks)
                .map_err(ApiError::internal)
        },
        move |node, result: Result<Vec<CappedTask>, ApiError>| {
            node.usage.writing = false;
            match result {
                Ok(tasks) => node.usage.written = Some((wanted, tasks)),
                Err(e) => {
                    tracing::error!(error = %e.message, "turning the revocable tier's knobs");
                    node.emit(
                        Event::new("reclaim", "error", "revocable", "revocable")
                            .with("message", &e.message),
                    );
                }
            }
        },
    );
}

/// Kills the cheapest running revocable task (its pod, for a pod member).
fn revoke_one(node: &mut Node) {
    let victim = node
        .containers
        .values()
        .filter(|c| {
            let r = c.record();
            r.task.revocable && r.started.is_some() && c.exit.borrow().is_none() && !r.revoked
        })
        // RFC 3339 in UTC sorts by time: the latest start has run the shortest.
        .max_by(|a, b| a.record().started.cmp(&b.record().started))
        .map(|c| (c.record().id.clone(), c.record().task.pod.clone()));
    let Some((id, pod)) = victim else {
        return;
    };
    node.usage.revoked += 1;
    let message = format!(
        "revoked: the node's promised work needs the memory back (reclaim step revoke, tier {})",
        node.settings.revocable_cgroup().display()
    );
    match pod {
        Some(member) => {
            for cid in super::pod::members(node, &member.pod_id) {
                mark_revoked(node, &cid);
            }
            super::evict::take_back(node, &member.pod_id, "revoked", "reclaim", message);
        }
        None => {
            mark_revoked(node, &id);
            let Some(c) = node.containers.get(&id) else {
                return;
            };
            let name = c.record().name.clone();
            let cgroup = c.record().cgroup_path.clone();
            tracing::warn!(container = %name, "revoking");
            node.emit(
                Event::new("container", "revoked", &id, &name)
                    .with("reason", "reclaim")
                    .with("message", &message),
            );
            tokio::task::spawn_blocking(move || {
                if let Err(e) = berth_runtime::cgroups::kill_all(&cgroup) {
                    tracing::error!(error = %e, "revoking a container");
                }
            });
        }
    }
}

/// Records that container `id` was revoked (nobody waits on the write; a failure is
/// journaled and logged).
fn mark_revoked(node: &mut Node, id: &str) {
    match super::lifecycle::revoked(node, id) {
        Ok(written) => written.reported(),
        Err(e) => tracing::error!(id, error = %e.message, "recording a revoke"),
    }
}
