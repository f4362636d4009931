//! The per-container supervisor ("shim"): the `berth` binary re-executed as
//! `berth shim init|exec`, single-threaded, one per container (and one per exec).
//!
//! It creates and starts the container with libcontainer (never called in the threaded
//! agent), is the subreaper of everything the container leaves behind, copies
//! stdout/stderr to the rotated log and to attached clients, forwards termination signals to
//! the init, waits, and records the exit (code, signal, OOM) atomically in `exit.json`. It
//! runs in its own session and does not depend on the agent or any client staying alive.
//!
//! Start-up handshake: the supervisor writes one JSON line to its stdout — `{"pid": N}` once
//! the container is created (its init waits for `START`), or `{"error": "...", "exit_code":
//! N}` — and closes it. The agent reads that line to answer the create request.

pub mod confine;
mod event_loop;
pub mod launch;
pub use berth_api::attach as protocol;

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::logs::{LogWriter, Rotation};
use crate::state::{write_json, ContainerDir, ExitRecord};
use event_loop::{EventLoop, Managed};
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

fn io_err(what: &str) -> impl Fn(std::io::Error) -> SupervisorError + '_ {
    move |e| SupervisorError::Io {
        what: what.to_string(),
        source: e,
    }
}

/// Options of `berth shim init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Container id.
    pub id: String,
    /// The container's state dir (also the bundle).
    pub dir: PathBuf,
    /// Allocate a terminal.
    pub tty: bool,
    /// Keep stdin open for attached clients.
    pub stdin: bool,
    /// New network namespace: bring `lo` up.
    pub network_none: bool,
    /// The container's cgroup (OOM count, final kill).
    pub cgroup_path: PathBuf,
    /// Log rotation.
    pub rotation: Rotation,
}

/// Options of `berth shim exec`.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Container id.
    pub id: String,
    /// The container's state dir.
    pub dir: PathBuf,
    /// Exec id (names `exec/<id>.json` and `exec/<id>.sock`).
    pub exec_id: String,
    /// The OCI process description.
    pub process: PathBuf,
    /// Allocate a terminal.
    pub tty: bool,
    /// Keep stdin open.
    pub stdin: bool,
}

/// The start-up line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ready {
    /// Init pid (0 for an exec supervisor before START).
    #[serde(default)]
    pub pid: i32,
    /// Why creation failed.
    #[serde(default)]
    pub error: Option<String>,
    /// Exit code of the failure (Docker's 125/126/127).
    #[serde(default)]
    pub exit_code: Option<i32>,
}

