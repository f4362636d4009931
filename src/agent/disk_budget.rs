//! Disk budgets per task (`--storage-opt size=`, a pod container's `ephemeral-storage`).
//!
//! A container's budget covers its dir: the writable layer (overlayfs upper and work
//! dirs), its logs and Berth's few files; a pod's `emptyDir` volumes have a budget of
//! their own, the sum of its containers' limits (the kubelet's pod-level limit).
//!
//! Where the data root's file system keeps project quotas, every task dir is a project of
//! its own (the id in its record; projects are handed out here like the id ranges, and
//! rebuilt from the records on recovery) with the budget as its hard limit: the kernel
//! refuses writes past it with EDQUOT, and use is the project's counter. Elsewhere use is
//! measured by walking the task dirs every `disk_check_interval` (10 s: the kubelet walks
//! every minute) in the blocking pool, never on the owner, one walk at a time; a running
//! task over its budget is evicted with the reason `disk-limit` (a pod member takes its
//! pod with it, as the kubelet evicts pods).

use std::collections::HashMap;
use std::path::PathBuf;

use berth_api::node::{NodeDiskView, TaskDiskView};
use berth_api::stats::DiskUse;

use super::events::Event;
use super::node::Node;

/// Project ids handed out: clear of the small ids administrators use by hand.
const FIRST_PROJECT: u32 = 1_000_000;

/// Projects held and the last measurements.
#[derive(Debug, Default)]
pub struct DiskBudgets {
    projects: super::slots::Slots,
    used: HashMap<String, u64>,
    measuring: bool,
}

impl DiskBudgets {
    /// A project for `owner` (a container or pod id): the one it holds, else a free one
    /// (four billion of them: never all held).
    pub fn allocate(&mut self, owner: &str) -> u32 {
        self.projects
            .take(owner, FIRST_PROJECT..u32::MAX)
            .unwrap_or(u32::MAX)
    }

    /// Recovery: `owner` holds `project`.
    pub fn hold(&mut self, owner: &str, project: u32) {
        if let Some(other) = self.projects.hold(project, owner) {
            tracing::error!(project, owner, other, "two tasks recorded the same project");
        }
    }

    /// `owner` is gone.
    pub fn release(&mut self, owner: &str) {
        self.projects.release(owner);
        self.used.remove(owner);
    }

    /// Last measured use of `owner`.
    pub fn used(&self, owner: &str) -> u64 {
        self.used.get(owner).copied().unwrap_or(0)
    }
}

/// `project-quota` or `measured`.
pub fn enforcement(node: &Node) -> &'static str {
    if node.settings.quotas.is_some() {
        "project-quota"
    } else {
        "measured"
    }
}

/// What one measurement looks at.
struct Subject {
    owner: String,
    dirs: Vec<PathBuf>,
    project: Option<u32>,
}

/// On the tick: starts a measurement every `disk_check_interval`.
pub fn check(node: &mut Node) {
    let every = node.settings.disk_check_interval.as_secs().max(1);
    if node.disk.measuring || node.ticks % every != 0 {
        return;
    }
    let mut subjects: Vec<Subject> = node
        .containers
        .iter()
        .map(|(id, c)| Subject {
            owner: id.clone(),
            dirs: vec![node.container_dir(id)],
            project: c.record().disk_project,
        })
        .collect();
    subjects.extend(node.pods.iter().map(|(id, p)| Subject {
        owner: id.clone(),
        dirs: vec![p.dir.join("volumes")],
        project: p.record().disk_project,
    }));
    node.disk.measuring = true;
    let quotas = node.settings.quotas.clone();
    node.spawn_blocking(
        "measuring disk use",
        move || {
            Ok(subjects
                .into_iter()
                .map(|s| {
                    let used = match (&quotas, s.project) {
                        (Some(q), Some(p)) => q.usage(p).unwrap_or(0),
                        _ => berth_runtime::quota::measure(&s.dirs),
                    };
                    (s.owner, used)
                })
                .collect::<Vec<_>>())
        },
        |node, measured: Result<Vec<(String, u64)>, super::error::ApiError>| {
            node.disk.measuring = false;
            if let Ok(list) = measured {
                node.disk.used = list.into_iter().collect();
                enforce(node);
            }
        },
    );
}

