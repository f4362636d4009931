//! `berth shim`: entry of the per-container supervisor (see `berth_runtime::supervisor`).
//! Runs on the main thread only; its stdout is the start-up report pipe to the agent.

use std::os::fd::{FromRawFd, IntoRawFd};
use std::process::ExitCode;

use berth_runtime::logs::Rotation;
use berth_runtime::supervisor::{run_exec, run_init, ExecOptions, InitOptions};

use crate::cli_containers::{ShimArgs, ShimMode};

/// Takes stdout as the report pipe and points fd 1 at /dev/null, so nothing else written
/// to stdout can corrupt the report or block on a pipe nobody reads.
fn report_pipe() -> std::fs::File {
    let dup = nix::unistd::dup(1).unwrap_or(-1);
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let fd = null.into_raw_fd();
        let _ = nix::unistd::dup2(fd, 1);
        let _ = nix::unistd::close(fd);
    }
    // SAFETY: `dup` is a descriptor we just created and own exclusively.
    unsafe { std::fs::File::from_raw_fd(dup) }
}

pub fn run(args: ShimArgs) -> ExitCode {
    let report = report_pipe();
    let code = match args.mode {
        ShimMode::Init {
            id,
            dir,
            cgroup,
            log_max_bytes,
            log_max_files,
            tty,
            stdin,
            network_none,
        } => run_init(
            InitOptions {
                id,
                dir,
                tty,
                stdin,
                network_none,
                cgroup_path: cgroup,
                rotation: Rotation {
                    max_bytes: log_max_bytes,
                    max_files: log_max_files,
                },
            },
            report,
        ),
        ShimMode::Exec {
            id,
            dir,
            exec_id,
            process,
            tty,
            stdin,
        } => run_exec(
            ExecOptions {
                id,
                dir,
                exec_id,
                process,
                tty,
                stdin,
            },
            report,
        ),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
