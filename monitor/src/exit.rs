//! `exit.json` (and `exec/<id>.json`): how a process ended, written atomically by its
//! monitor once (version [`EXIT_VERSION`]; a file of another version is refused by readers).
//!
//! ```json
//! {"version":1,"exit_code":137,"signal":9,"oom_killed":false,"reason":"signaled",
//!  "finished":"2026-12-03T10:00:00.123456789Z","error":null}
//! ```

use serde::{Deserialize, Serialize};

/// Version of exit records (the same as the agent's container records).
pub const EXIT_VERSION: u32 = 1;

/// How a process ended, written by its monitor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// File version.
    pub version: u32,
    /// Exit code as a shell reports it: the status, or 128 + signal.
    pub exit_code: i32,
    /// Signal that killed it, if any.
    pub signal: Option<i32>,
    /// Killed by the kernel's OOM killer (the cgroup's oom_kill count went up).
    pub oom_killed: bool,
    /// `exited`, `signaled`, `oom-killed`, `start-failed`, `not-found`.
    pub reason: String,
    /// RFC 3339.
    pub finished: String,
    /// Set when the process could not be started.
    #[serde(default)]
    pub error: Option<String>,
}

impl ExitRecord {
    /// Exit of a process that never ran, with Docker's codes (127: command not found, 126:
    /// cannot be executed, 125: anything else).
    pub fn failed(code: i32, reason: &str, error: String) -> Self {
        ExitRecord {
            version: EXIT_VERSION,
            exit_code: code,
            signal: None,
            oom_killed: false,
            reason: reason.to_string(),
            finished: now(),
            error: Some(error),
        }
    }
}

impl ExitRecord {
    /// The API view.
    pub fn view(&self) -> berth_api::ExitView {
        berth_api::ExitView {
            exit_code: self.exit_code,
            signal: self.signal,
            oom_killed: self.oom_killed,
            reason: self.reason.clone(),
            finished: self.finished.clone(),
            error: self.error.clone(),
        }
    }
}

/// Current time, RFC 3339 with nanoseconds.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Writes `record` to `path` atomically (temp, fsync, rename, fsync dir).
pub fn write(path: &std::path::Path, record: &ExitRecord) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
    berth_fsutil::atomic::write_atomic(path, &bytes, 0o600).map_err(std::io::Error::other)
}
