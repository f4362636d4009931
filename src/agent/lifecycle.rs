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
//! the exit and the processes' liveness ([`Container::status`]); the moves that
//! change the record are here.

use berth_runtime::health::HealthState;
use berth_runtime::state::{read_json, ContainerDir, ContainerRecord, ExitRecord, Status};
use tokio::sync::watch;

use super::error::ApiError;
use super::events::Event;
use super::node::{AfterRemove, Node, Then};
use super::persist::{Subject, Written};
use crate::api::ContainerView;

/// One container as the owner tracks it.
#[derive(Debug)]
pub struct Container {
    /// On-disk record: changed only here, by the moves below.
    record: ContainerRecord,
    /// Its dir.
    pub dir: ContainerDir,
    /// Exit, once known.
    pub exit: watch::Sender<Option<ExitRecord>>,
    /// Health check state (in memory: checks start over with the agent).
    pub health: Option<berth_runtime::health::HealthState>,
    /// Its restart policy will start it again after a back-off.
    pub restart_pending: bool,
    /// Restarts in a row without a 10 s run (the back-off's exponent).
    pub backoff_step: u32,
    /// Work on it is in flight (being started, relaunched): what, for refusals.
    pub busy: Option<&'static str>,
    /// Being removed: who waits for it.
    pub removing: Option<Vec<AfterRemove>>,
    /// Its exit's release (unmount, cgroup removal) is in flight: work that must not race
    /// it (a removal) waits here until it is done.
    pub releasing: Option<Vec<Then>>,
}

impl Container {
    /// A container known from `record`, in `dir`, whose exit (if any) is `exit`.
    pub fn new(
        record: ContainerRecord,
        dir: ContainerDir,
        exit: watch::Sender<Option<ExitRecord>>,
    ) -> Self {
        Container {
            health: record.task.health.as_ref().map(|_| HealthState::default()),
            record,
            dir,
            exit,
            restart_pending: false,
            backoff_step: 0,
            busy: None,
            removing: None,
            releasing: None,
        }
    }

    /// Its QoS tier (see [`qos_of`]).
    pub fn qos(&self) -> Option<berth_api::pod::QosClass> {
        qos_of(&self.record)
    }

    /// The reason its exit reads: `revoked` when reclaim killed it, the eviction's
    /// (`disk-limit`) when the agent evicted it, else the monitor's.
    pub fn exit_reason<'a>(&'a self, exit: &'a ExitRecord) -> &'a str {
        if self.record.revoked && exit.signal.is_some() {
            "revoked"
        } else if let Some(reason) = self
            .record
            .evicted
            .as_deref()
            .filter(|_| exit.signal.is_some())
        {
            reason
        } else {
            exit.reason.as_str()
        }
    }

    /// Its on-disk record, read-only: every change is one of this module's moves.
    pub fn record(&self) -> &ContainerRecord {
        &self.record
    }

    /// After an agent restart: whether a restart is due, as Docker's daemon decides it
    /// (a restart that was due, its back-off interrupted; an `always` container an operator
    /// stopped starts again, an `unless-stopped` one stays stopped). Marks it pending.
    pub fn restart_due_on_recovery(&mut self, exit: &ExitRecord) -> bool {
        use berth_runtime::task::RestartPolicy;
        let r = &mut self.record;
        if r.task.restart == RestartPolicy::Always && r.stopped_by_operator {
            r.stopped_by_operator = false;
        }
        let due = r
            .task
            .restart
            .restarts(exit.exit_code, r.restart_count, r.stopped_by_operator);
        self.restart_pending |= due;
        due
    }

    /// The record of its next run (relaunch): no processes, not started; a policy restart
    /// counts, an operator's start clears the operator's stop.
    pub fn next_run(&self, by_policy: bool) -> ContainerRecord {
        let mut record = self.record.clone();
        record.init = None;
        record.shim = None;
        record.started = None;
        if by_policy {
            record.restart_count += 1;
        } else {
            record.stopped_by_operator = false;
        }
        record
    }

    /// The next run's supervisor is up with `record`: it replaces the last run's (an
    /// operator's stop made meanwhile still holds), with a fresh exit and health state.
    pub fn relaunched(&mut self, record: ContainerRecord, by_policy: bool) {
        let stopped = self.record.stopped_by_operator && by_policy;
        self.record = record;
        self.record.stopped_by_operator |= stopped;
        // Waiters of the last run keep its exit; new ones wait for this run.
        self.exit = watch::channel(None).0;
        self.health = self.record.task.health.as_ref().map(|_| Default::default());
        // A pending policy restart is moot once it runs (e.g. an operator's `start`).
        self.restart_pending = false;
    }

