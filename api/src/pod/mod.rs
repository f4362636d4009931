//! Pod specs as a kubelet user writes them (JSON or YAML), checked field by field, and the
//! QoS classes. The runtime turns a spec into a plan (one task spec per container).
//!
//! ```yaml
//! name: web
//! restartPolicy: Always            # Always | OnFailure | Never
//! shareProcessNamespace: false
//! volumes:
//!   - {name: shared, emptyDir: {}}                       # dir under the pod's sandbox
//!   - {name: cache, emptyDir: {medium: Memory, sizeLimit: 64Mi}}   # tmpfs
//!   - {name: conf, hostPath: {path: /etc/app}}
//! initContainers: [...]            # same fields as containers; run in order first
//! containers:
//!   - name: httpd
//!     image: busybox
//!     command: [httpd]             # replaces the image's Entrypoint
//!     args: [-f, -p, "8080"]       # replaces the image's Cmd
//!     env: [{name: A, value: b}]
//!     workingDir: /www
//!     user: "1000:1000"
//!     resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {cpu: "1", memory: 128Mi}}
//!     volumeMounts: [{name: shared, mountPath: /www, readOnly: false}]
//!     livenessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 5, failureThreshold: 3}
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::task::Resources;

mod quantity;

pub use quantity::{parse_cpu, parse_memory};

/// A pod spec error naming the field (`containers[1].resources.limits.cpu`).
#[derive(Debug, thiserror::Error)]
#[error("invalid pod spec: {field}: {reason}")]
pub struct PodSpecError {
    /// Field path.
    pub field: String,
    /// Why.
    pub reason: String,
}

/// A [`PodSpecError`] for `field`.
pub fn bad(field: impl Into<String>, reason: impl Into<String>) -> PodSpecError {
    PodSpecError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// When the agent restarts a container of the pod that ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    /// Whatever the exit code.
    #[default]
    Always,
    /// On a non-zero exit (or a kill).
    OnFailure,
    /// Never.
    Never,
}

impl RestartPolicy {
    /// Whether an exit with this code is restarted.
    pub fn restarts(self, exit_code: i32) -> bool {
        match self {
            Self::Always => true,
            Self::OnFailure => exit_code != 0,
            Self::Never => false,
        }
    }
}

/// A pod spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSpec {
    /// Unique name on the node.
    pub name: String,
    /// Labels (`berth.io/…` ones are set by the master for the pods it assigns).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Host name of the pod's UTS namespace (default: the pod name).
    #[serde(default)]
    pub hostname: Option<String>,
    /// Restart policy of every container.
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// One PID namespace for the pod, with Berth's init as PID 1.
    #[serde(default)]
    pub share_process_namespace: bool,
    /// Use the host's network namespace (no CNI network).
    #[serde(default)]
    pub host_network: bool,
    /// Berth: the CNI network to attach the pod to, or `none` (loopback only); default:
    /// the agent's default network.
    #[serde(default)]
    pub network: Option<String>,
    /// Berth: the pod runs on the node's measured slack, in the revocable tier (QoS class
    /// `revocable`), admitted against the revocable estimate and reclaimed first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revocable: bool,
    /// Seconds between SIGTERM and SIGKILL when the pod is stopped for being no longer
    /// assigned (the kubelet's field; default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<u64>,
    /// Berth: CPUs every container of the pod may run on (`0-2,4`), as `--cpuset-cpus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset_cpus: Option<String>,
    /// `false`: the pod gets a user namespace of its own on a range of host ids that its
    /// containers share (KEP-127); unset: the agent's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_users: Option<bool>,
    /// Pod volumes.
    #[serde(default)]
    pub volumes: Vec<PodVolume>,
    /// Run one after another, each to a zero exit, before the containers start.
    #[serde(default)]
    pub init_containers: Vec<PodContainer>,
    /// The containers.
    pub containers: Vec<PodContainer>,
}

/// A pod volume: exactly one source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodVolume {
    /// Name the mounts refer to.
    pub name: String,
    /// A fresh dir (or tmpfs with `medium: Memory`) living as long as the pod.
    #[serde(default)]
    pub empty_dir: Option<EmptyDir>,
    /// A host path.
    #[serde(default)]
    pub host_path: Option<HostPath>,
}

