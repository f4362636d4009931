//! The node's resource model (`GET /v1/node`, `berth node`): what the machine has, what is
//! kept for the system, what each QoS tier was promised, what is measured in use, what
//! revocable work may have (the estimate), the pressure and the reclaim state.
//!
//! CPU figures are millicores, memory figures bytes.

use serde::{Deserialize, Serialize};

/// One resource's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceView {
    /// The machine's (or what the operator declared with `capacity_*`).
    pub capacity: f64,
    /// Kept for the system (`system_reserved_*`).
    pub system_reserved: f64,
    /// Capacity minus the system reserve: what guaranteed and burstable work is admitted
    /// against.
    pub allocatable: f64,
    /// Requests of running work per QoS tier.
    pub allocated: TierFigures,
    /// Measured use of the whole node, smoothed (exponential, ~10 s).
    pub used: f64,
    /// Measured use per tier, last sample.
    pub used_by_tier: TierFigures,
    /// Use outside every task (the system, the agent), at least the system reserve.
    pub system: f64,
    /// Σ reservations (the estimator's) of guaranteed, burstable and best-effort tasks.
    pub reserved: f64,
    /// What revocable work may have: capacity × threshold − reservations − system, never
    /// below zero (zero while the estimator warms up).
    pub revocable: f64,
    /// The revocable estimate minus the requests of revocable work already admitted.
    pub revocable_free: f64,
}

/// A figure per QoS tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TierFigures {
    /// Guaranteed work.
    pub guaranteed: f64,
    /// Burstable work.
    pub burstable: f64,
    /// Best-effort work.
    pub besteffort: f64,
    /// Revocable work.
    pub revocable: f64,
}

/// Pressure stall information of one resource: the share of the last 10 s (percent) some
/// or all tasks waited on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PressureView {
    /// Some tasks stalled (`some avg10`).
    pub some_avg10: f64,
    /// All tasks stalled (`full avg10`; 0 for CPU on kernels that do not report it).
    pub full_avg10: f64,
}

/// The node's pressure, where the kernel has PSI: node-wide (`/proc/pressure/*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct NodePressure {
    /// CPU.
    pub cpu: PressureView,
    /// Memory.
    pub memory: PressureView,
    /// IO.
    pub io: PressureView,
}

/// The reclaim controller's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReclaimView {
    /// `none`, `throttle`, `memory-high` or `freeze`: the highest step in force.
    pub state: String,
    /// The revocable tier's CPU cap (millicores), when throttled.
    #[serde(default)]
    pub cpu_cap: Option<f64>,
    /// Its memory push-back (bytes), at `memory-high` and above.
    #[serde(default)]
    pub memory_high: Option<f64>,
    /// It is frozen.
    #[serde(default)]
    pub frozen: bool,
    /// Steps taken since the agent started, per step.
    pub steps: std::collections::BTreeMap<String, u64>,
    /// Revocable tasks revoked since the agent started.
    pub revoked: u64,
}

/// `GET /v1/node`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    /// Host name.
    pub hostname: String,
    /// Kernel release.
    pub kernel: String,
    /// `v1` or `v2`.
    pub cgroup_version: String,
    /// CPUs containers may run on (the kernel's list syntax; reserved CPUs left out).
    pub cpuset: String,
    /// CPUs kept out of every container (`reserved_cpus`), if any.
    #[serde(default)]
    pub reserved_cpus: Option<String>,
    /// CPU, millicores.
    pub cpu: ResourceView,
    /// Memory, bytes.
    pub memory: ResourceView,
    /// PSI, where the kernel has it: node-wide (`/proc/pressure/*`).
    #[serde(default)]
    pub pressure: Option<NodePressure>,
    /// On cgroup v2, each QoS tier's own PSI (`<tier>/{cpu,memory,io}.pressure`), by tier.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub pressure_by_tier: std::collections::BTreeMap<String, NodePressure>,
    /// The estimator has run for its warm-up (before that, no revocable estimate).
    pub warmed_up: bool,
    /// Seconds of warm-up left.
    pub warmup_left_secs: f64,
    /// Samples taken since the agent started.
    pub samples: u64,
    /// Reclaim.
    pub reclaim: ReclaimView,
    /// Running tasks per tier.
    pub tasks: TierCounts,
    /// The cluster this node is a member of (`--master`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<MemberView>,
    /// Disk use per task and how budgets hold.
    #[serde(default)]
    pub disk: NodeDiskView,
    /// User namespace ranges: held and in the pool.
    #[serde(default)]
    pub userns: UsernsView,
}

/// Disk use per task (`berth node`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeDiskView {
    /// `project-quota` or `measured` (see [`crate::stats::DiskUse::enforcement`]).
    pub enforcement: String,
    /// Why project quotas are not used, when they are not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_unavailable: Option<String>,
    /// Seconds between measurements.
    pub interval_secs: f64,
    /// Per task (containers outside pods, and pods), largest first.
    pub tasks: Vec<TaskDiskView>,
}

/// One task's disk use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskDiskView {
    /// `container` or `pod`.
    pub kind: String,
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Bytes in use.
    pub used: u64,
    /// Budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

/// The user namespace pool (`berth node`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsernsView {
    /// Ranges held by tasks.
    pub held: usize,
    /// Ranges in the pool.
    pub ranges: u32,
    /// First host uid of the pool.
    pub first_uid: u32,
    /// `--userns` of tasks that do not say.
    pub default: String,
}

/// The agent as a cluster member.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberView {
    /// Its node name in the cluster.
    pub node_name: String,
    /// The master it follows now (the leader, once one answered).
    pub master: String,
    /// Every master it knows.
    pub masters: Vec<String>,
    /// Whether the last heartbeat was answered.
    pub connected: bool,
}

/// A count per QoS tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TierCounts {
    /// Guaranteed.
    pub guaranteed: u64,
    /// Burstable.
    pub burstable: u64,
    /// Best-effort.
    pub besteffort: u64,
    /// Revocable.
    pub revocable: u64,
}