    /// The exit, once known: recorded by the owner, or already in `exit.json` (the
    /// supervisor writes it before telling attached clients, and before the owner hears).
    pub fn known_exit(&self) -> Option<ExitRecord> {
        if let Some(e) = self.exit.borrow().clone() {
            return Some(e);
        }
        if self.record.init.is_some_and(|p| p.is_alive()) {
            return None;
        }
        read_json(&self.dir.exit()).ok().flatten()
    }

    /// Status from the record, the exit and the processes' liveness.
    pub fn status(&self) -> Status {
        self.status_with(self.known_exit().is_some())
    }

    fn status_with(&self, exited: bool) -> Status {
        if exited {
            return Status::Stopped;
        }
        let init_alive = self.record.init.is_some_and(|p| p.is_alive());
        // The init is gone but its supervisor is still recording the exit: not "stopped"
        // until the exit is known, so a reader always finds its code.
        let shim_alive = self.record.shim.is_some_and(|p| p.is_alive());
        if !init_alive && !shim_alive {
            return Status::Stopped;
        }
        if self.record.started.is_some() {
            Status::Running
        } else {
            Status::Created
        }
    }

    /// The API view; `reclaim` is the revocable tier's reclaim state (`none`, `throttle`,
    /// `memory-high`, `freeze`), shown on a running revocable container.
    pub fn info(&self, reclaim: &str) -> ContainerView {
        let exit = self.known_exit();
        let status = self.status_with(exit.is_some());
        let r = &self.record;
        ContainerView {
            id: r.id.clone(),
            name: r.name.clone(),
            status,
            pid: match status {
                Status::Stopped => None,
                _ => r.init.map(|p| p.pid),
            },
            image: r.image.clone(),
            image_id: r.image_id.clone(),
            created: r.created.clone(),
            started: r.started.clone(),
            spec: r.task.clone(),
            bundle: self.dir.path().display().to_string(),
            cgroup_path: r.cgroup_path.display().to_string(),
            exposed_ports: r.exposed_ports.clone(),
            restart_count: r.restart_count,
            restarting: self.restart_pending,
            stopped_by_operator: r.stopped_by_operator,
            network: r.network.as_ref().map(|n| n.view()),
            exit: exit.map(|e| {
                let mut view = e.view();
                view.reason = self.exit_reason(&e).to_string();
                view
            }),
            health: self.health.clone(),
            qos: self.qos(),
            idmap: r.idmap,
            disk: None,
            reclaim: (r.task.revocable && status == Status::Running && reclaim != "none").then(
                || {
                    if reclaim == "freeze" {
                        "frozen"
                    } else {
                        reclaim
                    }
                    .to_string()
                },
            ),
        }
    }
}

/// A container's QoS tier: revocable if it asked; a pod member's is its pod's (the tier in
/// its cgroup path, `<root>/<tier>/<pod>/<ctr>`); a lone container's from its limits.
fn qos_of(r: &ContainerRecord) -> Option<berth_api::pod::QosClass> {
    use berth_api::pod::QosClass;
    if r.task.revocable {
        return Some(QosClass::Revocable);
    }
    if r.task.pod.is_none() {
        return Some(QosClass::of_task(&r.task.resources));
    }
    let tiers = [
        QosClass::Guaranteed,
        QosClass::Burstable,
        QosClass::BestEffort,
        QosClass::Revocable,
    ];
    r.cgroup_path.components().rev().find_map(|c| {
        let name = c.as_os_str().to_str()?;
        tiers.into_iter().find(|q| q.dir() == name)
    })
}

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

/// The agent evicts container `id` (`reason`: `disk-limit`): its exit reads the reason and
/// its restart policy holds off.
pub fn evicted(node: &mut Node, id: &str, reason: &str) -> Result<Written, ApiError> {
    const WHAT: &str = "recording an eviction";
    let Some(c) = node.containers.get_mut(id) else {
        return Err(ApiError::no_such_container(id));
    };
    if c.record.evicted.is_some() {
        return Ok(Written::nothing(subject(node, id, WHAT)?));
    }
    c.record.evicted = Some(reason.to_string());
    c.record.stopped_by_operator = true;
    c.restart_pending = false;
    persist(node, id, WHAT)
}

/// Revocable work the agent takes back: recorded before the kill, so its exit reads
/// `revoked` (also after a restart) and its restart policy holds off as after an
/// operator's stop.
pub fn revoked(node: &mut Node, id: &str) -> Result<Written, ApiError> {
    const WHAT: &str = "recording a revoke";
    let Some(c) = node.containers.get_mut(id) else {
        return Err(ApiError::no_such_container(id));
    };
    if c.record.revoked {
        return Ok(Written::nothing(subject(node, id, WHAT)?));
    }
    c.record.revoked = true;
    c.record.stopped_by_operator = true;
    c.restart_pending = false;
    persist(node, id, WHAT)
}