fn report(ready_out: &mut Option<std::fs::File>, ready: &Ready) {
    if let Some(mut out) = ready_out.take() {
        let mut line = serde_json::to_vec(ready).unwrap_or_default();
        line.push(b'\n');
        let _ = out.write_all(&line);
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

/// Gives back memory only the set-up needed: free heap pages (glibc keeps them otherwise)
/// and the stack pages below the current frame that libcontainer's deep calls touched.
/// There are 50-odd supervisors on a busy node; each keeps a few hundred KiB less.
pub fn release_setup_memory() {
    release_stack();
    release_file_pages();
    // Last, so the buffers used above are handed back too.
    // SAFETY: malloc_trim only hands free heap memory back to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Unmaps from this process the pages of read-only file mappings (the binary's and the
/// libraries' code and constants) that the set-up touched: they stay in the page cache and
/// fault back in cheaply when used, but no longer count in every supervisor's PSS. Only
/// mappings without a single private (copy-on-write) page are touched — dropping one of
/// those would lose its relocations.
fn release_file_pages() {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let mut ranges = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    let mut clean = true;
    let flush =
        |current: &mut Option<(usize, usize)>, clean: bool, ranges: &mut Vec<(usize, usize)>| {
            if let (Some(r), true) = (current.take(), clean) {
                ranges.push(r);
            }
        };
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) =
                (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                flush(&mut current, clean, &mut ranges);
                let perms = fields.next().unwrap_or_default();
                let path = fields.nth(3).unwrap_or_default();
                let read_only_file =
                    perms.starts_with('r') && !perms.contains('w') && path.starts_with('/');
                current = read_only_file.then_some((start, end));
                clean = true;
                continue;
            }
        }
        if matches!(first, "Private_Dirty:" | "Anonymous:" | "Shared_Dirty:")
            && fields.next().is_some_and(|v| v != "0")
        {
            clean = false;
        }
    }
    flush(&mut current, clean, &mut ranges);
    for (start, end) in ranges {
        // SAFETY: a read-only, file-backed private mapping with no copy-on-write page: every
        // page equals the file's, so dropping it only means the next access faults it back
        // in from the page cache.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

fn release_stack() {
    let marker = 0u8;
    let sp = std::ptr::addr_of!(marker) as usize;
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let Some(range) = maps.lines().find(|l| l.ends_with("[stack]")) else {
        return;
    };
    let Some((start, _)) = range
        .split(' ')
        .next()
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| {
            Some((
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            ))
        })
    else {
        return;
    };
    // Keep 16 KiB below this frame for the madvise call itself; everything lower is unused
    // (the stack grows down, no signal handler runs on it: signals come via signalfd).
    let page = 4096;
    let end = (sp.saturating_sub(16 * 1024)) & !(page - 1);
    if end > start {
        // SAFETY: [start, end) lies in our stack mapping strictly below the live frames
        // (16 KiB under the current one); MADV_DONTNEED there only drops unused pages,
        // which read back as zeros if touched again.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
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

fn bind(path: &Path) -> Result<UnixListener, SupervisorError> {
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path).map_err(io_err("binding the supervisor socket"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err("chmod of the supervisor socket"))?;
    Ok(l)
}

/// Prepares stdio: a console socket for a tty, else pipes. Returns the container's side and
/// our side (outputs, stdin writer).
type StdioParts = (Stdio, Vec<(OwnedFd, u8)>, Option<OwnedFd>);

fn stdio(tty: bool, stdin: bool, console: &str) -> Result<StdioParts, SupervisorError> {
    if tty {
        let path = PathBuf::from(console);
        let listener = bind(&path)?;
        let abs = std::env::current_dir().map_err(io_err("cwd"))?.join(path);
        return Ok((
            Stdio::Tty {
                listener,
                path: abs,
            },
            Vec::new(),
            None,
        ));
    }
    let pipe =
        || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io_err("pipe")(e.into()));
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (stdin_r, stdin_w) = if stdin {
        let (r, w) = pipe()?;
        (Some(r), Some(w))
    } else {
        (None, None)
    };
    Ok((
        Stdio::Pipes {
            stdin: stdin_r,
            stdout: out_w,
            stderr: err_w,
        },
        vec![(out_r, protocol::STDOUT), (err_r, protocol::STDERR)],
        stdin_w,
    ))
}

/// Fault injection for tests of the agent (`BERTH_FAULT_STALL_START=NAME[@MILLIS]`, read from
/// the agent's environment, which supervisors inherit): the supervisor of the container
/// named NAME hangs before creating it (for MILLIS, or for good), as one stuck in a kernel
/// call or a hook would. Nothing else reads the variable.
fn stall_if_asked(dir: &ContainerDir) {
    let Some(value) = std::env::var("BERTH_FAULT_STALL_START").ok() else {
        return;
    };
    let (name, millis) = match value.split_once('@') {
        Some((n, ms)) => (n.to_string(), ms.parse::<u64>().ok()),
        None => (value, None),
    };
    let record: Option<crate::state::ContainerRecord> =
        crate::state::read_json(&dir.record()).ok().flatten();
    if record.is_none_or(|r| r.name != name) {
        return;
    }
    tracing::warn!(
        ?millis,
        "BERTH_FAULT_STALL_START: stalling before the create"
    );
    match millis {
        Some(ms) => std::thread::sleep(std::time::Duration::from_millis(ms)),
        None => loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
    }
}

/// `berth shim init`: create, report, wait for START, supervise, record the exit. Returns
/// the supervisor's own exit code.
pub fn run_init(opts: InitOptions, ready_out: std::fs::File) -> i32 {
    let mut ready_out = Some(ready_out);
    let dir = ContainerDir(opts.dir.clone());
    detach();
    stall_if_asked(&dir);
    let fail = |ready_out: &mut Option<std::fs::File>, e: SupervisorError| {
        let code = e.exit_code();
        tracing::error!(error = %e, "container failed");
        let failed = ExitRecord::failed(code, "start-failed", e.to_string());
        if let Err(e) = write_json(&dir.exit(), &failed) {
            // The agent also hears the failure on the ready pipe below.
            tracing::error!(error = %e, "recording a failed start");
        }
        report(
            ready_out,
            &Ready {
                pid: 0,
                error: Some(e.to_string()),
                exit_code: Some(code),
            },
        );
        1
    };
    if let Err(e) = std::env::set_current_dir(&opts.dir) {
        return fail(&mut ready_out, io_err("entering the container dir")(e));
    }
    let listener = match bind(Path::new("shim.sock")) {
        Ok(l) => l,
        Err(e) => return fail(&mut ready_out, e),
    };
    let (mut container_stdio, outputs, stdin_w) = match stdio(opts.tty, opts.stdin, "console.sock")
    {
        Ok(s) => s,
        Err(e) => return fail(&mut ready_out, e),
    };
    let log = match LogWriter::open(&dir.logs(), opts.rotation) {
        Ok(l) => l,
        Err(e) => return fail(&mut ready_out, io_err("opening the log")(e)),
    };
    let mut exec_failure = match confine::ExecFailure::new() {
        Ok(f) => f,
        Err(e) => return fail(&mut ready_out, e),
    };
    sigpipe(true);
    let created = launch::create(
        &opts.id,
        &opts.dir,
        &dir.libcontainer(),
        &mut container_stdio,
        &exec_failure,
    );
    sigpipe(false);
    exec_failure.launched();
    let mut container = match created {
        Ok(c) => c,
        Err(e) => {
            crate::cgroups::remove(&opts.cgroup_path).ok();
            return fail(&mut ready_out, e);
        }
    };
    let pid = container.pid().map(|p| p.as_raw()).unwrap_or(0);
    let (outputs, stdin_w, tty_master) = match container_stdio {
        Stdio::Tty {
            listener: console, ..
        } => {
            let master = match launch::receive_pty(&console) {
                Ok(m) => m,
                Err(e) => {
                    let _ = container.delete(true);
                    return fail(&mut ready_out, e);
                }
            };
            let _ = std::fs::remove_file("console.sock");
            let writer = master.try_clone().ok();
            let tty = master.try_clone().ok();
            (vec![(master, protocol::STDOUT)], writer, tty)
        }
        Stdio::Pipes {
            stdin,
            stdout,
            stderr,
        } => {
            // Only the container may hold the write ends now, or EOF never comes.
            drop((stdin, stdout, stderr));
            (outputs, stdin_w, None)
        }
    };
    if opts.network_none {
        if let Err(e) = launch::loopback_up(pid) {
            let _ = container.delete(true);
            return fail(&mut ready_out, e);
        }
    }
    report(
        &mut ready_out,
        &Ready {
            pid,
            error: None,
            exit_code: None,
        },
    );
    let mut lp = match EventLoop::new(listener, outputs, stdin_w, tty_master, Some(log)) {
        Ok(l) => l,
        Err(e) => {
            let _ = container.delete(true);
            tracing::error!(error = %e, "supervisor set-up failed");
            return 1;
        }
    };
    let status = exec_failure.reason_for(lp.run(Managed::Init {
        container: &mut container,
        pid,
    }));
    let oom = crate::cgroups::oom_kills(&opts.cgroup_path) > 0;
    let _ = crate::cgroups::kill_all(&opts.cgroup_path);
    if let Err(e) = container.delete(true) {
        tracing::warn!(error = %e, "libcontainer delete failed; removing the cgroup directly");
        let _ = crate::cgroups::remove(&opts.cgroup_path);
    }
    let record = event_loop::exit_record(status, oom);
    if let Err(e) = write_json(&dir.exit(), &record) {
        tracing::error!(error = %e, "recording the exit failed");
    }
    lp.finish(&record);
    0
}

/// `berth shim exec`: wait for an attached START, run the process, relay its I/O, record
/// its exit in `exec/<id>.json`.
pub fn run_exec(opts: ExecOptions, ready_out: std::fs::File) -> i32 {
    let mut ready_out = Some(ready_out);
    let dir = ContainerDir(opts.dir.clone());
    detach();
    let record_path = dir.execs().join(format!("{}.json", opts.exec_id));
    let console = format!("{}.console", opts.exec_id);
    let setup = || -> Result<_, SupervisorError> {
        std::env::set_current_dir(dir.execs()).map_err(io_err("entering the exec dir"))?;
        let listener = bind(Path::new(&format!("{}.sock", opts.exec_id)))?;
        let (stdio, outputs, stdin_w) = stdio(opts.tty, opts.stdin, &console)?;
        Ok((listener, stdio, outputs, stdin_w))
    };
    let (listener, mut container_stdio, outputs, stdin_w) = match setup() {
        Ok(s) => s,
        Err(e) => {
            report(
                &mut ready_out,
                &Ready {
                    pid: 0,
                    error: Some(e.to_string()),
                    exit_code: Some(125),
                },
            );
            return 1;
        }
    };
    report(
        &mut ready_out,
        &Ready {
            pid: 0,
            error: None,
            exit_code: None,
        },
    );
    let mut lp = match EventLoop::new(listener, outputs, stdin_w, None, None) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "supervisor set-up failed");
            return 1;
        }
    };
    let lc_root = dir.libcontainer();
    let mut exec_failure = match confine::ExecFailure::new() {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "supervisor set-up failed");
            return 1;
        }
    };
    let mut launch = |lp: &mut EventLoop| -> Result<i32, SupervisorError> {
        sigpipe(true);
        let r = launch::exec(
            &opts.id,
            &lc_root,
            dir.path(),
            &opts.process,
            &mut container_stdio,
            &exec_failure,
        );
        sigpipe(false);
        exec_failure.launched();
        let pid = r?;
        if let Stdio::Tty { listener, .. } = &container_stdio {
            let master = launch::receive_pty(listener)?;
            let _ = std::fs::remove_file(&console);
            lp.attach_tty(master);
        }
        // The container's ends of the pipes belong to the process now.
        container_stdio = Stdio::Pipes {
            stdin: None,
            stdout: dev_null()?,
            stderr: dev_null()?,
        };
        Ok(pid)
    };
    let status = lp.run(Managed::Exec {
        launch: &mut launch,
    });
    let status = exec_failure.reason_for(status);
    let record = event_loop::exit_record(status, false);
    if let Err(e) = write_json(&record_path, &record) {
        // Attached clients still get the exit frame below.
        tracing::error!(error = %e, "recording an exec's exit");
    }
    lp.finish(&record);
    let _ = std::fs::remove_file(dir.execs().join(format!("{}.sock", opts.exec_id)));
    0
}

fn dev_null() -> Result<OwnedFd, SupervisorError> {
    std::fs::File::open("/dev/null")
        .map(OwnedFd::from)
        .map_err(io_err("opening /dev/null"))
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
