//! `berth-monitor`: the process that watches one container (or one exec process) for its
//! whole life, as conmon does for podman. It is a separate, small, position-independent
//! binary so that what stays resident per container is little, while the `berth` binary it
//! starts for the creation itself (libcontainer, the whole agent) exits once the container
//! runs.
//!
//! ```text
//! agent ──spawns──> berth-monitor init ──spawns──> berth shim create   (libcontainer; exits after START)
//!                         │ subreaper                     └─ forks the container's init
//!                         └─ relays I/O, forwards signals, reaps the init, writes exit.json
//! ```
//!
//! Start-up handshake with the agent: the monitor writes one JSON line ([`report::Ready`])
//! to its stdout — `{"pid": N}` once the container is created (its init waits for `START`),
//! or `{"error": "...", "exit_code": N}` — and closes it.

/// The hand-parsed argument grammar (no clap in a resident process).
pub mod args;
/// The cgroup work at a container's end: OOM count, kill, removal.
pub mod cgroup;
/// The poll loop: attach clients, output relay, signals, reaping.
mod event_loop;
/// `berth-monitor exec`: one exec process.
pub mod exec;
/// The exit record the monitor writes.
pub mod exit;
/// The short-lived `berth shim create|exec-create` helper and its descriptors.
pub mod helper;
/// `berth-monitor init`: one container.
pub mod init;
/// The container log writer (CRI format, rotated).
pub mod logs;
/// Giving back set-up memory.
pub mod memory;
/// `berth-monitor pod-init`: PID 1 of a pod with a shared PID namespace.
pub mod pod_init;
/// The start-up line and the helper's reports.
pub mod report;
/// Shared set-up: session, sockets, stdio.
pub mod setup;

use std::ffi::OsString;

/// A monitor step failed.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The process could not be created or started (reported by the helper).
    #[error("{message}")]
    Failed {
        /// Docker's exit code: 127 not found, 126 not executable, 125 anything else.
        code: i32,
        /// Why.
        message: String,
    },
}

impl MonitorError {
    /// Docker's exit code for a process that could not be started.
    pub fn exit_code(&self) -> i32 {
        match self {
            MonitorError::Failed { code, .. } => *code,
            MonitorError::Io { .. } => 125,
        }
    }
}

pub(crate) fn io_err(what: &str) -> impl Fn(std::io::Error) -> MonitorError + '_ {
    move |e| MonitorError::Io {
        what: what.to_string(),
        source: e,
    }
}

/// A diagnostic line on stderr (the container's `shim.log`).
pub(crate) fn log(message: std::fmt::Arguments<'_>) {
    eprintln!("{} berth-monitor: {message}", exit::now());
}

/// Entry point of the `berth-monitor` binary: `init`, `exec` or `pod-init`; returns the
/// process's exit code.
///
/// ```text
/// berth-monitor init --berth EXE --id ID --dir DIR --cgroup PATH --log-max-bytes N --log-max-files N [--tty] [--stdin] [--network-none]
/// berth-monitor exec --berth EXE --id ID --dir DIR --exec-id EID --process FILE [--tty] [--stdin]
/// berth-monitor pod-init [--dir POD_NS_DIR]   (the dir only names the pod in `ps`)
/// ```
pub fn main(args: &[OsString]) -> i32 {
    match dispatch(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth-monitor: {e}");
            125
        }
    }
}

fn dispatch(args: &[OsString]) -> Result<i32, String> {
    let (mode, rest) = args
        .split_first()
        .ok_or("berth-monitor: init, exec or pod-init")?;
    let p = args::Parsed::new(rest)?;
    match mode.to_string_lossy().as_ref() {
        "init" => Ok(init::run(
            init::InitOptions {
                berth: p.path("--berth")?,
                id: p.text("--id")?,
                dir: p.path("--dir")?,
                tty: p.flag("--tty"),
                stdin: p.flag("--stdin"),
                network_none: p.flag("--network-none"),
                cgroup_path: p.path("--cgroup")?,
                rotation: logs::Rotation {
                    max_bytes: p.num("--log-max-bytes")?,
                    max_files: p.num("--log-max-files")?,
                },
            },
            report::take_stdout(),
        )),
        "exec" => Ok(exec::run(
            exec::ExecOptions {
                berth: p.path("--berth")?,
                id: p.text("--id")?,
                dir: p.path("--dir")?,
                exec_id: p.text("--exec-id")?,
                process: p.path("--process")?,
                tty: p.flag("--tty"),
                stdin: p.flag("--stdin"),
            },
            report::take_stdout(),
        )),
        "pod-init" => pod_init::run(),
        other => Err(format!("unknown monitor mode {other:?}")),
    }
}
