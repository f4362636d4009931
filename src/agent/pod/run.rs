//! `pod run`: check and admit, record the pod as starting, have its cgroup, volumes,
//! namespaces and network made (`sandbox.rs`), run the init containers one by one (each to a zero exit), then create every app
//! container and start them together. Any failure tears the whole pod down.

use std::collections::BTreeMap;
use std::path::Path;

use berth_runtime::pod::{PodMember, PodPlan, PodSpec, QosClass};
use berth_runtime::state::STATE_VERSION;
use berth_runtime::task::TaskSpec;

use super::{MemberState, Pod, PodPhase, PodRecord};
use crate::agent::error::ApiError;
use crate::agent::node::{Node, Reply};
use crate::api::PodView;

/// The plan of a pod; `emptyDir` volumes live in its dir.
pub fn plan_of(spec: &PodSpec, dir: &Path) -> Result<PodPlan, ApiError> {
    let volumes = dir.join("volumes");
    berth_runtime::pod::plan(spec, &|name| volumes.join(name))
        .map_err(|e| ApiError::bad_request(e.to_string()).with_exit_code(125))
}

/// Starts a pod; `reply` is answered when its containers run (or it failed).
pub fn create(node: &mut Node, spec: PodSpec, reply: Reply<PodView>) {
    match admit(node, spec) {
        Ok(id) => {
            if let Some(pod) = node.pods.get_mut(&id) {
                pod.pending = Some(reply);
            }
        }
        Err(e) => {
            let _ = reply.send(Err(e));
        }
    }
}

/// Checks and admits; the pod is recorded as starting and its sandbox is being made.
fn admit(node: &mut Node, spec: PodSpec) -> Result<String, ApiError> {
    let members = spec.init_containers.len() + spec.containers.len();
    let max = node.settings.max_pod_containers;
    if members > max {
        return Err(ApiError::bad_request(format!(
            "invalid pod spec: {members} containers (init and app), more than the {max} allowed (max_pod_containers)"
        )));
    }
    let id = crate::agent::create::new_id()?;
    let dir = node.settings.pods_dir().join(&id);
    let plan = plan_of(&spec, &dir)?;
    if node.pods.values().any(|p| p.record.name == spec.name) {
        return Err(ApiError::name_in_use("pod", &spec.name));
    }
    for (kind, list) in [
        ("initContainers", &spec.init_containers),
        ("containers", &spec.containers),
    ] {
        for (i, c) in list.iter().enumerate() {
            crate::agent::images::find(&node.settings.store, &c.image)
                .map_err(|e| e.in_field(&format!("{kind}[{i}].image")))?;
        }
    }
    check_fits(node, &spec, &plan)?;
    crate::agent::network::check_ports_free(node, &plan.ports)?;

    let cgroup_path = node.settings.qos_cgroup(plan.qos).join(&id);
    let mut containers = BTreeMap::new();
    for (name, _) in &plan.init {
        containers.insert(
            name.clone(),
            MemberState {
                init: true,
                ..MemberState::default()
            },
        );
    }
    for (name, _) in &plan.containers {
        containers.insert(name.clone(), MemberState::default());
    }
    // `hostUsers: false` (or the agent's default): one range for all its containers.
    let userns = match spec.host_users {
        Some(true) => berth_runtime::userns::UsernsMode::Host,
        Some(false) => berth_runtime::userns::UsernsMode::Auto,
        None => node.settings.userns_default,
    };
    let idmap = match userns {
        berth_runtime::userns::UsernsMode::Host => None,
        berth_runtime::userns::UsernsMode::Auto => Some(crate::agent::idmap::allocate(node, &id)?),
    };
    let disk_project = node
        .settings
        .quotas
        .is_some()
        .then(|| node.disk.allocate(&id));
    let record = PodRecord {
        version: STATE_VERSION,
        disk_project,
        disk_limit: plan.disk_limit.and_then(|b| u64::try_from(b).ok()),
        id: id.clone(),
        name: spec.name.clone(),
        qos: plan.qos,
        requests_millicpu: plan.requests.0,
        requests_memory: plan.requests.1,
        cgroup_path: cgroup_path.clone(),
        created: berth_runtime::state::now(),
        phase: PodPhase::Starting,
        message: None,
        pod_init: None,
        network: None,
        idmap,
        containers,
        spec,
    };
    let made = std::fs::create_dir_all(&dir).and_then(|()| match &idmap {
        Some(map) => crate::agent::idmap::gate(&dir, map),
        None => Ok(()),
    });
    if let Err(e) = made {
        node.idmaps.release(&id);
        node.disk.release(&id);
        return Err(ApiError::internal(format!(
            "creating {}: {e}",
            dir.display()
        )));
    }
    let pod = Pod {
        record,
        dir: dir.clone(),
        pending: None,
        busy: None,
    };
    node.pods.insert(id.clone(), pod);
    // Recorded before anything exists on the host (the sandbox task waits for the write):
    // a crash from here on is cleaned up; a failed write fails the pod.
    let recorded = super::persist(node, &id, "recording a new pod")?;
    // Cgroup, volumes, namespaces and the CNI ADD are made off the owner task (plugins
    // may take up to their timeout); the owner goes on with `SandboxReady`.
    super::sandbox::start(node, &id, &plan, recorded);
    Ok(id)
}