/// `emptyDir`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmptyDir {
    /// `Memory` for a tmpfs.
    #[serde(default)]
    pub medium: Option<String>,
    /// tmpfs size.
    #[serde(default)]
    pub size_limit: Option<Quantity>,
}

/// `hostPath`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostPath {
    /// Absolute, existing path.
    pub path: PathBuf,
}

/// A quantity as YAML gives it: a number or a string (`100m`, `64Mi`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Quantity {
    /// `1`, `0.5`.
    Number(f64),
    /// `100m`, `1Gi`.
    Text(String),
}

impl std::fmt::Display for Quantity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Text(t) => f.write_str(t),
        }
    }
}

/// One container of a pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodContainer {
    /// Name, unique in the pod.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Replaces the image's Entrypoint.
    #[serde(default)]
    pub command: Vec<String>,
    /// Replaces the image's Cmd.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment.
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// Working directory.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// `uid[:gid]` or `name[:group]`.
    #[serde(default)]
    pub user: Option<String>,
    /// Requests and limits.
    #[serde(default)]
    pub resources: ResourceRequirements,
    /// Pod volumes mounted here.
    #[serde(default)]
    pub volume_mounts: Vec<VolumeMount>,
    /// Liveness probe; failing, the container is killed and the restart policy applies.
    #[serde(default)]
    pub liveness_probe: Option<ProbeSpec>,
    /// Ports; those with a `hostPort` are published on the host.
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
}

/// A container port (`ports[]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerPort {
    /// Port the container listens on.
    pub container_port: u16,
    /// Publish it on this host port.
    #[serde(default)]
    pub host_port: Option<u16>,
    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(default)]
    pub protocol: Option<String>,
    /// Host address to publish on (default: every address).
    #[serde(default, rename = "hostIP")]
    pub host_ip: Option<String>,
    /// A name for the port.
    #[serde(default)]
    pub name: Option<String>,
}

/// `{name, value}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    /// Name.
    pub name: String,
    /// Value.
    #[serde(default)]
    pub value: String,
}

/// `resources`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceRequirements {
    /// What the scheduler and the admission count.
    #[serde(default)]
    pub requests: ResourceList,
    /// Hard caps.
    #[serde(default)]
    pub limits: ResourceList,
}

/// `{cpu, memory}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceList {
    /// CPUs (`500m`, `2`).
    #[serde(default)]
    pub cpu: Option<Quantity>,
    /// Bytes (`64Mi`, `1G`).
    #[serde(default)]
    pub memory: Option<Quantity>,
    /// Bytes of disk: the container's writable layer and logs (and, summed over the pod's
    /// containers, its `emptyDir` volumes).
    #[serde(default, rename = "ephemeral-storage")]
    pub ephemeral_storage: Option<Quantity>,
}

/// `volumeMounts[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeMount {
    /// A volume of the pod.
    pub name: String,
    /// Absolute path in the container.
    pub mount_path: PathBuf,
    /// Read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// A kubelet probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbeSpec {
    /// `{command: [...]}`.
    #[serde(default)]
    pub exec: Option<ExecAction>,
    /// `{path, port}`.
    #[serde(default)]
    pub http_get: Option<HttpGetAction>,
    /// `{port}`.
    #[serde(default)]
    pub tcp_socket: Option<TcpSocketAction>,
    /// Start period.
    #[serde(default)]
    pub initial_delay_seconds: f64,
    /// Interval (default 10).
    #[serde(default)]
    pub period_seconds: Option<f64>,
    /// Timeout (default 1).
    #[serde(default)]
    pub timeout_seconds: Option<f64>,
    /// Failures in a row (default 3).
    #[serde(default)]
    pub failure_threshold: Option<u32>,
}

/// `exec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecAction {
    /// Argument vector.
    pub command: Vec<String>,
}

/// `httpGet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpGetAction {
    /// Path (default `/`).
    #[serde(default)]
    pub path: Option<String>,
    /// Port.
    pub port: u16,
}

/// `tcpSocket`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpSocketAction {
    /// Port.
    pub port: u16,
}

