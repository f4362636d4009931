//! `pod stop` (TERM, then KILL after the grace period; nothing restarts afterwards),
//! `pod rm` and the removal of a pod caught half-started by an agent crash (both through
//! `teardown.rs`).

use std::time::Duration;

use berth_runtime::state::Status;
use nix::sys::signal::Signal;

use super::teardown::After;
use super::{members, PodPhase};
use crate::agent::error::ApiError;
use crate::agent::node::{Action, Node, Reply};

/// Stops every container; the reply comes once all have exited.
pub fn stop(node: &mut Node, key: &str, timeout: Duration, reply: Reply<()>) {
    let id = match super::resolve(node, key).and_then(|id| {
        refuse_while_busy(node, &id, key)?;
        Ok(id)
    }) {
        Ok(id) => id,
        Err(e) => {
            let _ = reply.send(Err(e));
            return;
        }
    };
    let mut waits = Vec::new();
    for cid in members(node, &id) {
        if let Some(c) = node.containers.get(&cid) {
            if c.status() != Status::Stopped {
                // A member that ended meanwhile has nothing to signal; its write is
                // journaled if it fails.
                if let Ok(written) = crate::agent::kill::kill(node, &cid, Signal::SIGTERM) {
                    written.reported();
                }
            }
        }
        if let Some(c) = node.containers.get(&cid) {
            waits.push((cid, c.exit.subscribe()));
        }
    }
    let Some(phase) = node.pods.get(&id).map(|p| p.record.phase) else {
        return;
    };
    let recorded = if matches!(phase, PodPhase::Starting | PodPhase::Running) {
        match super::phase::advance(node, &id, PodPhase::Stopped, None) {
            Ok(written) => Some(written),
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        }
    } else {
        None
    };
    let tx = node.tx.clone();
    tokio::spawn(async move {
        // The caller hears of a stop that could not be written (it stops all the same).
        let recorded = match recorded {
            Some(written) => written.result().await,
            None => Ok(()),
        };
        for (cid, mut exit) in waits {
            let exited = tokio::time::timeout(timeout, async {
                exit.wait_for(|e| e.is_some()).await.is_ok()
            })
            .await;
            if exited.is_err() {
                let (r, rx) = tokio::sync::oneshot::channel();
                let _ = tx
                    .send(Action::Kill {
                        id: cid,
                        signal: Signal::SIGKILL,
                        all: true,
                        reply: r,
                    })
                    .await;
                let _ = rx.await;
                let _ = tokio::time::timeout(Duration::from_secs(10), async {
                    exit.wait_for(|e| e.is_some()).await.is_ok()
                })
                .await;
            }
        }
        let _ = reply.send(recorded);
    });
}

/// Removes a pod (`force`: running containers too); `reply` is answered once everything
/// is gone (the release runs off the owner task, see `teardown.rs`).
pub fn remove(node: &mut Node, key: &str, force: bool, reply: Reply<()>) {
    let checked = super::resolve(node, key).and_then(|id| {
        refuse_while_busy(node, &id, key)?;
        let running = members(node, &id).iter().any(|cid| {
            node.containers
                .get(cid)
                .is_some_and(|c| c.status() != Status::Stopped)
        });
        if running && !force {
            return Err(ApiError::conflict(format!(
                "pod {key} has running containers: stop it first, or use -f"
            )));
        }
        Ok(id)
    });
    match checked {
        Ok(id) => {
            let after = After::Remove {
                key: key.to_string(),
                reply,
            };
            super::teardown::start(node, &id, after)
        }
        Err(e) => {
            let _ = reply.send(Err(e));
        }
    }
}

/// A pod whose sandbox is being made or released by a task cannot be stopped or removed
/// until the task reports (at most the plugins' timeouts).
fn refuse_while_busy(node: &Node, id: &str, key: &str) -> Result<(), ApiError> {
    if let Some(what) = node.pods.get(id).and_then(|p| p.busy) {
        return Err(ApiError::conflict(format!(
            "pod {key} is {what}; retry in a moment"
        )));
    }
    Ok(())
}

/// A pod found half-started at agent start: removed, never left half.
pub fn abandon(node: &mut Node, id: &str) {
    let name = node
        .pods
        .get(id)
        .map(|p| p.record.name.clone())
        .unwrap_or_default();
    tracing::warn!(pod = %name, "removing a pod the agent was starting when it stopped");
    let why = "agent stopped while starting the pod".to_string();
    match super::phase::advance(node, id, PodPhase::Failed, Some(why)) {
        // Nobody waits on the write; a failure is journaled and logged.
        Ok(written) => written.reported(),
        Err(e) => {
            tracing::error!(pod = %name, error = %e.message, "recording an abandoned start");
        }
    }
    super::teardown::start(node, id, After::Abandon);
}