/// Without quotas: evicts every running task over its budget.
fn enforce(node: &mut Node) {
    if node.settings.quotas.is_some() {
        return;
    }
    let over: Vec<(String, Option<String>, u64, u64)> = node
        .containers
        .iter()
        .filter(|(_, c)| c.exit.borrow().is_none() && c.record().evicted.is_none())
        .filter_map(|(id, c)| {
            let limit = u64::try_from(c.record().task.storage_size?).ok()?;
            let used = node.disk.used(id);
            (used > limit).then(|| {
                let pod = c.record().task.pod.as_ref().map(|m| m.pod_id.clone());
                (id.clone(), pod, used, limit)
            })
        })
        .collect();
    let mut pods_over: Vec<(String, u64, u64)> = node
        .pods
        .iter()
        .filter(|(_, p)| p.phase() == super::pod::PodPhase::Running)
        .filter_map(|(id, p)| {
            let limit = p.record().disk_limit?;
            let used = node.disk.used(id);
            (used > limit).then(|| (id.clone(), used, limit))
        })
        .collect();
    for (id, pod, used, limit) in over {
        let message = format!(
            "evicted: its writable layer and logs use {} bytes, over its disk budget of {limit} bytes",
            used
        );
        match pod {
            Some(pod_id) => pods_over.push((pod_id, used, limit)),
            None => evict_container(node, &id, message),
        }
    }
    // One take-back per pod, however many of its parts are over (dedup needs them adjacent).
    pods_over.sort_by(|a, b| a.0.cmp(&b.0));
    pods_over.dedup_by(|a, b| a.0 == b.0);
    for (pod_id, used, limit) in pods_over {
        for cid in super::pod::members(node, &pod_id) {
            mark(node, &cid);
        }
        let message = format!(
            "evicted: it uses {used} bytes of disk, over its budget of {limit} bytes (ephemeral-storage)"
        );
        super::evict::take_back(node, &pod_id, "evicted", "disk-limit", message);
    }
}

fn mark(node: &mut Node, id: &str) {
    match super::lifecycle::evicted(node, id, "disk-limit") {
        Ok(written) => written.reported(),
        Err(e) => tracing::error!(id, error = %e.message, "recording an eviction"),
    }
}

fn evict_container(node: &mut Node, id: &str, message: String) {
    mark(node, id);
    let Some(c) = node.containers.get(id) else {
        return;
    };
    let name = c.record().name.clone();
    let cgroup = c.record().cgroup_path.clone();
    tracing::warn!(container = %name, %message, "evicting");
    node.emit(
        Event::new("container", "evicted", id, &name)
            .with("reason", "disk-limit")
            .with("message", &message),
    );
    tokio::task::spawn_blocking(move || {
        if let Err(e) = berth_runtime::cgroups::kill_all(&cgroup) {
            tracing::error!(error = %e, "evicting a container");
        }
    });
}

/// A container's disk use for its view.
pub fn container_use(node: &Node, id: &str, storage_size: Option<i64>) -> DiskUse {
    DiskUse {
        used: node.disk.used(id),
        limit: storage_size.and_then(|b| u64::try_from(b).ok()),
        enforcement: enforcement(node).into(),
    }
}

/// `berth node`'s disk section.
pub fn node_view(node: &Node) -> NodeDiskView {
    let mut tasks: Vec<TaskDiskView> = node
        .containers
        .iter()
        .map(|(id, c)| TaskDiskView {
            kind: "container".into(),
            id: id.clone(),
            name: c.record().name.clone(),
            used: node.disk.used(id),
            limit: c
                .record()
                .task
                .storage_size
                .and_then(|b| u64::try_from(b).ok()),
        })
        .chain(node.pods.iter().map(|(id, p)| TaskDiskView {
            kind: "pod".into(),
            id: id.clone(),
            name: p.record().name.clone(),
            used: node.disk.used(id),
            limit: p.record().disk_limit,
        }))
        .collect();
    tasks.sort_by(|a, b| b.used.cmp(&a.used).then(a.name.cmp(&b.name)));
    NodeDiskView {
        enforcement: enforcement(node).into(),
        quota_unavailable: node.settings.quota_unavailable.clone(),
        interval_secs: node.settings.disk_check_interval.as_secs_f64(),
        tasks,
    }
}

/// Recovery: the projects recorded are held again.
pub fn hold_recorded(node: &mut Node) {
    let held: Vec<(String, u32)> = node
        .containers
        .iter()
        .filter_map(|(id, c)| Some((id.clone(), c.record().disk_project?)))
        .chain(
            node.pods
                .iter()
                .filter_map(|(id, p)| Some((id.clone(), p.record().disk_project?))),
        )
        .collect();
    for (owner, project) in held {
        node.disk.hold(&owner, project);
    }
}
