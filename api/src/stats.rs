//! Resource usage of a container or pod cgroup, as `GET /v1/containers/{id}/stats` answers.

use serde::{Deserialize, Serialize};

/// Usage of a container, as `berth stats` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// CPU time in nanoseconds (user + system).
    pub cpu_usage_ns: u64,
    /// User CPU time in nanoseconds.
    pub cpu_user_ns: u64,
    /// System CPU time in nanoseconds.
    pub cpu_system_ns: u64,
    /// Enforcement periods elapsed.
    pub cpu_periods: u64,
    /// Periods in which the cgroup was throttled.
    pub cpu_throttled_periods: u64,
    /// Total time throttled, nanoseconds.
    pub cpu_throttled_ns: u64,
    /// Memory in use, bytes (including page cache).
    pub memory_usage: u64,
    /// Memory limit, bytes (the kernel's "unlimited" is a huge number).
    pub memory_limit: u64,
    /// Page cache, bytes.
    pub memory_cache: u64,
    /// Peak usage, bytes (v1 only; 0 where unknown).
    pub memory_max_usage: u64,
    /// Tasks in the cgroup.
    pub pids_current: u64,
    /// Task limit (0 = none).
    pub pids_limit: u64,
    /// OOM kills inside the cgroup.
    pub oom_kills: u64,
    /// Disk its writable layer and logs take (and its budget), as last measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskUse>,
}

/// A task's disk use: its writable layer and logs (a pod: its `emptyDir` volumes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskUse {
    /// Bytes in use, as last measured (0 before the first measurement).
    pub used: u64,
    /// Its budget (`--storage-opt size`, `ephemeral-storage`), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// How the budget holds: `project-quota` (the kernel refuses writes past it) or
    /// `measured` (the agent walks its dirs every `disk_check_interval` and evicts it with
    /// the reason `disk-limit`).
    pub enforcement: String,
}
