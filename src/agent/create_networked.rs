//! Creating a container on a CNI network in two steps, so the owner task never waits on
//! plugins (each may take up to its timeout): quick checks, then a task makes the network
//! namespace and runs the chain's ADD, then `Action::NetworkReady` brings the owner back
//! to create the container in it (`create::create`). Its host ports are held in
//! `Node::pending_ports` meanwhile, so two creates cannot publish the same port. Anything
//! that fails after the ADD DELs it again.

use berth_runtime::state::NetworkStatus;
use berth_runtime::task::TaskSpec;

use super::error::ApiError;
use super::network::{self, AttachRequest};
use super::node::{Action, Node, Reply};
use crate::api::Created;

/// `POST /v1/containers`: containers without a network of their own are created at once.
pub fn request(node: &mut Node, mut task: TaskSpec, reply: Reply<Created>) {
    task.network = network::resolve(&node.settings, &task.network);
    if let Err(e) = admit(node, &task) {
        let _ = reply.send(Err(e.with_exit_code(125)));
        return;
    }
    let Some(net) = task
        .network
        .cni()
        .filter(|_| task.pod.is_none())
        .map(str::to_string)
    else {
        super::create::create(node, task, None, move |node, created| {
            answer(node, reply, created)
        });
        return;
    };
    let id = match precheck(node, &task).and_then(|()| super::create::new_id()) {
        Ok(id) => id,
        Err(e) => {
            let _ = reply.send(Err(e));
            return;
        }
    };
    // Its namespaces belong to its user namespace, made with them.
    let idmap = match task.userns.unwrap_or(node.settings.userns_default) {
        berth_runtime::userns::UsernsMode::Host => None,
        berth_runtime::userns::UsernsMode::Auto => match super::idmap::allocate(node, &id) {
            Ok(map) => Some(map),
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        },
    };
    node.pending_ports.insert(id.clone(), task.publish.clone());
    let name = task
        .name
        .clone()
        .unwrap_or_else(|| format!("berth-{}", &id[..12]));
    let (settings, tx) = (node.settings.clone(), node.tx.clone());
    tokio::spawn(async move {
        let result = async {
            let netns = network::make_netns(&settings, &id, idmap.as_ref()).await?;
            let req = AttachRequest {
                id: id.clone(),
                name,
                network: net,
                netns,
                ports: task.publish.clone(),
            };
            let s = settings.clone();
            tokio::task::spawn_blocking(move || network::attach(&s, &req))
                .await
                .map_err(ApiError::internal)?
        }
        .await;
        if result.is_err() {
            // The ADD undid itself; the namespace is left.
            let (s, id) = (settings.clone(), id.clone());
            let _ = tokio::task::spawn_blocking(move || network::release_container(&s, &id)).await;
        }
        // Gone only if the agent is stopping: the next start DELs the orphan.
        let _ = tx
            .send(Action::NetworkReady {
                id,
                task: Box::new(task),
                result,
                reply,
            })
            .await;
    });
}

/// What can be refused before anything is made.
fn precheck(node: &Node, task: &TaskSpec) -> Result<(), ApiError> {
    task.validate()
        .map_err(|e| ApiError::bad_request(e.to_string()).with_exit_code(125))?;
    if let Some(n) = &task.name {
        if node.containers.values().any(|c| &c.record().name == n) {
            return Err(ApiError::name_in_use("container", n).with_exit_code(125));
        }
    }
    network::check_ports_free(node, &task.publish)
}

/// The attachment is done: create the container in it, or DEL it if that fails.
pub fn on_ready(
    node: &mut Node,
    id: String,
    task: TaskSpec,
    result: Result<NetworkStatus, ApiError>,
    reply: Reply<Created>,
) {
    node.pending_ports.remove(&id);
    let status = match result {
        Ok(status) => status,
        Err(e) => {
            node.idmaps.release(&id);
            release_then_answer(node, id, reply, Err(e));
            return;
        }
    };
    let attached = Some((id.clone(), status));
    super::create::create(node, task, attached, move |node, created| {
        if created.is_err() {
            release_then_answer(node, id, reply, created);
        } else {
            answer(node, reply, created);
        }
    });
}

/// A create that failed after its network was attached: DEL (off the owner), then answer.
fn release_then_answer(
    node: &mut Node,
    id: String,
    reply: Reply<Created>,
    created: Result<Created, ApiError>,
) {
    let settings = node.settings.clone();
    node.spawn_blocking(
        "releasing a failed create's network",
        move || {
            network::release_container(&settings, &id);
            Ok(())
        },
        move |node, _| answer(node, reply, created),
    );
}

/// Answers a create; a container whose client left before hearing of it (a `run --rm`
/// given up, a killed CLI) is removed again rather than left `created` with no one to
/// start or remove it.
fn answer(node: &mut Node, reply: Reply<Created>, created: Result<Created, ApiError>) {
    // No longer pending before the client can hear of it: a crash after this point keeps
    // the container (its client may have its id); before it, recovery removes it.
    if let Some(c) = created
        .as_ref()
        .ok()
        .and_then(|c| node.containers.get(&c.id))
    {
        if let Err(e) = std::fs::remove_file(c.dir.create_pending()) {
            tracing::error!(id = %c.record().id, error = %e, "clearing the pending-create mark");
        }
    }
    let Err(Ok(orphan)) = reply.send(created) else {
        return;
    };
    tracing::warn!(id = %orphan.id, "the client left before its create was answered; removing the container");
    let id = orphan.id.clone();
    super::remove::remove(node, &orphan.id, true, move |_, result| {
        if let Err(e) = result {
            tracing::error!(id, error = %e.message, "removing an orphaned create");
        }
    });
}

/// Admission of a lone container, before anything is made: its CPU set must be within
/// the CPUs containers may use, and revocable work must fit the revocable estimate.
fn admit(node: &Node, task: &TaskSpec) -> Result<(), ApiError> {
    if let Some(cpus) = &task.resources.cpuset_cpus {
        let set = berth_runtime::task::parse_cpuset("--cpuset-cpus", cpus)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        super::check_cpuset(&node.settings, "--cpuset-cpus", &set)?;
    }
    if task.revocable && task.pod.is_none() {
        let r = super::usage::task_resources(task);
        super::usage::admit_revocable(
            node,
            "the container",
            r.cpu_request.unwrap_or(0.0),
            r.memory_request.unwrap_or(0.0),
        )?;
    }
    Ok(())
}
