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
}
