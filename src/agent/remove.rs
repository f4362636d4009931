//! Remove: a stopped container's mounts, cgroup, lease and state dir; `force` kills a
//! running one first (SIGKILL to its cgroup, then a few seconds for its supervisor to
//! record the exit). All of it runs off the owner; the container is marked `removing`
//! meanwhile, and a second removal joins the first. A container still being created is
//! cancelled instead: its create stops waiting, undoes itself, and then answers.
//! A container on a CNI network of its own is then detached (DEL, namespace) by a task off
//! the owner (plugins may take up to their timeout); its host ports stay held and callers
//! of `rm` wait (`Node::releasing`) until `Action::NetworkReleased`.

use std::time::Duration;

use berth_runtime::rootfs::RootfsDirs;
use berth_runtime::state::{ContainerDir, ContainerRecord, ExitRecord, Status};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::error::ApiError;
use super::node::{AfterRemove, Node, Reply};

/// How long `rm -f` gives a killed container's supervisor to record the exit.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Releases what a stopped container holds on the host: its rootfs mount and cgroup (the
/// supervisor removes the cgroup itself; this covers a killed supervisor).
pub fn release(record: &ContainerRecord, dir: &ContainerDir) {
    if let Err(e) = berth_runtime::cgroups::remove(&record.cgroup_path) {
        tracing::error!(error = %e, "removing the cgroup");
    }
    if let Err(e) = berth_runtime::rootfs::unmount(&RootfsDirs::under(dir.path())) {
        tracing::error!(error = %e, "unmounting the rootfs");
    }
}

/// `DELETE /v1/containers/{id}`: a pod's container is refused (its pod owns it); the
/// answer comes once the container, and its own network, are gone.
pub fn request(node: &mut Node, key: String, force: bool, reply: Reply<()>) {
    let pod = node.resolve(&key).ok().and_then(|c| {
        let m = c.record().task.pod.as_ref()?;
        node.pods
            .contains_key(&m.pod_id)
            .then(|| m.pod_name.clone())
    });
    if let Some(p) = pod {
        let _ = reply.send(Err(ApiError::conflict(format!(
            "container {key} belongs to pod {p}: remove the pod (berth pod rm {p})"
        ))));
        return;
    }
    // Still being created (its supervisor may hang): cancelled, answered once undone.
    // Only when no recorded container answers to `key` (a name wins over an id prefix).
    let creating = match node.resolve_id(&key) {
        Err(e) if e.is_not_found() => creating_id(node, &key),
        _ => None,
    };
    if let Some(c) = creating.and_then(|id| node.creating.get_mut(&id)) {
        if !force {
            let _ = reply.send(Err(ApiError::conflict(format!(
                "container {key} is being created: use -f to cancel it"
            ))));
            return;
        }
        if let Some(cancel) = c.cancel.take() {
            let _ = cancel.send(());
        }
        c.removers.push(AfterRemove::new(move |_, result| {
            let _ = reply.send(result);
        }));
        return;
    }
    let id = match node.resolve_id(&key) {
        Ok(id) => id,
        Err(e) => {
            // Removed already (`--rm`) with its network still being released: answered
            // once it is, or with the same 404.
            if let Some(r) = wait_for_release(node, &key, reply) {
                let _ = r.send(Err(e));
            }
            return;
        }
    };
    remove(node, &id.clone(), force, move |node, result| match result {
        Ok(()) => {
            if let Some(r) = wait_for_release(node, &id, reply) {
                let _ = r.send(Ok(()));
            }
        }
        Err(e) => {
            let _ = reply.send(Err(e));
        }
    });
}

/// A container still being created that `key` names (full id, name or id prefix).
fn creating_id(node: &Node, key: &str) -> Option<String> {
    if key.is_empty() {
        return None;
    }
    super::node::resolve_key(
        "container",
        key,
        node.creating
            .iter()
            .map(|(id, c)| (id.as_str(), c.name.as_str())),
    )
    .ok()
}

/// Removes container `id` (`force`: running too), then calls `then` on the owner.
pub fn remove(
    node: &mut Node,
    id: &str,
    force: bool,
    then: impl FnOnce(&mut Node, Result<(), ApiError>) + Send + 'static,
) {
    let Some(c) = node.containers.get_mut(id) else {
        then(node, Err(ApiError::no_such_container(id)));
        return;
    };
    if let Some(waiters) = c.removing.as_mut() {
        waiters.push(AfterRemove::new(then));
        return;
    }
    // Its exit is being released (unmount, cgroup): removed right after, never alongside.
    if let Some(deferred) = c.releasing.as_mut() {
        let id = id.to_string();
        deferred.push(super::node::Then(Box::new(move |node| {
            remove(node, &id, force, then)
        })));
        return;
    }
    let running = c.status() != Status::Stopped;
    if running && !force {
        then(
            node,
            Err(ApiError::conflict(format!(
                "container {id} is running: stop it first, or use -f"
            ))),
        );
        return;
    }
    let first = AfterRemove::new(then);
    c.removing = Some(vec![first]);
    c.restart_pending = false;
    let record = c.record().clone();
    let dir = c.dir.clone();
    let mut exit = c.exit.subscribe();
    let store = node.settings.store.clone();
    let writer = node.writer.clone();
    let id = id.to_string();
    node.spawn(
        "removing a container",
        async move {
            if running {
                // Everything in the cgroup (forked children included); then a moment for
                // the supervisor to record the exit. Removal below copes if it does not.
                let cgroup = record.cgroup_path.clone();
                let _ =
                    tokio::task::spawn_blocking(move || berth_runtime::cgroups::kill_all(&cgroup))
                        .await;
                super::kill::exited_within(&mut exit, KILL_WAIT).await;
            }
            // Writes of the record queued before now land before its dir goes.
            writer.flush().await;
            tokio::task::spawn_blocking(move || delete(&record, &dir, &store))
                .await
                .unwrap_or_else(|e| Err(ApiError::internal(e)))
        },
        move |node, result| finish(node, &id, result),
    );
}

