//! Eviction under memory pressure, the kubelet's last resort: when the node's available
//! memory (`MemAvailable`) falls below `eviction_memory_available`, the agent stops one pod
//! per second that is not guaranteed — best-effort pods first, then burstable pods by how
//! far their memory use exceeds their requests — and marks it failed with the reason. A
//! guaranteed pod is never evicted: its requests were admitted against allocatable memory.

use berth_runtime::pod::QosClass;

use super::events::Event;
use super::node::Node;
use super::pod::{members, PodPhase};

/// `MemAvailable` in bytes.
pub fn memory_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = text
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Memory use of a cgroup in bytes (0 when unreadable).
fn memory_usage(path: &std::path::Path) -> u64 {
    berth_runtime::cgroups::manager(path)
        .ok()
        .and_then(|m| berth_runtime::cgroups::usage(&m, path).ok())
        .map_or(0, |u| u.memory_usage)
}

/// Evicts one pod if the node is under memory pressure.
pub fn check(node: &mut Node) {
    let threshold = node.settings.eviction_memory_available;
    if threshold == 0 {
        return;
    }
    // The last resort: while revocable work runs, graded reclaim (throttle, memory-high,
    // freeze, revoke) takes resources back first; eviction acts only once that is spent.
    if node.usage.revocable_tasks() > 0 && !node.usage.reclaim_exhausted() {
        return;
    }
    let Some(available) = memory_available() else {
        return;
    };
    if available >= threshold {
        return;
    }
    // (qos rank, usage above requests) — higher is evicted first.
    let victim = node
        .pods
        .values()
        .filter(|p| p.phase() == PodPhase::Running && p.record().qos != QosClass::Guaranteed)
        .map(|p| {
            let over =
                memory_usage(&p.record().cgroup_path).saturating_sub(p.record().requests_memory);
            let rank = u8::from(p.record().qos == QosClass::BestEffort);
            ((rank, over), p.record().id.clone())
        })
        .max_by_key(|(key, _)| *key)
        .map(|(_, id)| id);
    let Some(id) = victim else {
        return;
    };
    let message = format!(
        "evicted: the node has {} MiB of memory available, below the {} MiB threshold",
        available >> 20,
        threshold >> 20
    );
    take_back(node, &id, "evicted", "memory-pressure", message);
}

/// Takes pod `id` back from its containers: it is marked failed with `message` (its restart
/// policy ends), every running member is killed (off the owner), and `action` (`evicted`,
/// `revoked`) is journaled for each member and the pod with `reason`.
pub fn take_back(node: &mut Node, id: &str, action: &str, reason: &str, message: String) {
    let id = id.to_string();
    let Some(pod) = node.pods.get_mut(&id) else {
        return;
    };
    tracing::warn!(pod = %pod.record().name, %message, action, "taking a pod back");
    let name = pod.record().name.clone();
    match super::pod::advance(node, &id, PodPhase::Failed, Some(message.clone())) {
        // Nobody waits on the write; a failure is journaled and logged.
        Ok(written) => written.reported(),
        Err(e) => {
            tracing::error!(pod = %name, error = %e.message, "recording a pod taken back");
        }
    }
    for cid in members(node, &id) {
        let Some(c) = node.containers.get(&cid) else {
            continue;
        };
        if c.known_exit().is_some() {
            continue;
        }
        let ev = Event::new("container", action, &cid, &c.record().name)
            .with("pod", &name)
            .with("reason", reason);
        let cgroup = c.record().cgroup_path.clone();
        node.emit(ev);
        // Off the owner: the kill waits for the cgroup to empty.
        tokio::task::spawn_blocking(move || {
            if let Err(e) = berth_runtime::cgroups::kill_all(&cgroup) {
                tracing::error!(error = %e, "killing a container taken back");
            }
        });
    }
    node.emit(
        Event::new("pod", action, &id, &name)
            .with("reason", reason)
            .with("message", message),
    );
}
