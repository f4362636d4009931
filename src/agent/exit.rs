//! Exits: noticing that a supervisor ended (its child-wait task, a pidfd for adopted ones,
//! or the periodic check), taking its exit record, reporting the event (with the time it
//! happened, also for exits missed while the agent was down), releasing the rootfs, and
//! handing pod containers to the restart policy.

use berth_runtime::state::{read_json, ExitRecord, STATE_VERSION};

use super::node::{Action, Node};

impl Node {
    /// Notices a dead supervisor the agent is not the parent of.
    pub(super) fn check_supervisor(&mut self, id: &str) {
        let Some(c) = self.containers.get(id) else {
            return;
        };
        if c.exit.borrow().is_some() {
            return;
        }
        let shim_alive = c.record().shim.is_some_and(|p| p.is_alive());
        let tx = self.tx.clone();
        let id = id.to_string();
        if !shim_alive {
            tokio::spawn(async move {
                let _ = tx.send(Action::ShimExited(id)).await;
            });
        }
    }

    /// Watches a supervisor the agent adopted (not its child) through a pidfd, so its end
    /// is noticed at once rather than at the next tick.
    pub(super) fn watch_adopted(&self, id: &str) {
        let Some(shim) = self.containers.get(id).and_then(|c| c.record().shim) else {
            return;
        };
        let Some(fd) = pidfd(shim) else {
            return;
        };
        let tx = self.tx.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            // SAFETY: `fd` is an OwnedFd moved into the AsyncFd: it stays open and the same
            // descriptor for the AsyncFd's whole life.
            let registered = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
            };
            if let Ok(afd) = registered {
                let _ = afd.readable().await;
            }
            let _ = tx.send(Action::ShimExited(id)).await;
        });
    }

    /// A supervisor is gone: take its exit record, release the rootfs, honour `--rm`.
    pub(super) fn on_shim_exit(&mut self, id: &str) {
        let Some(c) = self.containers.get_mut(id) else {
            return;
        };
        if c.exit.borrow().is_some() {
            return;
        }
        // A report from a stale check: the supervisor still works and will record the exit.
        if c.record().shim.is_some_and(|p| p.is_alive()) {
            return;
        }
        let exit = match read_json::<ExitRecord>(&c.dir.exit()) {
            Ok(Some(e)) => e,
            other => {
                if let Err(e) = other {
                    tracing::error!(error = %e, "unreadable exit record");
                }
                if c.record().init.is_some_and(|p| p.is_alive()) {
                    // The supervisor was killed but the container runs on, unsupervised;
                    // `rm -f` still kills and cleans it through its cgroup.
                    tracing::warn!(id, "supervisor died; the container runs unsupervised");
                    return;
                }
                ExitRecord {
                    version: STATE_VERSION,
                    exit_code: 255,
                    signal: None,
                    oom_killed: berth_runtime::cgroups::oom_kills(&c.record().cgroup_path) > 0,
                    reason: "supervisor-lost".into(),
                    finished: berth_runtime::state::now(),
                    error: Some("the supervisor died before recording the exit".into()),
                }
            }
        };
        tracing::info!(id, code = exit.exit_code, reason = %exit.reason, "container exited");
        // It ran, but ended before the attach that started it was recorded: its start
        // goes first.
        let ran = matches!(exit.reason.as_str(), "exited" | "signaled" | "oom-killed");
        if ran && c.record().started.is_none() {
            match super::lifecycle::started(self, id) {
                // Nobody waits on it; a failed write is journaled and logged.
                Ok(written) => written.reported(),
                Err(e) => tracing::debug!(id, error = %e.message, "start of an exited container"),
            }
        }
        let Some(c) = self.containers.get_mut(id) else {
            return;
        };
        let record = c.record().clone();
        let dir = c.dir.clone();
        c.exit.send_replace(Some(exit.clone()));
        c.releasing = Some(Vec::new());
        let pod = record.task.pod.as_ref().map(|m| m.pod_name.clone());
        // Killed by reclaim: the exit reads `revoked`, as the view says.
        let reason = c.exit_reason(&exit).to_string();
        let mut ev = super::events::Event::new("container", "exited", id, &record.name)
            .with("exitCode", exit.exit_code)
            .with("reason", &reason);
        // When it happened, also for an exit found after an agent restart.
        ev.time = exit.finished.clone();
        if let Some(sig) = exit.signal {
            ev = ev.with("signal", sig);
        }
        if let Some(p) = &pod {
            ev = ev.with("pod", p);
        }
        if exit.oom_killed {
            let mut oom = super::events::Event::new("container", "oom", id, &record.name);
            oom.time = exit.finished.clone();
            self.emit(oom);
        }
        self.emit(ev);
        // The rootfs and cgroup released off the owner; what follows (the pod's policy,
        // `--rm`, a restart) once they are, so a restart never races the unmount.
        let id = id.to_string();
        self.spawn_blocking(
            "releasing an exited container",
            move || {
                super::remove::release(&record, &dir);
                Ok(())
            },
            move |node, _| {
                let deferred = node
                    .containers
                    .get_mut(&id)
                    .and_then(|c| c.releasing.take())
                    .unwrap_or_default();
                for then in deferred {
                    (then.0)(node);
                }
                node.after_exit(&id, &exit, pod.is_some());
            },
        );
    }

    /// An exited container's rootfs is released: its pod's policy, `--rm`, or its own
    /// restart policy.
    fn after_exit(&mut self, id: &str, exit: &ExitRecord, in_pod: bool) {
        if in_pod {
            super::pod::on_container_exit(self, id, exit);
            return;
        }
        let Some(c) = self.containers.get(id) else {
            return;
        };
        if c.record().task.auto_remove {
            let id = id.to_string();
            super::remove::remove(self, &id.clone(), true, move |_, result| {
                if let Err(e) = result {
                    tracing::warn!(id, error = %e.message, "auto-remove failed");
                }
            });
            return;
        }
        super::relaunch::on_exit(self, id, exit);
    }
}

/// A pidfd of `p`, if it is still the same process (checked after opening, so a recycled
/// pid is never watched).
fn pidfd(p: berth_runtime::state::ProcessId) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, p.pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this descriptor to us; nobody else owns it.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    p.is_alive().then_some(fd)
}