/// Off the owner: kill what is left, unmount, and delete the state dir.
fn delete(
    record: &ContainerRecord,
    dir: &ContainerDir,
    store: &berth_images::store::Store,
) -> Result<(), ApiError> {
    let _ = berth_runtime::cgroups::kill_all(&record.cgroup_path);
    // The supervisor, which we started ourselves (pid and start time recorded).
    if let Some(shim) = record.shim.filter(|s| s.is_alive()) {
        let _ = nix::sys::signal::kill(Pid::from_raw(shim.pid), Signal::SIGKILL);
    }
    release(record, dir);
    let dirs = RootfsDirs::under(dir.path());
    if berth_runtime::rootfs::is_mounted(&dirs.rootfs) {
        return Err(ApiError::internal(format!(
            "{} is still mounted; not removing the state dir",
            dirs.rootfs.display()
        )));
    }
    let _ = store.remove_lease(&super::create::lease_name(&record.id));
    remove_state_dir(dir.path())
        .map_err(|e| ApiError::internal(format!("removing {}: {e}", dir.path().display())))
}

/// How long removal keeps retrying a state dir that is written to while it goes.
const REMOVE_DIR_TRIES: u32 = 40;

/// Deletes a container's state dir. An exec or health-check monitor whose process was just
/// killed writes its exit record into `exec/` on its way out, so a file can appear after
/// `remove_dir_all` listed a dir (ENOTEMPTY); each retry removes what appeared since.
pub(crate) fn remove_state_dir(path: &std::path::Path) -> std::io::Result<()> {
    let mut tries = 0;
    loop {
        match std::fs::remove_dir_all(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e)
                if e.kind() == std::io::ErrorKind::DirectoryNotEmpty
                    && tries < REMOVE_DIR_TRIES =>
            {
                tries += 1;
                // Off the owner (a blocking task): the writers are exiting monitors.
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The removal work reported: forget the container (or keep it, on failure), answer
/// everyone who waited.
fn finish(node: &mut Node, id: &str, result: Result<(), ApiError>) {
    let waiters = node
        .containers
        .get_mut(id)
        .and_then(|c| c.removing.take())
        .unwrap_or_default();
    if result.is_ok() {
        if let Some(c) = node.containers.remove(id) {
            node.idmaps.release(id);
            node.disk.release(id);
            // Wake waiters of a container removed while running.
            if c.exit.borrow().is_none() {
                c.exit.send_replace(Some(ExitRecord::failed(
                    137,
                    "removed",
                    "the container was removed".into(),
                )));
            }
            let detached = (c.record().task.pod.is_none()
                && c.record().task.network.cni().is_some())
            .then(|| Detached {
                name: c.record().name.clone(),
                ports: c.record().task.publish.clone(),
            });
            release_network(node, id, detached);
            tracing::info!(id, "container removed");
            let mut ev = super::events::Event::new("container", "removed", id, &c.record().name);
            if let Some(m) = &c.record().task.pod {
                ev = ev.with("pod", &m.pod_name);
            }
            node.emit(ev);
        }
    } else if let Err(e) = &result {
        tracing::error!(id, error = %e.message, "removing a container");
    }
    for w in waiters {
        w.call(node, result.clone());
    }
}

/// The network a removed container still holds.
#[derive(Debug)]
struct Detached {
    name: String,
    ports: Vec<berth_runtime::task::PublishedPort>,
}

/// DEL and namespace release in a task; ports held until it reports.
fn release_network(node: &mut Node, id: &str, detached: Option<Detached>) {
    let Some(d) = detached else {
        return;
    };
    node.pending_ports.insert(id.to_string(), d.ports);
    node.releasing.insert(id.to_string(), (d.name, Vec::new()));
    let (settings, tx, id) = (node.settings.clone(), node.tx.clone(), id.to_string());
    tokio::spawn(async move {
        let s = settings.clone();
        let cid = id.clone();
        let _ =
            tokio::task::spawn_blocking(move || super::network::release_container(&s, &cid)).await;
        let _ = tx.send(super::node::Action::NetworkReleased(id)).await;
    });
}

/// `rm` of a container whose network is still being released: answered once it is.
/// Returns the reply back when `key` names no such container.
pub fn wait_for_release(node: &mut Node, key: &str, reply: Reply<()>) -> Option<Reply<()>> {
    let id = node
        .releasing
        .iter()
        .find(|(id, (name, _))| {
            id.as_str() == key || name == key || (key.len() >= 12 && id.starts_with(key))
        })
        .map(|(id, _)| id.clone());
    match id.and_then(|id| node.releasing.get_mut(&id)) {
        Some((_, waiters)) => {
            waiters.push(reply);
            None
        }
        None => Some(reply),
    }
}

/// The release task reported: free the ports, answer the waiting callers.
pub fn on_network_released(node: &mut Node, id: &str) {
    node.pending_ports.remove(id);
    if let Some((_, waiters)) = node.releasing.remove(id) {
        for w in waiters {
            let _ = w.send(Ok(()));
        }
    }
}