/// Refuses guaranteed and burstable pods whose requests do not fit what is left of the
/// node's allocatable resources (capacity minus the system reserve).
fn check_fits(node: &Node, spec: &PodSpec, plan: &PodPlan) -> Result<(), ApiError> {
    if let Some(cpus) = &spec.cpuset_cpus {
        let set = berth_runtime::task::parse_cpuset("cpusetCpus", cpus)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        crate::agent::check_cpuset(&node.settings, "invalid pod spec: cpusetCpus", &set)?;
    }
    match plan.qos {
        QosClass::BestEffort => return Ok(()),
        // Revocable work is admitted against the measured slack, not allocatable.
        QosClass::Revocable => {
            return crate::agent::usage::admit_revocable(
                node,
                "the pod",
                plan.requests.0 as f64,
                plan.requests.1 as f64,
            )
        }
        QosClass::Guaranteed | QosClass::Burstable => {}
    }
    let (cpu_alloc, mem_alloc) = node.settings.allocatable();
    let (mut cpu_used, mut mem_used) = (0u64, 0u64);
    for p in node.pods.values() {
        if p.record.qos == QosClass::Revocable {
            continue;
        }
        if matches!(p.record.phase, PodPhase::Starting | PodPhase::Running) {
            cpu_used += p.record.requests_millicpu;
            mem_used += p.record.requests_memory;
        }
    }
    let (cpu, mem) = plan.requests;
    if cpu_used + cpu > cpu_alloc {
        return Err(ApiError::insufficient(format!(
            "insufficient cpu: the pod requests {}m, {}m of {}m allocatable are free",
            cpu,
            cpu_alloc.saturating_sub(cpu_used),
            cpu_alloc
        )));
    }
    if mem_used + mem > mem_alloc {
        return Err(ApiError::insufficient(format!(
            "insufficient memory: the pod requests {} bytes, {} of {} allocatable are free",
            mem,
            mem_alloc.saturating_sub(mem_used),
            mem_alloc
        )));
    }
    Ok(())
}

/// The task of one slot, with its pod membership.
pub fn member_task(pod: &Pod, name: &str) -> Result<TaskSpec, ApiError> {
    let plan = plan_of(&pod.record.spec, &pod.dir)?;
    let init = plan.init.iter().any(|(n, _)| n == name);
    let (_, mut task) = plan
        .init
        .into_iter()
        .chain(plan.containers)
        .find(|(n, _)| n == name)
        .ok_or_else(|| ApiError::internal(format!("no container {name} in the pod")))?;
    let slot = pod.record.containers.get(name).cloned().unwrap_or_default();
    task.hostname = Some(
        pod.record
            .spec
            .hostname
            .clone()
            .unwrap_or_else(|| pod.record.name.clone()),
    );
    task.pod = Some(PodMember {
        pod_id: pod.record.id.clone(),
        pod_name: pod.record.name.clone(),
        container: name.to_string(),
        namespaces: pod.dir.join("ns"),
        share_pid: pod.record.spec.share_process_namespace,
        cgroup_parent: pod.record.cgroup_path.clone(),
        init,
        restart_count: slot.restart_count,
        idmap: pod.record.idmap,
    });
    Ok(task)
}

/// Creates (and with `start`, starts) the container of one slot; `then` gets its id.
pub fn create_member(
    node: &mut Node,
    pod_id: &str,
    name: &str,
    start: bool,
    then: impl FnOnce(&mut Node, Result<String, ApiError>) + Send + 'static,
) {
    let task = match node
        .pods
        .get(pod_id)
        .ok_or_else(|| ApiError::no_such_pod(pod_id))
        .and_then(|pod| member_task(pod, name))
    {
        Ok(t) => t,
        Err(e) => {
            then(node, Err(e));
            return;
        }
    };
    let (pod_id, name) = (pod_id.to_string(), name.to_string());
    crate::agent::create::create(node, task, None, move |node, created| {
        let cid = match created {
            Ok(c) => c.id,
            Err(e) => {
                then(node, Err(e));
                return;
            }
        };
        let Some(pod) = node.pods.get_mut(&pod_id) else {
            // The pod went meanwhile: so does its new member.
            crate::agent::remove::remove(node, &cid, true, |_, _| {});
            then(node, Err(ApiError::no_such_pod(&pod_id)));
            return;
        };
        if let Some(slot) = pod.record.containers.get_mut(&name) {
            slot.id = Some(cid.clone());
        }
        // The slot names its container on disk before the container starts.
        let written = match super::persist(node, &pod_id, "recording a new member") {
            Ok(w) => w,
            Err(e) => {
                then(node, Err(e));
                return;
            }
        };
        node.spawn(
            "recording a pod member",
            written.result(),
            move |node, written| {
                if let Err(e) = written {
                    then(node, Err(e));
                    return;
                }
                // Stopped meanwhile: kept in its slot (`pod rm` removes it), not started.
                let live = node.pods.get(&pod_id).is_some_and(|p| {
                    matches!(p.record.phase, PodPhase::Starting | PodPhase::Running)
                });
                if !live {
                    then(
                        node,
                        Err(ApiError::conflict(format!("pod {pod_id} was stopped"))),
                    );
                    return;
                }
                if !start {
                    then(node, Ok(cid));
                    return;
                }
                crate::agent::start::start_created(node, &cid.clone(), move |node, started| {
                    then(node, started.map(|_| cid))
                });
            },
        );
    });
}

