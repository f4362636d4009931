//! Pods in the agent: co-located containers sharing the sandbox's network, IPC and UTS (and
//! optionally PID) namespaces, one parent cgroup with the pod's totals, pod volumes, init
//! containers, restart policy with back-off. The owner task holds every [`Pod`]; one file
//! per verb: `run` (admission, init containers, start together or roll back), `sandbox`
//! (cgroup, volumes, namespaces, network: off the owner task), `teardown` (the reverse),
//! `restart` (exits, back-off), `stop` (stop, remove, tear down).
//!
//! On disk, per pod (`<root>/pods/<id>/`):
//! - `pod.json`: [`PodRecord`] (versioned, written atomically). Written with phase
//!   `starting` before anything exists on the host, so an agent killed mid-start finds it
//!   and tears the half-made pod down on its next start.
//! - `ns/{net,ipc,uts[,pid]}`: namespace files held by bind mounts.
//! - `volumes/<name>/`: `emptyDir` volumes (mode 0777, as the kubelet makes them).

mod phase;
mod restart;
mod run;
pub mod sandbox;
mod stop;
pub mod teardown;

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_runtime::pod::{PodSpec, QosClass};
use berth_runtime::state::{read_json, ExitRecord, ProcessId};
use serde::{Deserialize, Serialize};

pub use phase::advance;
pub use restart::{on_container_exit, restart_member, resume};
pub use run::create;
pub use stop::{abandon, remove, stop};

use super::error::ApiError;
use super::node::{Node, Reply};
use super::persist::{Subject, Written};
use crate::api::{ContainerView, MemberView, PodView};

/// Queues pod `id`'s record to be written after a change described by `what` (off the
/// owner: [`crate::agent::persist`]); a failure is logged, journaled as a `pod error` event,
/// and the result of the returned [`Written`].
pub fn persist(node: &Node, id: &str, what: &str) -> Result<Written, ApiError> {
    let pod = node.pods.get(id).ok_or_else(|| ApiError::no_such_pod(id))?;
    let subject = Subject {
        kind: "pod",
        id: id.to_string(),
        name: pod.record.name.clone(),
        what: what.to_string(),
    };
    Ok(node
        .writer
        .write(pod.dir.join("pod.json"), &pod.record, subject))
}

/// [`persist`] with nobody waiting: a failure is in the journal and the log.
pub fn save_or_report(node: &Node, id: &str, what: &str) {
    if let Ok(written) = persist(node, id, what) {
        written.reported();
    }
}

pub use berth_api::pod::PodPhase;

/// One container slot of the pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberState {
    /// Current container instance.
    #[serde(default)]
    pub id: Option<String>,
    /// An init container.
    #[serde(default)]
    pub init: bool,
    /// An init container that completed.
    #[serde(default)]
    pub done: bool,
    /// Times restarted.
    #[serde(default)]
    pub restart_count: u32,
    /// How the previous instance ended.
    #[serde(default)]
    pub last_exit: Option<ExitRecord>,
}

/// `pod.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodRecord {
    /// File version.
    pub version: u32,
    /// 64 hex digits.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// As submitted.
    pub spec: PodSpec,
    /// Fixed at admission.
    pub qos: QosClass,
    /// Summed requests: millicpus.
    pub requests_millicpu: u64,
    /// Summed requests: bytes.
    pub requests_memory: u64,
    /// The pod's cgroup.
    pub cgroup_path: PathBuf,
    /// RFC 3339.
    pub created: String,
    /// Phase: changed only by [`phase::advance`].
    pub(in crate::agent::pod) phase: PodPhase,
    /// Why it failed.
    #[serde(default)]
    pub message: Option<String>,
    /// PID 1 of a shared PID namespace.
    #[serde(default)]
    pub pod_init: Option<ProcessId>,
    /// Its CNI attachment (IPs, published ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<berth_runtime::state::NetworkStatus>,
    /// The id range its containers share when it has a user namespace of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idmap: Option<berth_runtime::userns::IdMap>,
    /// Its volumes dir's project id where the data root keeps project quotas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_project: Option<u32>,
    /// The budget of its `emptyDir` volumes (the sum of its containers' limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_limit: Option<u64>,
    /// Slots by container name.
    pub containers: BTreeMap<String, MemberState>,
}

