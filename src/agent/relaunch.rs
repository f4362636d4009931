//! Running a stopped container again, as Docker does for `docker start` of an exited
//! container and for its `--restart` policies: same id, name, writable layer and logs; a
//! new supervisor and init. The rootfs is mounted again over the layers its lease keeps.
//!
//! Restart back-off is Docker's: 100 ms doubling per restart, at most a minute, back to
//! 100 ms once a run lasted 10 s.

use std::time::Duration;

use berth_runtime::rootfs::{RootfsDirs, RootfsKind};
use berth_runtime::state::{write_json, ExitRecord};
use tokio::sync::watch;

use super::error::ApiError;
use super::events::Event;
use super::node::{Action, Node};

/// Schedules a restart if the container's policy wants one (single containers; pods have
/// their own policy).
pub fn on_exit(node: &mut Node, id: &str, exit: &ExitRecord) {
    let Some(c) = node.containers.get_mut(id) else {
        return;
    };
    let r = &c.record;
    if !r
        .task
        .restart
        .restarts(exit.exit_code, r.restart_count, r.stopped_by_operator)
    {
        return;
    }
    if r.ran_for(exit) >= Duration::from_secs(10) {
        c.backoff_step = 0;
    }
    let delay = Duration::from_millis(100)
        .saturating_mul(1u32 << c.backoff_step.min(10))
        .min(Duration::from_secs(60));
    c.backoff_step += 1;
    c.restart_pending = true;
    let ev =
        Event::new("container", "backoff", id, &c.record.name).with("delay", format!("{delay:?}"));
    node.emit(ev);
    let tx = node.tx.clone();
    let id = id.to_string();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = tx.send(Action::RestartContainer(id)).await;
    });
}

/// A back-off ended: restart unless the operator stopped or removed it meanwhile.
pub async fn restart(node: &mut Node, id: &str) {
    let Some(c) = node.containers.get_mut(id) else {
        return;
    };
    if !std::mem::take(&mut c.restart_pending) || c.record.stopped_by_operator {
        return;
    }
    match relaunch(node, id, true).await {
        Ok(pid) => {
            if let Some(c) = node.containers.get(id) {
                let ev = Event::new("container", "restarted", id, &c.record.name)
                    .with("restartCount", c.record.restart_count)
                    .with("pid", pid);
                node.emit(ev);
            }
        }
        Err(e) => tracing::error!(id, error = %e.message, "restart failed"),
    }
}

/// Starts a stopped container again; `by_policy` counts it as a restart. Returns the pid.
pub async fn relaunch(node: &mut Node, id: &str, by_policy: bool) -> Result<i32, ApiError> {
    let Some(c) = node.containers.get(id) else {
        return Err(ApiError::no_such_container(&id));
    };
    if c.known_exit().is_none() {
        return Err(ApiError::conflict(format!("container {id} is not stopped")));
    }
    let mut record = c.record.clone();
    let dir = c.dir.clone();
    let store = node.settings.store.clone();
    let (r2, d2) = (record.clone(), dir.clone());
    tokio::task::spawn_blocking(move || -> Result<(), ApiError> {
        let dirs = RootfsDirs::under(d2.path());
        if r2.rootfs == RootfsKind::Overlay && !berth_runtime::rootfs::is_mounted(&dirs.rootfs) {
            let lowers: Vec<_> = store
                .lease_digests(&super::create::lease_name(&r2.id))
                .map_err(ApiError::internal)?
                .iter()
                .map(|d| store.snapshot_path(d))
                .collect();
            berth_runtime::rootfs::prepare(&dirs, &lowers, false).map_err(ApiError::internal)?;
        }
        // What the last run left: its exit, libcontainer's state, its socket.
        let _ = std::fs::remove_file(d2.exit());
        let _ = std::fs::remove_dir_all(d2.libcontainer().join(&r2.id));
        let _ = std::fs::remove_file(d2.socket());
        Ok(())
    })
    .await
    .map_err(ApiError::internal)??;
    record.init = None;
    record.shim = None;
    record.started = None;
    if by_policy {
        record.restart_count += 1;
    } else {
        record.stopped_by_operator = false;
    }
    write_json(&dir.record(), &record).map_err(ApiError::internal)?;
    let (pid, shim) = super::create::spawn_supervisor(node, &record, &dir).await?;
    record.init = berth_runtime::state::ProcessId::of(pid);
    record.shim = shim;
    write_json(&dir.record(), &record).map_err(ApiError::internal)?;
    if let Some(c) = node.containers.get_mut(id) {
        c.record = record;
        // Waiters of the last run keep its exit; new ones wait for this run.
        c.exit = watch::channel(None).0;
        c.health = c.record.task.health.as_ref().map(|_| Default::default());
        // A pending policy restart is moot once it runs (e.g. an operator's `start`).
        c.restart_pending = false;
    }
    super::start::start_created(node, id).await
}
