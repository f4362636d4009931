//! `berth shim create` and `berth shim exec-create`: the helper's side of the descriptors
//! described in `berth_monitor::helper`.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use berth_monitor::helper::{
    COMMAND_FD, EXEC_FAILURE_READ_FD, EXEC_FAILURE_WRITE_FD, REPORT_FD, STDERR_FD, STDIN_FD,
    STDOUT_FD,
};
use berth_monitor::report::Ready;

use super::confine::ExecFailure;
use super::launch::{self, Stdio};
use super::{sigpipe, SupervisorError};

/// Options of `berth shim create`.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// Container id.
    pub id: String,
    /// The bundle (the container's state dir).
    pub bundle: PathBuf,
    /// libcontainer's state root.
    pub lc_root: PathBuf,
    /// The console socket, for a terminal.
    pub console: Option<PathBuf>,
    /// Descriptor 5 is the container's stdin.
    pub stdin: bool,
    /// Bring `lo` up in the new network namespace.
    pub network_none: bool,
}

/// Options of `berth shim exec-create`.
#[derive(Debug, Clone)]
pub struct ExecCreateOptions {
    /// Container id.
    pub id: String,
    /// The container's state dir (bundle; libcontainer's root is `lc/` in it).
    pub dir: PathBuf,
    /// The OCI process description.
    pub process: PathBuf,
    /// The console socket, for a terminal.
    pub console: Option<PathBuf>,
    /// Descriptor 5 is the process's stdin.
    pub stdin: bool,
}

/// Takes a descriptor handed over at a fixed number, closing it on exec from now on: the
/// container's processes must not inherit it (libcontainer dups what they need).
fn take(fd: RawFd) -> Result<OwnedFd, SupervisorError> {
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| super::io_err("taking a descriptor from the monitor")(e.into()))?;
    // SAFETY: the monitor placed this descriptor at this number for us; nothing else in this
    // process owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn send(report: &mut std::fs::File, ready: &Ready) {
    let mut line = serde_json::to_vec(ready).unwrap_or_default();
    line.push(b'\n');
    if let Err(e) = report.write_all(&line) {
        tracing::error!(error = %e, "reporting to the monitor");
    }
}

fn failed(e: &SupervisorError) -> Ready {
    Ready::failed(e.to_string(), e.exit_code())
}

fn stdio(console: Option<&Path>, stdin: bool) -> Result<Stdio, SupervisorError> {
    Ok(match console {
        Some(path) => Stdio::Tty {
            path: path.to_path_buf(),
        },
        None => Stdio::Pipes {
            stdin: if stdin { Some(take(STDIN_FD)?) } else { None },
            stdout: take(STDOUT_FD)?,
            stderr: take(STDERR_FD)?,
        },
    })
}

fn exec_failure() -> Result<ExecFailure, SupervisorError> {
    Ok(ExecFailure::from_fds(
        take(EXEC_FAILURE_READ_FD)?,
        take(EXEC_FAILURE_WRITE_FD)?,
    ))
}

/// Creates the container, reports its init's pid, then waits for `start` on the command
/// pipe (EOF: exits, the monitor cleans up). Returns the helper's exit code.
pub fn run_create(opts: CreateOptions) -> i32 {
    let Ok(report) = take(REPORT_FD) else {
        return 125;
    };
    let mut report = std::fs::File::from(report);
    let created = (|| {
        let commands = take(COMMAND_FD)?;
        let mut stdio = stdio(opts.console.as_deref(), opts.stdin)?;
        let mut failure = exec_failure()?;
        sigpipe(true);
        let created = launch::create(&opts.id, &opts.bundle, &opts.lc_root, &mut stdio, &failure);
        sigpipe(false);
        failure.launched();
        // Only the container may hold the write ends now, or EOF never comes.
        drop(stdio);
        let container = created?;
        let pid = container.pid().map(|p| p.as_raw()).unwrap_or(0);
        if opts.network_none {
            launch::loopback_up(pid)?;
        }
        Ok::<_, SupervisorError>((container, pid, commands))
    })();
    let (mut container, pid, commands) = match created {
        Ok(c) => c,
        Err(e) => {
            send(&mut report, &failed(&e));
            return 1;
        }
    };
    send(&mut report, &Ready::pid(pid));
    if !init_outlives_wait(pid, &commands) {
        return 0;
    }
    let mut line = String::new();
    let mut commands = BufReader::new(std::fs::File::from(commands));
    if commands.read_line(&mut line).is_err() || line.trim() != "start" {
        return 0;
    }
    match launch::start(&mut container) {
        Ok(()) => {
            send(&mut report, &Ready::pid(pid));
            0
        }
        Err(e) => {
            send(&mut report, &failed(&e));
            1
        }
    }
}

