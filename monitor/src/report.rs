//! One JSON line per step: the monitor's start-up line to the agent, and the helper's
//! reports to the monitor. `{"pid": N}` on success, `{"error": "...", "exit_code": N}` on
//! failure.

use std::io::Write;
use std::os::fd::{FromRawFd, IntoRawFd};

use serde::{Deserialize, Serialize};

/// A start-up report.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ready {
    /// The process's pid (0 for an exec monitor before START).
    #[serde(default)]
    pub pid: i32,
    /// Why creation failed.
    #[serde(default)]
    pub error: Option<String>,
    /// Exit code of the failure (Docker's 125/126/127).
    #[serde(default)]
    pub exit_code: Option<i32>,
}

impl Ready {
    /// Success with `pid`.
    pub fn pid(pid: i32) -> Self {
        Ready {
            pid,
            ..Ready::default()
        }
    }
    /// A failure.
    pub fn failed(error: String, code: i32) -> Self {
        Ready {
            pid: 0,
            error: Some(error),
            exit_code: Some(code),
        }
    }
}

/// Writes `ready` as one line to `out` and closes it (only the first call writes).
pub fn send(out: &mut Option<std::fs::File>, ready: &Ready) {
    if let Some(mut out) = out.take() {
        let mut line = serde_json::to_vec(ready).unwrap_or_default();
        line.push(b'\n');
        let _ = out.write_all(&line);
    }
}

/// Takes stdout as the report pipe and points fd 1 at /dev/null, so nothing else written
/// to stdout can corrupt the report or block on a pipe nobody reads.
pub fn take_stdout() -> std::fs::File {
    // Close-on-exec: the create helper and the container must not hold the agent's pipe.
    let dup = nix::fcntl::fcntl(1, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3)).unwrap_or(1);
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let fd = null.into_raw_fd();
        let _ = nix::unistd::dup2(fd, 1);
        let _ = nix::unistd::close(fd);
    }
    // SAFETY: `dup` is a descriptor we just created and own exclusively.
    unsafe { std::fs::File::from_raw_fd(dup) }
}
