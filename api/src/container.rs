//! Containers on the wire: the view `ps`, `state` and `inspect` show (`GET /v1/containers`,
//! `GET /v1/containers/{id}`), how a process ended, and the verbs' requests and queries.

use serde::{Deserialize, Serialize};

use crate::health::HealthState;
use crate::network::AttachmentView;
use crate::task::TaskSpec;

/// Lifecycle state as `runc state` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, not started.
    Created,
    /// The init process runs.
    Running,
    /// It exited (or was never started and its supervisor died).
    Stopped,
}

/// A container as `ps`, `state` and `inspect` show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerView {
    /// 64 hex digits.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Lifecycle state.
    pub status: Status,
    /// Init pid while it runs.
    #[serde(default)]
    pub pid: Option<i32>,
    /// Canonical image reference.
    pub image: String,
    /// Image config digest (the image id).
    pub image_id: String,
    /// RFC 3339.
    pub created: String,
    /// RFC 3339, when it was last started.
    #[serde(default)]
    pub started: Option<String>,
    /// The request as submitted (a pod member's: as planned from the pod spec).
    pub spec: TaskSpec,
    /// The state dir (the OCI bundle).
    pub bundle: String,
    /// Its cgroup, absolute.
    pub cgroup_path: String,
    /// The image's `ExposedPorts` (`8080/tcp`).
    #[serde(default)]
    pub exposed_ports: Vec<String>,
    /// Times its restart policy started it again.
    #[serde(default)]
    pub restart_count: u32,
    /// Stopped, and its restart policy will start it again.
    #[serde(default)]
    pub restarting: bool,
    /// The operator stopped or killed it: its restart policy holds off.
    #[serde(default)]
    pub stopped_by_operator: bool,
    /// Its CNI attachment (a pod member: the pod's, shown on the pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<AttachmentView>,
    /// How it ended.
    #[serde(default)]
    pub exit: Option<ExitView>,
    /// Health check state, when it has a check.
    #[serde(default)]
    pub health: Option<HealthState>,
    /// Its QoS tier: `guaranteed`, `burstable`, `besteffort` or `revocable`.
    #[serde(default)]
    pub qos: Option<crate::pod::QosClass>,
    /// A revocable task's reclaim state while a step is in force: `throttle`,
    /// `memory-high` or `frozen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reclaim: Option<String>,
    /// Its user namespace's id mapping (container id 0 = host id `uid`), when it has one
    /// of its own (`--userns auto`, a pod with `hostUsers: false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idmap: Option<crate::userns::IdMap>,
    /// Its disk use and budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<crate::stats::DiskUse>,
}

impl ContainerView {
    /// Its pod's id, when it is a pod member.
    pub fn pod(&self) -> Option<&str> {
        self.spec.pod.as_ref().map(|m| m.pod_id.as_str())
    }
}

/// How a process ended (also the payload of the attach stream's `EXIT` frame).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitView {
    /// Exit code as a shell reports it: the status, or 128 + signal.
    pub exit_code: i32,
    /// Signal that killed it, if any.
    #[serde(default)]
    pub signal: Option<i32>,
    /// Killed by the kernel's OOM killer.
    #[serde(default)]
    pub oom_killed: bool,
    /// `exited`, `signaled`, `oom-killed`, `revoked`, `start-failed`, `not-found`.
    pub reason: String,
    /// RFC 3339.
    pub finished: String,
    /// Set when the process could not be started.
    #[serde(default)]
    pub error: Option<String>,
}

/// Answer of `POST /v1/containers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Created {
    /// Full id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Pid of the created (waiting) init.
    pub pid: i32,
}

/// `POST /v1/containers/{id}/exec`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Command and arguments.
    pub command: Vec<String>,
    /// Extra `KEY=VALUE`.
    #[serde(default)]
    pub env: Vec<String>,
    /// Terminal.
    #[serde(default)]
    pub tty: bool,
    /// Keep stdin open.
    #[serde(default)]
    pub stdin: bool,
    /// `uid[:gid]` or name.
    #[serde(default)]
    pub user: Option<String>,
    /// Working directory.
    #[serde(default)]
    pub workdir: Option<String>,
}

/// Answer of an exec creation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecCreated {
    /// Exec id (attach with `POST /v1/containers/{id}/exec/{exec_id}/attach`).
    pub exec_id: String,
}

/// `GET /v1/containers/{id}/top`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Top {
    /// Column names.
    pub titles: Vec<String>,
    /// One row per process.
    pub processes: Vec<Vec<String>>,
}

/// `GET /v1/containers/{id}/logs` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LogsQuery {
    /// Keep streaming until the container stops.
    #[serde(default)]
    pub follow: bool,
    /// Only the last N records.
    #[serde(default)]
    pub tail: Option<usize>,
}

/// `kill` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KillQuery {
    /// Signal name or number; default SIGTERM... as `runc kill` (SIGTERM).
    #[serde(default)]
    pub signal: Option<String>,
}

/// `stop` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StopQuery {
    /// Seconds between SIGTERM and SIGKILL (default 10).
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// `DELETE /v1/containers/{id}` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RemoveQuery {
    /// Kill it first if it runs.
    #[serde(default)]
    pub force: bool,
}

/// Parses `TERM`, `SIGTERM`, `sigkill`, `9`.
pub fn parse_signal(text: &str) -> Option<nix::sys::signal::Signal> {
    use std::str::FromStr;
    if let Ok(n) = text.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).ok();
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&name).ok()
}
