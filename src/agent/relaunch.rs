//! Running a stopped container again, as Docker does for `docker start` of an exited
//! container and for its `--restart` policies: same id, name, writable layer and logs; a
//! new supervisor and init. The rootfs is mounted again over the layers its lease keeps.
//!
//! Restart back-off is Docker's (`backoff.rs`): 100 ms doubling per restart, at most a
//! minute, back to 100 ms once a run lasted 10 s.

use berth_runtime::rootfs::{RootfsDirs, RootfsKind};
use berth_runtime::state::{write_json, ContainerDir, ContainerRecord, ExitRecord};

use super::backoff::{schedule, Backoff, Restart};
use super::error::ApiError;
use super::events::Event;
use super::node::Node;

/// Schedules a restart if the container's policy wants one (single containers; pods have
/// their own policy).
pub fn on_exit(node: &mut Node, id: &str, exit: &ExitRecord) {
    let Some(c) = node.containers.get_mut(id) else {
        return;
    };
    let r = &c.record();
    if !r
        .task
        .restart
        .restarts(exit.exit_code, r.restart_count, r.stopped_by_operator)
    {
        return;
    }
    let backoff = Backoff::DOCKER;
    if backoff.resets(r.ran_for(exit)) {
        c.backoff_step = 0;
    }
    let delay = backoff.delay(c.backoff_step);
    c.backoff_step += 1;
    c.restart_pending = true;
    let ev = Event::new("container", "backoff", id, &c.record().name);
    schedule(node, Restart::Container(id.to_string()), delay, ev);
}

/// A back-off ended: restart unless the operator stopped or removed it meanwhile.
pub fn restart(node: &mut Node, id: &str) {
    let Some(c) = node.containers.get_mut(id) else {
        return;
    };
    if !std::mem::take(&mut c.restart_pending)
        || c.record().stopped_by_operator
        || c.busy.is_some()
        || c.removing.is_some()
    {
        return;
    }
    let id = id.to_string();
    relaunch(node, &id.clone(), true, move |node, result| match result {
        Ok(pid) => {
            if let Some(c) = node.containers.get(&id) {
                let ev = Event::new("container", "restarted", &id, &c.record().name)
                    .with("restartCount", c.record().restart_count)
                    .with("pid", pid);
                node.emit(ev);
            }
        }
        Err(e) => tracing::error!(id, error = %e.message, "restart failed"),
    });
}

/// Starts a stopped container again; `by_policy` counts it as a restart. The rootfs, the
/// record and the new supervisor are made off the owner (the container is `busy`
/// meanwhile); `then` gets the new init's pid.
pub fn relaunch(
    node: &mut Node,
    id: &str,
    by_policy: bool,
    then: impl FnOnce(&mut Node, Result<i32, ApiError>) + Send + 'static,
) {
    let Some(c) = node.containers.get_mut(id) else {
        then(node, Err(ApiError::no_such_container(id)));
        return;
    };
    if c.known_exit().is_none() {
        then(
            node,
            Err(ApiError::conflict(format!("container {id} is not stopped"))),
        );
        return;
    }
    c.busy = Some("being restarted");
    let record = c.next_run(by_policy);
    let dir = c.dir.clone();
    let (settings, tx, writer) = (node.settings.clone(), node.tx.clone(), node.writer.clone());
    let id = id.to_string();
    node.spawn(
        "relaunching a container",
        async move {
            // Writes of the last run's record land before this run's.
            writer.flush().await;
            let (r2, d2, store) = (record.clone(), dir.clone(), settings.store.clone());
            tokio::task::spawn_blocking(move || remount(&r2, &d2, &store))
                .await
                .map_err(ApiError::internal)??;
            let (pid, shim) =
                super::create::spawn_supervisor(&settings, tx, &record, &dir, None).await?;
            super::create::with_supervisor(record, &dir, pid, shim).await
        },
        move |node, made: Result<ContainerRecord, ApiError>| {
            let Some(c) = node.containers.get_mut(&id) else {
                then(node, Err(ApiError::no_such_container(&id)));
                return;
            };
            c.busy = None;
            let record = match made {
                Ok(r) => r,
                Err(e) => {
                    then(node, Err(e));
                    return;
                }
            };
            c.relaunched(record, by_policy);
            super::start::start_created(node, &id, then);
        },
    );
}

/// Off the owner: the rootfs mounted again over the layers its lease keeps, and what the
/// last run left removed (its exit, libcontainer's state, its socket).
fn remount(
    record: &ContainerRecord,
    dir: &ContainerDir,
    store: &berth_images::store::Store,
) -> Result<(), ApiError> {
    let dirs = RootfsDirs::under(dir.path());
    if record.rootfs == RootfsKind::Overlay && !berth_runtime::rootfs::is_mounted(&dirs.rootfs) {
        let lowers: Vec<_> = store
            .lease_digests(&super::create::lease_name(&record.id))
            .map_err(ApiError::internal)?
            .iter()
            .map(|d| store.snapshot_path(d))
            .collect();
        berth_runtime::rootfs::prepare(&dirs, &lowers, false, record.idmap.as_ref())
            .map_err(ApiError::internal)?;
    }
    let _ = std::fs::remove_file(dir.exit());
    let _ = std::fs::remove_dir_all(dir.libcontainer().join(&record.id));
    let _ = std::fs::remove_file(dir.socket());
    // The record says "no process" before a new supervisor exists.
    write_json(&dir.record(), record).map_err(ApiError::internal)
}
