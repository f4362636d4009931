//! A pod's phase, and the one function that changes it.
//!
//! ```text
//! starting ──▶ running ──▶ succeeded | failed | stopped
//!    └──▶ failed | stopped
//! ```
//!
//! A finished pod (succeeded, failed, stopped) keeps its phase until it is removed.
//! ```text
//! ```
//!
//! Each move is checked against this graph (as youki's `ContainerStatus::can_*`), written
//! to `pod.json`, and announced as a `pod` event named after the new phase (`started`,
//! `succeeded`, `failed` with its message, `stopped`). A refused move is an error for the
//! caller; a failed write is an error for a caller that waits on it, an `error` event and in
//! the log, and the phase in memory stays the new one (the next write catches the disk up).

use super::{persist, PodPhase};
use crate::agent::error::ApiError;
use crate::agent::events::Event;
use crate::agent::node::Node;
use crate::agent::persist::Written;

/// Whether a pod in phase `from` may move to `to`.
pub fn can_move(from: PodPhase, to: PodPhase) -> bool {
    use PodPhase::{Failed, Running, Starting, Stopped, Succeeded};
    matches!(
        (from, to),
        (Starting, Running | Failed | Stopped) | (Running, Succeeded | Failed | Stopped)
    )
}

/// The event a move to `to` is announced with.
fn action(to: PodPhase) -> &'static str {
    match to {
        PodPhase::Starting => "starting",
        PodPhase::Running => "started",
        PodPhase::Succeeded => "succeeded",
        PodPhase::Failed => "failed",
        PodPhase::Stopped => "stopped",
    }
}

/// Moves pod `id` to `to` (`message` says why a pod failed): checked, queued to be
/// written, announced. The returned [`Written`] is the write's outcome for a caller that
/// answers a client; a failure is journaled and logged either way.
pub fn advance(
    node: &mut Node,
    id: &str,
    to: PodPhase,
    message: Option<String>,
) -> Result<Written, ApiError> {
    let Some(pod) = node.pods.get_mut(id) else {
        return Err(ApiError::no_such_pod(id));
    };
    let from = pod.record.phase;
    if !can_move(from, to) {
        return Err(ApiError::conflict(format!(
            "pod {} is {from}: it cannot become {to}",
            pod.record.name
        ))
        .about(&pod.record.name));
    }
    pod.record.phase = to;
    if message.is_some() {
        pod.record.message.clone_from(&message);
    }
    let name = pod.record.name.clone();
    let written = persist(node, id, &format!("recording the pod's move to {to}"))?;
    let mut event = Event::new("pod", action(to), id, &name);
    if let Some(m) = message {
        event = event.with("message", m);
    }
    node.emit(event);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_lifecycle_graph_is_allowed() {
        use PodPhase::*;
        let all = [Starting, Running, Succeeded, Failed, Stopped];
        let allowed: Vec<(PodPhase, PodPhase)> = all
            .iter()
            .flat_map(|&a| all.iter().map(move |&b| (a, b)))
            .filter(|&(a, b)| can_move(a, b))
            .collect();
        assert_eq!(
            allowed,
            vec![
                (Starting, Running),
                (Starting, Failed),
                (Starting, Stopped),
                (Running, Succeeded),
                (Running, Failed),
                (Running, Stopped),
            ]
        );
    }
}