/// A pod as the owner tracks it.
#[derive(Debug)]
pub struct Pod {
    /// On-disk record: changed only by the pod module's moves (`phase.rs` and its kin).
    record: PodRecord,
    /// `<root>/pods/<id>`.
    pub dir: PathBuf,
    /// The `pod run` caller, answered once started or failed.
    pub pending: Option<Reply<PodView>>,
    /// A task is making (`sandbox.rs`) or releasing (`teardown.rs`) its sandbox: what it
    /// is doing, for the refusal of a stop or removal meanwhile.
    pub busy: Option<&'static str>,
}

impl Pod {
    /// Its on-disk record, read-only outside the pod module.
    pub fn record(&self) -> &PodRecord {
        &self.record
    }

    /// Where it is in its life.
    pub fn phase(&self) -> PodPhase {
        self.record.phase
    }
}

/// The API view of a pod.
pub fn info(node: &Node, pod: &Pod) -> PodView {
    let mut containers: Vec<ContainerView> = members(node, &pod.record.id)
        .iter()
        .filter_map(|id| node.containers.get(id))
        .map(|c| node.view(c))
        .collect();
    containers.sort_by(|a, b| a.created.cmp(&b.created));
    let r = &pod.record;
    PodView {
        id: r.id.clone(),
        name: r.name.clone(),
        phase: r.phase,
        message: r.message.clone(),
        qos: r.qos,
        requests_millicpu: r.requests_millicpu,
        requests_memory: r.requests_memory,
        created: r.created.clone(),
        cgroup_path: r.cgroup_path.display().to_string(),
        pod_init_pid: r.pod_init.map(|p| p.pid),
        network: r.network.as_ref().map(|n| n.view()),
        idmap: r.idmap,
        disk: Some(berth_api::stats::DiskUse {
            used: node.disk.used(&r.id),
            limit: r.disk_limit,
            enforcement: crate::agent::disk_budget::enforcement(node).into(),
        }),
        spec: r.spec.clone(),
        members: r
            .containers
            .iter()
            .map(|(name, m)| {
                let view = MemberView {
                    id: m.id.clone(),
                    init: m.init,
                    done: m.done,
                    restart_count: m.restart_count,
                    last_exit: m.last_exit.as_ref().map(|e| e.view()),
                };
                (name.clone(), view)
            })
            .collect(),
        containers,
    }
}

/// Finds a pod by name, id or unique id prefix.
pub fn resolve(node: &Node, key: &str) -> Result<String, ApiError> {
    crate::agent::node::resolve_key(
        "pod",
        key,
        node.pods
            .iter()
            .map(|(id, p)| (id.as_str(), p.record.name.as_str())),
    )
}

/// Ids of the pod's containers.
pub fn members(node: &Node, pod_id: &str) -> Vec<String> {
    node.containers
        .values()
        .filter(|c| {
            c.record()
                .task
                .pod
                .as_ref()
                .is_some_and(|m| m.pod_id == pod_id)
        })
        .map(|c| c.record().id.clone())
        .collect()
}

/// Loads every pod record; corrupt ones are reported and skipped. Returns the ids of pods
/// caught in the middle of starting (to be torn down) and of running pods (to resume).
pub fn recover(node: &mut Node) -> (Vec<String>, Vec<String>) {
    let mut abandoned = Vec::new();
    let mut running = Vec::new();
    let Ok(entries) = std::fs::read_dir(node.settings.pods_dir()) else {
        return (abandoned, running);
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let record: PodRecord = match read_json(&dir.join("pod.json")) {
            Ok(Some(r)) => r,
            Ok(None) => {
                tracing::warn!(dir = %dir.display(), "pod dir without pod.json; skipped");
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "skipping a pod whose state cannot be read");
                continue;
            }
        };
        match record.phase {
            PodPhase::Starting => abandoned.push(record.id.clone()),
            PodPhase::Running => running.push(record.id.clone()),
            _ => {}
        }
        node.pods.insert(
            record.id.clone(),
            Pod {
                record,
                dir,
                pending: None,
                busy: None,
            },
        );
    }
    (abandoned, running)
}
