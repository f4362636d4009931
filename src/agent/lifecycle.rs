//! The recorded changes of a container's life, each in one function that checks the move
//! is allowed, writes `container.json` and announces it — or returns an error that reaches
//! the caller and the log. A failed write is never silent: it is also a `container error`
//! event, and the state in memory stays the new one (the next write catches the disk up;
//! a crash before it recovers the older one).
//!
//! ```text
//! created ──start──▶ running ──exit──▶ stopped ──restart (policy or `start`)──▶ running
//!    │                  │                 │
//!    │                  └──operator stop: restart policy held off
//!    └────────────────────────────────────┴──remove──▶ gone
//! ```
//!
//! The status a client sees (`created`, `running`, `stopped`) is derived from the record,
//! the exit and the processes' liveness ([`super::node::Container::status`]); the moves that
//! change the record are here.

use berth_runtime::state::write_json;

use super::error::ApiError;
use super::events::Event;
use super::node::Node;

/// Writes container `id`'s record after a change described by `what`; a failure is
/// logged, journaled as an `error` event, and returned.
fn persist(node: &mut Node, id: &str, what: &str) -> Result<(), ApiError> {
    let Some(c) = node.containers.get(id) else {
        return Err(ApiError::no_such_container(id));
    };
    let Err(e) = write_json(&c.dir.record(), &c.record) else {
        return Ok(());
    };
    let name = c.record.name.clone();
    tracing::error!(id, error = %e, "{what}");
    node.emit(Event::new("container", "error", id, &name).with("message", format!("{what}: {e}")));
    Err(ApiError::internal(format!(
        "container {name}: {what}: {e}; the agent goes on, but a restart would find the older record"
    ))
    .about(&name))
}

/// The init was started: its start time is recorded and a `started` event journaled.
/// Allowed once per run (a relaunch clears the time); a second call is a no-op.
pub fn started(node: &mut Node, id: &str) -> Result<(), ApiError> {
    let Some(c) = node.containers.get_mut(id) else {
        return Err(ApiError::no_such_container(id));
    };
    if c.record.started.is_some() {
        return Ok(());
    }
    c.record.started = Some(berth_runtime::state::now());
    let mut ev = Event::new("container", "started", id, &c.record.name);
    if let Some(m) = &c.record.task.pod {
        ev = ev.with("pod", &m.pod_name);
    }
    let saved = persist(node, id, "recording the start");
    node.emit(ev);
    node.watch_health(id);
    saved
}

/// An operator stops or kills it: its restart policy holds off (as Docker's does) until
/// it is started again. Only containers with a restart policy record it.
pub fn stopped_by_operator(node: &mut Node, id: &str) -> Result<(), ApiError> {
    let Some(c) = node.containers.get_mut(id) else {
        return Err(ApiError::no_such_container(id));
    };
    if c.record.task.restart == berth_runtime::task::RestartPolicy::No {
        return Ok(());
    }
    c.restart_pending = false;
    if c.record.stopped_by_operator {
        return Ok(());
    }
    c.record.stopped_by_operator = true;
    persist(node, id, "recording an operator's stop")
}
