//! Kill: a signal to the init, or SIGKILL to the whole cgroup (`all`).

use berth_runtime::state::Status;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::error::ApiError;
use super::node::Node;

pub fn kill(node: &mut Node, key: &str, signal: Signal, all: bool) -> Result<(), ApiError> {
    let id = node.resolve_id(key)?;
    // An operator's kill or stop holds its restart policy off (as Docker's does).
    if let Some(c) = node.containers.get_mut(&id) {
        let stopping = matches!(signal, Signal::SIGTERM | Signal::SIGKILL | Signal::SIGINT);
        if stopping && c.record.task.restart != berth_runtime::task::RestartPolicy::No {
            c.record.stopped_by_operator = true;
            c.restart_pending = false;
            let _ = berth_runtime::state::write_json(&c.dir.record(), &c.record);
        }
    }
    let c = node.resolve(&id)?;
    if c.status() == Status::Stopped {
        return Err(ApiError::conflict(format!(
            "container {key} is not running"
        )));
    }
    if all {
        berth_runtime::cgroups::kill_all(&c.record.cgroup_path).map_err(ApiError::internal)?;
        return Ok(());
    }
    // The recorded start time guards against signalling a recycled pid.
    match c.record.init {
        Some(p) if p.is_alive() => nix::sys::signal::kill(Pid::from_raw(p.pid), signal)
            .map_err(|e| ApiError::internal(format!("kill {}: {e}", p.pid))),
        _ => Err(ApiError::conflict(format!(
            "container {key} is not running"
        ))),
    }
}
