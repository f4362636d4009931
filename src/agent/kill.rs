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
use super::persist::Written;

/// How long `stop` waits for the exit after SIGKILL.
const AFTER_KILL: Duration = Duration::from_secs(10);

/// `POST /v1/containers/{id}/kill`: answered once the signal is sent and an operator's stop
/// is on disk (or, with `all`, once the cgroup is empty).
pub fn request(node: &mut Node, key: &str, signal: Signal, all: bool, reply: Reply<()>) {
    if !all {
        match kill(node, key, signal) {
            Ok(written) => {
                tokio::spawn(async move {
                    let _ = reply.send(written.result().await);
                });
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
        return;
    }
    let (cgroup, written) = match checked(node, key, signal) {
        Ok(c) => c,
        Err(e) => {
            let _ = reply.send(Err(e));
            return;
        }
    };
    tokio::spawn(async move {
        let killed =
            tokio::task::spawn_blocking(move || berth_runtime::cgroups::kill_all(&cgroup)).await;
        let killed = match killed {
            Ok(k) => k.map_err(ApiError::internal),
            Err(e) => Err(ApiError::internal(e)),
        };
        let _ = reply.send(killed.and(written.result().await));
    });
}

/// Holds the restart policy off for an operator's stop signal (as Docker's does) and checks
/// the container runs; its cgroup, and the write of the stop.
fn checked(
    node: &mut Node,
    key: &str,
    signal: Signal,
) -> Result<(std::path::PathBuf, Written), ApiError> {
    let id = node.resolve_id(key)?;
    let written = if matches!(signal, Signal::SIGTERM | Signal::SIGKILL | Signal::SIGINT) {
        super::lifecycle::stopped_by_operator(node, &id)?
    } else {
        super::lifecycle::unchanged(node, &id)?
    };
    let c = node.resolve(&id)?;
    if c.status() == Status::Stopped {
        written.reported();
        return Err(ApiError::conflict(format!(
            "container {key} is not running"
        )));
    }
    Ok((c.record().cgroup_path.clone(), written))
}

/// A signal to the init; the write of an operator's stop (see [`checked`]).
pub fn kill(node: &mut Node, key: &str, signal: Signal) -> Result<Written, ApiError> {
    let (_, written) = checked(node, key, signal)?;
    let c = node.resolve(key)?;
    // The recorded start time guards against signalling a recycled pid.
    match c.record().init {
        Some(p) if p.is_alive() => nix::sys::signal::kill(Pid::from_raw(p.pid), signal)
            .map(|()| written)
            .map_err(|e| ApiError::internal(format!("kill {}: {e}", p.pid))),
        _ => {
            written.reported();
            Err(ApiError::conflict(format!(
                "container {key} is not running"
            )))
        }
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
    let cgroup = c.record().cgroup_path.clone();
    let id = c.record().id.clone();
    // Recorded before the signal, so its exit is not taken for one to restart after. A
    // failed write does not keep it running: it stops, and the caller hears of the write.
    let recorded = super::lifecycle::stopped_by_operator(node, &id);
    // Not running (yet): nothing to signal. The stop is recorded above already.
    match kill(node, &id, Signal::SIGTERM) {
        Ok(written) => written.reported(),
        Err(e) => tracing::debug!(key, error = %e.message, "stop: SIGTERM"),
    }
    tokio::spawn(async move {
        // The answer waits for the stop to be on disk.
        let recorded = match recorded {
            Ok(written) => written.result().await,
            Err(e) => Err(e),
        };
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
