//! Remove: a stopped container's mounts, cgroup, lease and state dir; `force` kills first.

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
        return Err(ApiError::not_found(format!("no such container: {key}")));
    };
    if c.status() != Status::Stopped && !force {
        return Err(ApiError::conflict(format!(
            "container {key} is running: stop it first, or use -f"
        )));
    }
    let record = c.record.clone();
    let dir = c.dir.clone();
    let store = node.settings.store.clone();
    let settings = node.settings.clone();
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
        // A pod's network is the pod's to release.
        if record.task.pod.is_none() && record.task.network.cni().is_some() {
            super::network::release_container(&settings, &record.id);
        }
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
    tracing::info!(id, "container removed");
    Ok(())
}