/// Moves a starting pod on: the next init container, or every app container (all created,
/// then all started).
pub fn advance(node: &mut Node, id: &str) {
    let Some(pod) = node.pods.get(id) else {
        return;
    };
    if pod.record.phase != PodPhase::Starting {
        return;
    }
    let next_init = pod
        .record
        .spec
        .init_containers
        .iter()
        .map(|c| c.name.clone())
        .find(|n| !pod.record.containers.get(n).is_some_and(|s| s.done));
    if let Some(name) = next_init {
        let running = pod
            .record
            .containers
            .get(&name)
            .and_then(|s| s.id.clone())
            .is_some_and(|cid| {
                node.containers
                    .get(&cid)
                    .is_some_and(|c| c.known_exit().is_none())
            });
        if running {
            return;
        }
        let pod_id = id.to_string();
        create_member(node, id, &name.clone(), true, move |node, result| {
            if let Err(e) = result {
                fail(
                    node,
                    &pod_id,
                    format!("init container {name}: {}", e.message),
                );
            }
        });
        return;
    }
    let names: std::collections::VecDeque<String> = pod
        .record
        .spec
        .containers
        .iter()
        .map(|c| c.name.clone())
        .collect();
    create_apps(node, id.to_string(), names, Vec::new());
}

/// Creates the app containers one after the other, then starts them.
fn create_apps(
    node: &mut Node,
    pod_id: String,
    mut names: std::collections::VecDeque<String>,
    mut created: Vec<(String, String)>,
) {
    let Some(name) = names.pop_front() else {
        start_apps(node, pod_id, created.into());
        return;
    };
    if node.pods.get(&pod_id).map(|p| p.record.phase) != Some(PodPhase::Starting) {
        return;
    }
    create_member(
        node,
        &pod_id.clone(),
        &name.clone(),
        false,
        move |node, r| match r {
            Ok(cid) => {
                created.push((name, cid));
                create_apps(node, pod_id, names, created);
            }
            Err(e) => fail(node, &pod_id, format!("container {name}: {}", e.message)),
        },
    );
}

/// Starts the created app containers one after the other; the pod runs once all do.
fn start_apps(
    node: &mut Node,
    pod_id: String,
    mut created: std::collections::VecDeque<(String, String)>,
) {
    if node.pods.get(&pod_id).map(|p| p.record.phase) != Some(PodPhase::Starting) {
        return;
    }
    let Some((name, cid)) = created.pop_front() else {
        running(node, &pod_id);
        return;
    };
    crate::agent::start::start_created(node, &cid, move |node, r| match r {
        Ok(_) => start_apps(node, pod_id, created),
        Err(e) => fail(node, &pod_id, format!("container {name}: {}", e.message)),
    });
}

/// Every app container started: the pod runs; its `pod run` caller hears so.
fn running(node: &mut Node, id: &str) {
    let Some(pod) = node.pods.get_mut(id) else {
        return;
    };
    let pending = pod.pending.take();
    let moved = super::phase::advance(node, id, PodPhase::Running, None);
    if moved.is_ok() {
        // An app container that ended while the others were still starting (`true`, a
        // crash at once) was only recorded then: its policy acts now.
        super::restart::resume(node, id);
    }
    let Some(reply) = pending else {
        if let Ok(written) = moved {
            written.reported();
        }
        return;
    };
    match (moved, node.pods.get(id)) {
        // The caller hears back once the pod's running is on disk.
        (Ok(written), Some(pod)) => {
            let view = super::info(node, pod);
            tokio::spawn(async move {
                let _ = reply.send(written.result().await.map(|()| view));
            });
        }
        (Ok(written), None) => {
            written.reported();
            let _ = reply.send(Err(ApiError::no_such_pod(id)));
        }
        (Err(e), _) => {
            let _ = reply.send(Err(e));
        }
    }
}

/// Tears a starting pod down and answers its caller with `message`.
pub fn fail(node: &mut Node, id: &str, message: String) {
    let reply = node.pods.get_mut(id).and_then(|p| p.pending.take());
    let name = node
        .pods
        .get(id)
        .map(|p| p.record.name.clone())
        .unwrap_or_default();
    tracing::warn!(pod = %name, %message, "pod failed to start; rolling back");
    match super::phase::advance(node, id, PodPhase::Failed, Some(message.clone())) {
        // Nobody waits on the write; a failure is journaled and logged.
        Ok(written) => written.reported(),
        Err(e) => {
            tracing::error!(pod = %name, error = %e.message, "recording a failed start");
        }
    }
    super::teardown::start(node, id, super::teardown::After::Fail { message, reply });
}
