//! The short-lived helper: `berth shim create|exec-create`, the full `berth` binary, which
//! makes the container (or the exec process) with libcontainer, reports, and exits, leaving
//! the small monitor as the only resident process per container.
//!
//! The helper gets its descriptors at fixed numbers (every other descriptor is closed on
//! exec); the grammar is private between this file and `berth_runtime::supervisor::helper`:
//!
//! | fd | direction        | content                                                      |
//! |----|------------------|--------------------------------------------------------------|
//! | 3  | helper → monitor | one [`Ready`] line per step (created; started)                |
//! | 4  | monitor → helper | `start\n` (init only); EOF: give up, the monitor cleans up    |
//! | 5  | container        | stdin read end (with `--stdin`)                               |
//! | 6  | container        | stdout write end                                              |
//! | 7  | container        | stderr write end                                              |
//! | 8  | container        | exec-failure pipe, write end (the process reports `execvp`)   |
//! | 9  | helper           | exec-failure pipe, read end (a failure during the create)     |

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::report::Ready;
use crate::{io_err, MonitorError};

/// Report pipe, helper to monitor.
pub const REPORT_FD: RawFd = 3;
/// Command pipe, monitor to helper.
pub const COMMAND_FD: RawFd = 4;
/// The container's stdin.
pub const STDIN_FD: RawFd = 5;
/// The container's stdout.
pub const STDOUT_FD: RawFd = 6;
/// The container's stderr.
pub const STDERR_FD: RawFd = 7;
/// Exec-failure pipe, write end.
pub const EXEC_FAILURE_WRITE_FD: RawFd = 8;
/// Exec-failure pipe, read end.
pub const EXEC_FAILURE_READ_FD: RawFd = 9;

/// A running helper.
#[derive(Debug)]
pub struct Helper {
    child: Child,
    report: BufReader<std::fs::File>,
    command: Option<std::fs::File>,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), MonitorError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io_err("pipe")(e.into()))
}

impl Helper {
    /// Starts `berth shim MODE ARGS` with `fds` at their numbers (plus the report pipe, and
    /// the command pipe when `commands`). The helper dies with the monitor (parent-death
    /// signal), so a hung create never outlives it.
    pub fn spawn(
        berth: &Path,
        args: Vec<OsString>,
        mut fds: Vec<(OwnedFd, RawFd)>,
        commands: bool,
    ) -> Result<Self, MonitorError> {
        let (report_r, report_w) = pipe()?;
        fds.push((report_w, REPORT_FD));
        let command = if commands {
            let (r, w) = pipe()?;
            fds.push((r, COMMAND_FD));
            Some(std::fs::File::from(w))
        } else {
            None
        };
        // Above every target number, so no dup2 below overwrites a source not yet moved.
        let mut high = Vec::with_capacity(fds.len());
        for (fd, target) in &fds {
            let dup = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(20))
                .map_err(|e| io_err("duplicating a helper descriptor")(e.into()))?;
            high.push((dup, *target));
        }
        let moves: Vec<(RawFd, RawFd)> = high.clone();
        let mut cmd = Command::new(berth);
        cmd.arg("shim")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // SAFETY: the closure runs in the forked child before exec and calls only
        // async-signal-safe functions (prctl, dup2) on descriptors it does not free.
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                for (from, to) in &moves {
                    // dup2 clears close-on-exec on the target: these survive the exec.
                    if libc::dup2(*from, *to) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let spawned = cmd.spawn();
        for (fd, _) in high {
            let _ = nix::unistd::close(fd);
        }
        drop(fds);
        let child = spawned.map_err(io_err("starting the create helper"))?;
        Ok(Helper {
            child,
            report: BufReader::new(std::fs::File::from(report_r)),
            command,
        })
    }

    /// The helper's next report; its failure as an error.
    pub fn read(&mut self) -> Result<i32, MonitorError> {
        let mut line = String::new();
        self.report
            .read_line(&mut line)
            .map_err(io_err("reading the helper's report"))?;
        if line.is_empty() {
            return Err(MonitorError::Failed {
                code: 125,
                message: "the create helper ended without a report (see shim.log)".into(),
            });
        }
        let ready: Ready = serde_json::from_str(&line).map_err(|e| MonitorError::Failed {
            code: 125,
            message: format!("bad report from the create helper: {e}"),
        })?;
        match ready.error {
            Some(message) => Err(MonitorError::Failed {
                code: ready.exit_code.unwrap_or(125),
                message,
            }),
            None => Ok(ready.pid),
        }
    }

    /// Asks the helper to start the created init; answered once it has.
    pub fn start(&mut self) -> Result<(), MonitorError> {
        let Some(command) = self.command.as_mut() else {
            return Err(MonitorError::Failed {
                code: 125,
                message: "the create helper takes no commands".into(),
            });
        };
        command
            .write_all(b"start\n")
            .map_err(io_err("asking the create helper to start"))?;
        self.read().map(|_| ())
    }

    /// Lets the helper go (EOF on its command pipe) and waits for it.
    pub fn finish(mut self) {
        self.command = None;
        // It may have been reaped already by the monitor's loop (ECHILD): nothing to do.
        let _ = self.child.wait();
    }
}
