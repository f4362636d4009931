//! Making a pod's sandbox off the owner task: the pod cgroup with the pod's totals,
//! `emptyDir` volumes, the namespaces (`berth shim sandbox`) and the CNI attachment. A
//! plugin may take up to its timeout, and the owner must go on serving meanwhile: the work
//! runs in a task of its own and reports with `Action::SandboxReady`; the pod is marked
//! `busy` until then, so nothing else tears it down under the task's feet.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use berth_runtime::cgroups::ParentLimits;
use berth_runtime::pod::{PodPlan, QosClass};
use berth_runtime::state::{NetworkStatus, ProcessId};
use berth_runtime::task::NetworkMode;

use crate::agent::error::ApiError;
use crate::agent::events::Event;
use crate::agent::network::AttachRequest;
use crate::agent::node::{Action, Node};
use crate::agent::persist::Written;
use crate::agent::Settings;

/// What the sandbox task made (also when it failed part-way, so teardown finds it all).
#[derive(Debug, Default)]
pub struct SandboxMade {
    /// Pod init of a shared PID namespace.
    pub pod_init: Option<ProcessId>,
    /// The CNI attachment.
    pub network: Option<NetworkStatus>,
}

/// Everything the task needs, taken from the owner's state up front.
#[derive(Debug)]
struct Inputs {
    cgroup: PathBuf,
    limits: ParentLimits,
    dir: PathBuf,
    /// (name, Some(size) for a Memory volume's tmpfs | None for a plain dir)
    volumes: Vec<(String, Option<Option<i64>>)>,
    hostname: String,
    share_pid: bool,
    host_network: bool,
    attach: Option<AttachRequest>,
    idmap: Option<berth_runtime::userns::IdMap>,
    /// The volumes dir's project and its budget.
    disk: Option<(u32, u64)>,
}

/// Starts making the sandbox of pod `id`.
pub fn start(node: &mut Node, id: &str, plan: &PodPlan, recorded: Written) {
    let Some(pod) = node.pods.get_mut(id) else {
        recorded.reported();
        return;
    };
    pod.busy = Some("still being set up (namespaces, network)");
    let network = crate::agent::network::resolve(&node.settings, &plan.network);
    let mut volumes = Vec::new();
    for v in &pod.record.spec.volumes {
        let Some(e) = &v.empty_dir else {
            continue;
        };
        let memory = e.medium.as_deref() == Some("Memory");
        let size = e
            .size_limit
            .as_ref()
            .and_then(|q| berth_runtime::pod::parse_memory("sizeLimit", q).ok());
        volumes.push((v.name.clone(), memory.then_some(size)));
    }
    let inputs = Inputs {
        cgroup: pod.record.cgroup_path.clone(),
        limits: ParentLimits {
            cpu_shares: Some(if plan.qos == QosClass::BestEffort {
                2
            } else {
                (plan.requests.0 * 1024 / 1000).max(2)
            }),
            cpus: plan.limits.0,
            memory: plan.limits.1,
        },
        dir: pod.dir.clone(),
        volumes,
        hostname: pod
            .record
            .spec
            .hostname
            .clone()
            .unwrap_or_else(|| pod.record.name.clone()),
        share_pid: pod.record.spec.share_process_namespace,
        host_network: network == NetworkMode::Host,
        idmap: pod.record.idmap,
        disk: pod
            .record
            .disk_project
            .map(|p| (p, pod.record.disk_limit.unwrap_or(0))),
        attach: network.cni().map(|name| AttachRequest {
            id: id.to_string(),
            name: pod.record.name.clone(),
            network: name.to_string(),
            netns: pod.dir.join("ns").join("net"),
            ports: plan.ports.clone(),
        }),
    };
    let (settings, tx, pod_id) = (node.settings.clone(), node.tx.clone(), id.to_string());
    tokio::spawn(async move {
        let mut made = SandboxMade::default();
        // Nothing is made on the host before the pod's record is on disk.
        let error = match recorded.result().await {
            Ok(()) => make(settings, inputs, &mut made).await.err(),
            Err(e) => Some(e),
        };
        let _ = tx
            .send(Action::SandboxReady {
                pod: pod_id,
                made,
                error,
            })
            .await;
    });
}

