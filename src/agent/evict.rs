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
    let Some(pod) = node.pods.get_mut(&id) else {
        return;
    };
    tracing::warn!(pod = %pod.record().name, %message, "evicting");
    let name = pod.record().name.clone();
    match super::pod::advance(node, &id, PodPhase::Failed, Some(message.clone())) {
        // Nobody waits on the write; a failure is journaled and logged.
        Ok(written) => written.reported(),
        Err(e) => {
            tracing::error!(pod = %name, error = %e.message, "recording an eviction");
        }
    }
    for cid in members(node, &id) {
        let Some(c) = node.containers.get(&cid) else {
            continue;
        };
        if c.known_exit().is_some() {
            continue;
        }
        let ev = Event::new("container", "evicted", &cid, &c.record().name)
            .with("pod", &name)
            .with("reason", "memory-pressure");
        let cgroup = c.record().cgroup_path.clone();
        node.emit(ev);
        // Off the owner: the kill waits for the cgroup to empty.
        tokio::task::spawn_blocking(move || {
            if let Err(e) = berth_runtime::cgroups::kill_all(&cgroup) {
                tracing::error!(error = %e, "evicting a container");
            }
        });
    }
    node.emit(
        Event::new("pod", "evicted", &id, &name)
            .with("reason", "memory-pressure")
            .with("message", message),
    );
}
