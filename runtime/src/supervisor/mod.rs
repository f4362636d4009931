//! The libcontainer side of running a container: the short-lived helper the monitor
//! (`berth_monitor`) starts as `berth shim create|exec-create`. It creates the container
//! (or runs the exec process) with libcontainer — never called in the threaded agent —
//! reports on its descriptor 3, starts the init when the monitor asks, and exits; the
//! monitor stays as the container's resident supervisor. Descriptor numbers and report
//! lines: `berth_monitor::helper`.
//!
//! `berth shim run` (a runc-run-style create, start, wait and delete with inherited stdio)
//! is kept for the benchmark against runc and crun.

pub mod confine;
pub mod helper;
pub mod launch;
pub use berth_api::attach as protocol;
pub use berth_monitor::report::Ready;

use std::os::fd::AsFd;
use std::path::Path;

use launch::Stdio;

/// A supervisor step failed.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The process's `execvp` failed (reported by [`confine::ExecFailure`]).
    #[error("{message}")]
    ExecFailed {
        /// Docker's exit code: 127 not found, 126 not executable.
        code: i32,
        /// The kernel's reason.
        message: String,
    },
    /// libcontainer refused.
    #[error("{what}: {reason}")]
    Libcontainer {
        /// What was being done.
        what: String,
        /// libcontainer's error chain.
        reason: String,
    },
}

impl SupervisorError {
    /// Docker's exit code for a process that could not be started: 127 when the command does
    /// not exist, 126 when it cannot be executed (both known from `execvp`'s errno, reported
    /// by the process itself), 125 for anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            SupervisorError::ExecFailed { code, .. } => *code,
            _ => 125,
        }
    }
}

pub(crate) fn io_err(what: &str) -> impl Fn(std::io::Error) -> SupervisorError + '_ {
    move |e| SupervisorError::Io {
        what: what.to_string(),
        source: e,
    }
}

/// Detaches from the caller: own session, subreaper of the container's orphans.
fn detach() {
    let _ = nix::unistd::setsid();
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes an integer flag and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

/// Restores SIGPIPE's default for children about to be forked (Rust ignores it, and an
/// ignored disposition survives exec), or ignores it again for ourselves.
fn sigpipe(default: bool) {
    let handler = if default {
        libc::SIG_DFL
    } else {
        libc::SIG_IGN
    };
    // SAFETY: installing SIG_DFL/SIG_IGN runs no code of ours in signal context.
    unsafe {
        libc::signal(libc::SIGPIPE, handler);
    }
}

/// `berth shim run`: create, start, wait for and delete the container of a prepared bundle
/// (stdio inherited), like `runc run`. Returns the container's exit code.
pub fn run_bundle(id: &str, bundle: &Path, state_root: &Path) -> i32 {
    detach();
    let mut stdio = Stdio::Pipes {
        stdin: None,
        stdout: match std::io::stdout().as_fd().try_clone_to_owned() {
            Ok(fd) => fd,
            Err(_) => return 125,
        },
        stderr: match std::io::stderr().as_fd().try_clone_to_owned() {
            Ok(fd) => fd,
            Err(_) => return 125,
        },
    };
    let Ok(mut exec_failure) = confine::ExecFailure::new() else {
        return 125;
    };
    sigpipe(true);
    let created = launch::create(id, bundle, state_root, &mut stdio, &exec_failure);
    sigpipe(false);
    exec_failure.launched();
    drop(stdio);
    let mut container = match created {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berth: {e}");
            return e.exit_code();
        }
    };
    let pid = container.pid().map(|p| p.as_raw()).unwrap_or(0);
    if let Err(e) = launch::start(&mut container) {
        eprintln!("berth: {e}");
        let _ = container.delete(true);
        return e.exit_code();
    }
    let code = loop {
        match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(-1), None) {
            Ok(nix::sys::wait::WaitStatus::Exited(p, c)) if p.as_raw() == pid => break c,
            Ok(nix::sys::wait::WaitStatus::Signaled(p, s, _)) if p.as_raw() == pid => {
                break 128 + s as i32
            }
            Ok(_) => {}
            Err(_) => break 255,
        }
    };
    let _ = container.delete(true);
    code
}
