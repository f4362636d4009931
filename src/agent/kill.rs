//! Kill and stop: a signal to the init, SIGKILL to the whole cgroup (`all`, off the owner:
//! it waits for the cgroup to empty), and `stop`'s escalation (SIGTERM, then after the
//! grace period SIGKILL to the cgroup, answered once the exit is recorded), run by a task
//! the owner spawns.

use std::time::Duration;

use berth_runtime::state::Status;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::error::ApiError;
use super::node::{Node, Reply};

/// How long `stop` waits for the exit after SIGKILL.
const AFTER_KILL: Duration = Duration::from_secs(10);

/// `POST /v1/containers/{id}/kill`.
pub fn request(node: &mut Node, key: &str, signal: Signal, all: bool, reply: Reply<()>) {
    if !all {
        let _ = reply.send(kill(node, key, signal));
        return;
    }
    let cgroup = match checked(node, key, signal) {
        Ok(c) => c,
        Err(e) => {
            let _ = reply.send(Err(e));
            return;
        }
    };
    tokio::task::spawn_blocking(move || {
        let _ = reply.send(berth_runtime::cgroups::kill_all(&cgroup).map_err(ApiError::internal));
    });
}

/// Holds the restart policy off for an operator's stop signal (as Docker's does) and checks
/// the container runs; its cgroup.
fn checked(node: &mut Node, key: &str, signal: Signal) -> Result<std::path::PathBuf, ApiError> {
    let id = node.resolve_id(key)?;
    if matches!(signal, Signal::SIGTERM | Signal::SIGKILL | Signal::SIGINT) {
        super::lifecycle::stopped_by_operator(node, &id)?;
    }
    let c = node.resolve(&id)?;
    if c.status() == Status::Stopped {
        return Err(ApiError::conflict(format!(
            "container {key} is not running"
        )));
    }
    Ok(c.record.cgroup_path.clone())
}

/// A signal to the init.
pub fn kill(node: &mut Node, key: &str, signal: Signal) -> Result<(), ApiError> {
    checked(node, key, signal)?;
    let c = node.resolve(key)?;
    // The recorded start time guards against signalling a recycled pid.
    match c.record.init {
        Some(p) if p.is_alive() => nix::sys::signal::kill(Pid::from_raw(p.pid), signal)
            .map_err(|e| ApiError::internal(format!("kill {}: {e}", p.pid))),
        _ => Err(ApiError::conflict(format!(
            "container {key} is not running"
        ))),
    }
}

/// `POST /v1/containers/{id}/stop`: SIGTERM, then after `grace` SIGKILL to the whole
/// cgroup (a PID 1 without a handler ignores SIGTERM); answered once it has exited.
pub fn stop(node: &mut Node, key: &str, grace: Duration, reply: Reply<()>) {
    let c = match node.resolve(key) {
        Ok(c) => c,
        Err(e) => {
            let _ = reply.send(Err(e));
            return;
        }
    };
    if c.known_exit().is_some() {
        let _ = reply.send(Ok(()));
        return;
    }
    let mut exit = c.exit.subscribe();
    let cgroup = c.record.cgroup_path.clone();
    let id = c.record.id.clone();
    // Recorded before the signal, so its exit is not taken for one to restart after. A
    // failed write does not keep it running: it stops, and the caller hears of the write.
    let recorded = super::lifecycle::stopped_by_operator(node, &id);
    // Not running (yet): nothing to signal.
    if let Err(e) = kill(node, &id, Signal::SIGTERM) {
        tracing::debug!(key, error = %e.message, "stop: SIGTERM");
    }
    tokio::spawn(async move {
        if exited_within(&mut exit, grace).await {
            let _ = reply.send(recorded);
            return;
        }
        let _ =
            tokio::task::spawn_blocking(move || berth_runtime::cgroups::kill_all(&cgroup)).await;
        let answer = if exited_within(&mut exit, AFTER_KILL).await {
            recorded
        } else {
            Err(ApiError::internal(
                "the container did not stop after SIGKILL",
            ))
        };
        let _ = reply.send(answer);
    });
}

/// Whether the exit is recorded (or the container gone) within `t`.
pub async fn exited_within(
    exit: &mut tokio::sync::watch::Receiver<Option<berth_runtime::state::ExitRecord>>,
    t: Duration,
) -> bool {
    tokio::time::timeout(t, exit.wait_for(|e| e.is_some()))
        .await
        .is_ok()
}