/// What makes a container part of a pod: the namespaces it joins and its cgroup parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodMember {
    /// Pod id.
    pub pod_id: String,
    /// Pod name.
    pub pod_name: String,
    /// Container name in the pod.
    pub container: String,
    /// Dir with the pod's `net`, `ipc`, `uts` (and `pid`) namespace files.
    pub namespaces: PathBuf,
    /// Join the pod's PID namespace.
    pub share_pid: bool,
    /// The pod's cgroup; the container's is a child of it.
    pub cgroup_parent: PathBuf,
    /// An init container.
    pub init: bool,
    /// Restarts before this instance.
    pub restart_count: u32,
    /// The pod's id range: the container joins the pod's user namespace (`<namespaces>/user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idmap: Option<crate::userns::IdMap>,
}

/// Quality of service, fixed at admission as the kubelet does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum QosClass {
    /// Every container has cpu and memory limits equal to its requests.
    Guaranteed,
    /// Some requests or limits.
    Burstable,
    /// None at all: runs on slack, lowest CPU weight.
    BestEffort,
    /// Asked for it (`--revocable`, `revocable: true`): admitted against the node's
    /// measured slack, lowest CPU weight, reclaimed first (throttled, frozen, revoked).
    Revocable,
}

impl QosClass {
    /// The cgroup dir below the agent's root.
    pub fn dir(self) -> &'static str {
        match self {
            Self::Guaranteed => "guaranteed",
            Self::Burstable => "burstable",
            Self::BestEffort => "besteffort",
            Self::Revocable => "revocable",
        }
    }

    /// Class of a single container: revocable if it asked, else from its limits.
    pub fn of_spec(task: &crate::task::TaskSpec) -> Self {
        if task.revocable {
            Self::Revocable
        } else {
            Self::of_task(&task.resources)
        }
    }

    /// Class of a single container from Docker options: limits are its requests.
    pub fn of_task(r: &Resources) -> Self {
        if r.cpus.is_some() && r.memory.is_some() {
            Self::Guaranteed
        } else if r.cpus.is_some()
            || r.memory.is_some()
            || r.cpu_shares.is_some()
            || r.memory_reservation.is_some()
        {
            Self::Burstable
        } else {
            Self::BestEffort
        }
    }
}

impl std::fmt::Display for QosClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.dir())
    }
}

/// Where a pod is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PodPhase {
    /// Sandbox made, init containers running or app containers being created.
    Starting,
    /// Every app container started (some may be restarting).
    Running,
    /// Every app container ended for good, all with code 0.
    Succeeded,
    /// Every app container ended for good, one with a failure.
    Failed,
    /// Stopped by the operator: nothing is restarted.
    Stopped,
}

impl std::fmt::Display for PodPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        f.write_str(&s)
    }
}

/// A pod as `pod ls` and `pod inspect` show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodView {
    /// 64 hex digits.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Where it is in its life.
    pub phase: PodPhase,
    /// Why it failed.
    #[serde(default)]
    pub message: Option<String>,
    /// Fixed at admission.
    pub qos: QosClass,
    /// Summed requests: millicpus.
    pub requests_millicpu: u64,
    /// Summed requests: bytes.
    pub requests_memory: u64,
    /// RFC 3339.
    pub created: String,
    /// The pod's cgroup, absolute.
    pub cgroup_path: String,
    /// PID 1 of a shared PID namespace.
    #[serde(default)]
    pub pod_init_pid: Option<i32>,
    /// Its CNI attachment (IPs, published ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::network::AttachmentView>,
    /// The id mapping its containers share, when it has a user namespace of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idmap: Option<crate::userns::IdMap>,
    /// Disk use and budget of its `emptyDir` volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<crate::stats::DiskUse>,
    /// As submitted.
    pub spec: PodSpec,
    /// Its container slots by name.
    pub members: std::collections::BTreeMap<String, MemberView>,
    /// Its current containers, oldest first.
    pub containers: Vec<crate::ContainerView>,
}

/// One container slot of a pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberView {
    /// Current container's id.
    #[serde(default)]
    pub id: Option<String>,
    /// An init container.
    #[serde(default)]
    pub init: bool,
    /// An init container that completed.
    #[serde(default)]
    pub done: bool,
    /// Times restarted.
    #[serde(default)]
    pub restart_count: u32,
    /// How the previous instance ended.
    #[serde(default)]
    pub last_exit: Option<crate::ExitView>,
}

/// Parses a spec from JSON or YAML text.
pub fn parse(text: &str) -> Result<PodSpec, PodSpecError> {
    // YAML is a superset of JSON: one parser for both, with its line and column.
    yaml_serde::from_str(text).map_err(|e| bad("spec", e.to_string()))
}
