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

use super::error::ApiError;
use super::events::Event;
use super::node::Node;
use super::persist::{Subject, Written};

/// What a write of container `id`'s record is about.
fn subject(node: &Node, id: &str, what: &str) -> Result<Subject, ApiError> {
    let c = node
        .containers
        .get(id)
        .ok_or_else(|| ApiError::no_such_container(id))?;
    Ok(Subject {
        kind: "container",
        id: id.to_string(),
        name: c.record.name.clone(),
        what: what.to_string(),
    })
}

/// Queues container `id`'s record to be written after a change described by `what`
/// (off the owner: [`super::persist`]); a failure is logged, journaled as an `error` event,
/// and the result of the returned [`Written`].
fn persist(node: &mut Node, id: &str, what: &str) -> Result<Written, ApiError> {
    let subject = subject(node, id, what)?;
    let c = node
        .containers
        .get(id)
        .ok_or_else(|| ApiError::no_such_container(id))?;
    Ok(node.writer.write(c.dir.record(), &c.record, subject))
}

/// The init was started: its start time is recorded and a `started` event journaled.
/// Allowed once per run (a relaunch clears the time); a second call writes nothing.
pub fn started(node: &mut Node, id: &str) -> Result<Written, ApiError> {
    let Some(c) = node.containers.get_mut(id) else {
        return Err(ApiError::no_such_container(id));
    };
    if c.record.started.is_some() {
        return Ok(Written::nothing(subject(node, id, "recording the start")?));
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

/// No change to record: a success at once, for callers that wait on a write either way.
pub fn unchanged(node: &Node, id: &str) -> Result<Written, ApiError> {
    Ok(Written::nothing(subject(node, id, "nothing")?))
}

/// An operator stops or kills it: its restart policy holds off (as Docker's does) until
/// it is started again. Only containers with a restart policy record it.
pub fn stopped_by_operator(node: &mut Node, id: &str) -> Result<Written, ApiError> {
    const WHAT: &str = "recording an operator's stop";
    let Some(c) = node.containers.get_mut(id) else {
        return Err(ApiError::no_such_container(id));
    };
    if c.record.task.restart == berth_runtime::task::RestartPolicy::No {
        return Ok(Written::nothing(subject(node, id, WHAT)?));
    }
    c.restart_pending = false;
    if c.record.stopped_by_operator {
        return Ok(Written::nothing(subject(node, id, WHAT)?));
    }
    c.record.stopped_by_operator = true;
    persist(node, id, WHAT)
}