async fn make(
    settings: Arc<Settings>,
    inputs: Inputs,
    made: &mut SandboxMade,
) -> Result<(), ApiError> {
    let (cgroup, limits, dir, volumes, idmap, disk) = (
        inputs.cgroup,
        inputs.limits,
        inputs.dir.clone(),
        inputs.volumes,
        inputs.idmap,
        inputs.disk,
    );
    let quotas = settings.quotas.clone();
    tokio::task::spawn_blocking(move || -> Result<(), ApiError> {
        berth_runtime::cgroups::ensure_parent(&cgroup, &limits).map_err(ApiError::internal)?;
        if let (Some(q), Some((project, limit))) = (&quotas, disk) {
            // The volumes dir is the pod's project: its emptyDirs inherit it.
            let volumes = dir.join("volumes");
            std::fs::create_dir_all(&volumes)
                .map_err(|e| ApiError::internal(format!("creating {}: {e}", volumes.display())))?;
            q.assign(&volumes, project)
                .and_then(|()| q.set_limit(project, limit))
                .map_err(ApiError::internal)?;
        }
        for (name, memory) in volumes {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.join("volumes").join(name);
            match memory {
                Some(size) => berth_runtime::sandbox::mount_memory_volume(&path, size)
                    .map_err(ApiError::internal)?,
                None => std::fs::create_dir_all(&path)
                    .and_then(|()| {
                        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
                    })
                    .map_err(|e| ApiError::internal(format!("creating {}: {e}", path.display())))?,
            }
            if let Some(map) = &idmap {
                // The pod's root owns its volumes, as Kubernetes gives them to its fsGroup.
                berth_runtime::userns::chown_to_root(&path, map).map_err(ApiError::internal)?;
            }
        }
        Ok(())
    })
    .await
    .map_err(ApiError::internal)??;

    let mut cmd = tokio::process::Command::new(&settings.exe);
    cmd.arg("shim")
        .arg("sandbox")
        .arg("--dir")
        .arg(inputs.dir.join("ns"))
        .arg("--hostname")
        .arg(&inputs.hostname);
    if inputs.share_pid {
        cmd.arg("--share-pid")
            .arg("--monitor")
            .arg(&settings.monitor);
    }
    if inputs.host_network {
        cmd.arg("--host-network");
    }
    if let Some(map) = &inputs.idmap {
        cmd.arg("--userns")
            .arg(crate::agent::network::userns_arg(map));
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(false);
    let (mut child, ready) = crate::agent::create::start_and_read_ready(cmd, None).await?;
    let _ = child.wait().await;
    if ready.pid > 0 {
        made.pod_init = ProcessId::of(ready.pid);
    }
    if let Some(e) = ready.error {
        return Err(ApiError::internal(e));
    }
    if let Some(req) = inputs.attach {
        let s = settings.clone();
        let status = tokio::task::spawn_blocking(move || crate::agent::network::attach(&s, &req))
            .await
            .map_err(ApiError::internal)??;
        made.network = Some(status);
    }
    Ok(())
}

/// The sandbox task reported: record what it made, then run the pod (or tear it down).
pub fn on_ready(node: &mut Node, id: &str, made: SandboxMade, error: Option<ApiError>) {
    let Some(pod) = node.pods.get_mut(id) else {
        return;
    };
    pod.busy = None;
    pod.record.pod_init = made.pod_init;
    pod.record.network = made.network;
    let name = pod.record.name.clone();
    let qos = pod.record.qos;
    // What was made is recorded (for recovery to undo) before the pod goes on.
    let written = match super::persist(node, id, "recording the pod's sandbox") {
        Ok(w) => w,
        Err(e) => {
            tracing::debug!(pod = %name, error = %e.message, "gone meanwhile");
            return;
        }
    };
    let id = id.to_string();
    node.spawn(
        "recording a pod's sandbox",
        written.result(),
        move |node, saved| match error.or(saved.err()) {
            Some(e) => super::run::fail(node, &id, e.message),
            None => {
                node.emit(Event::new("pod", "created", &id, &name).with("qos", qos));
                super::run::advance(node, &id);
            }
        },
    );
}
