//! Remove: a stopped container's mounts, cgroup, lease and state dir; `force` kills first.
//! A container on a CNI network of its own is then detached (DEL, namespace) by a task off
//! the owner (plugins may take up to their timeout); its host ports stay held and callers
//! of `rm` wait (`Node::releasing`) until `Action::NetworkReleased`.

use berth_runtime::rootfs::RootfsDirs;
use berth_runtime::state::{ContainerDir, ContainerRecord, Status};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::error::ApiError;
use super::node::Node;

/// Releases what a stopped container holds on the host: its rootfs mount and cgroup (the
/// supervisor removes the cgroup itself; this covers a killed supervisor).
pub fn release(record: &ContainerRecord, dir: &ContainerDir) {
    let _ = berth_runtime::cgroups::remove(&record.cgroup_path);
    if let Err(e) = berth_runtime::rootfs::unmount(&RootfsDirs::under(dir.path())) {
        tracing::error!(error = %e, "unmounting the rootfs");
    }
}

pub async fn remove(node: &mut Node, key: &str, force: bool) -> Result<(), ApiError> {
    let id = node.resolve_id(key)?;
    let Some(c) = node.containers.get(&id) else {
        return Err(ApiError::no_such_container(&key));
    };
    if c.status() != Status::Stopped && !force {
        return Err(ApiError::conflict(format!(
            "container {key} is running: stop it first, or use -f"
        )));
    }
    let record = c.record.clone();
    let dir = c.dir.clone();
    // A pod's network is the pod's to release.
    let detached =
        (record.task.pod.is_none() && record.task.network.cni().is_some()).then(|| Detached {
            name: record.name.clone(),
            ports: record.task.publish.clone(),
        });
    let store = node.settings.store.clone();
    let result = tokio::task::spawn_blocking(move || {
        // Everything in the cgroup first (forked children included), then the supervisor,
        // which we started ourselves (pid and start time recorded).
        let _ = berth_runtime::cgroups::kill_all(&record.cgroup_path);
        if let Some(shim) = record.shim.filter(|s| s.is_alive()) {
            let _ = nix::sys::signal::kill(Pid::from_raw(shim.pid), Signal::SIGKILL);
        }
        release(&record, &dir);
        let dirs = RootfsDirs::under(dir.path());
        if berth_runtime::rootfs::is_mounted(&dirs.rootfs) {
            return Err(ApiError::internal(format!(
                "{} is still mounted; not removing the state dir",
                dirs.rootfs.display()
            )));
        }
        let _ = store.remove_lease(&super::create::lease_name(&record.id));
        std::fs::remove_dir_all(dir.path())
            .map_err(|e| ApiError::internal(format!("removing {}: {e}", dir.path().display())))
    })
    .await
    .map_err(ApiError::internal)?;
    result?;
    if let Some(c) = node.containers.remove(&id) {
        // Wake waiters of a container removed while running.
        if c.exit.borrow().is_none() {
            c.exit
                .send_replace(Some(berth_runtime::state::ExitRecord::failed(
                    137,
                    "removed",
                    "the container was removed".into(),
                )));
        }
    }
    release_network(node, &id, detached);
    tracing::info!(id, "container removed");
    Ok(())
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
pub fn wait_for_release(
    node: &mut Node,
    key: &str,
    reply: super::node::Reply<()>,
) -> Option<super::node::Reply<()>> {
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