/// Waits until the monitor sends a command or the init ends (killed by `rm -f` before it
/// was started); false for the latter. libcontainer forks the init as this helper's child,
/// so an init that dies while the helper waits must not be left to it: the helper exits
/// without reaping, and the zombie passes to the monitor (the subreaper), which records
/// the exit.
fn init_outlives_wait(pid: i32, commands: &OwnedFd) -> bool {
    use std::os::fd::AsFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
    if raw < 0 {
        // No pidfd (kernel < 5.3): wait for the command alone.
        return true;
    }
    // SAFETY: a descriptor pidfd_open just made for us.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw) };
    loop {
        let mut fds = [
            nix::poll::PollFd::new(commands.as_fd(), nix::poll::PollFlags::POLLIN),
            nix::poll::PollFd::new(pidfd.as_fd(), nix::poll::PollFlags::POLLIN),
        ];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
            Ok(_) => {
                let ready = |f: &nix::poll::PollFd| f.revents().is_some_and(|r| !r.is_empty());
                if ready(&fds[0]) {
                    return true;
                }
                if ready(&fds[1]) {
                    return false;
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return true,
        }
    }
}

/// Runs the exec process in the container, reports its pid, exits.
pub fn run_exec_create(opts: ExecCreateOptions) -> i32 {
    let Ok(report) = take(REPORT_FD) else {
        return 125;
    };
    let mut report = std::fs::File::from(report);
    let launched = (|| {
        let mut stdio = stdio(opts.console.as_deref(), opts.stdin)?;
        let mut failure = exec_failure()?;
        sigpipe(true);
        let r = launch::exec(
            &opts.id,
            &opts.dir.join("lc"),
            &opts.dir,
            &opts.process,
            &mut stdio,
            &failure,
        );
        sigpipe(false);
        failure.launched();
        r
    })();
    match launched {
        Ok(pid) => {
            send(&mut report, &Ready::pid(pid));
            0
        }
        Err(e) => {
            send(&mut report, &failed(&e));
            forget_cgroup_of_dead_container(&opts.dir);
            1
        }
    }
}

/// An exec that raced the container's end can have recreated the container's cgroup (the
/// tenant joins it with `mkdir -p` semantics) after its removal; an empty one is removed
/// again. A cgroup still in use (a live container) refuses `rmdir`, so this never harms one.
///
/// libcontainer returns the error without reaping its intermediate process, which may still
/// be on its way out of (or, late, into) the recreated cgroup: it is waited for first, else
/// the `rmdir` loses the race and the cgroup stays behind once the helper is gone.
fn forget_cgroup_of_dead_container(bundle: &std::path::Path) {
    reap_children(std::time::Duration::from_secs(5));
    let Ok(spec) = oci_spec::runtime::Spec::load(bundle.join("config.json")) else {
        return;
    };
    if let Some(path) = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()) {
        crate::cgroups::remove_empty_up_to(&path, &path);
    }
}

/// Waits (at most `patience`) until every child of this helper has exited and is reaped; a
/// zombie holds no cgroup, so after this nothing of ours is left in the container's.
fn reap_children(patience: std::time::Duration) {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let deadline = std::time::Instant::now() + patience;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Ok(WaitStatus::StillAlive) => return,
            Ok(_) => {}
            // ECHILD: no child is left.
            Err(_) => return,
        }
    }
}
