//! A pod's sandbox without a pause container: `berth shim sandbox` unshares network, IPC and
//! UTS namespaces, sets the host name, brings `lo` up and bind-mounts each namespace file
//! onto `<pod>/ns/{net,ipc,uts}`; the mounts keep the namespaces alive with no process in
//! them, and containers join them by path. With a shared PID namespace a PID namespace
//! cannot outlive its PID 1, so a tiny init of Berth's own (forked here, exec'ing
//! `berth-monitor pod-init`) is the pod's PID 1: it reaps orphans and ends on SIGTERM;
//! `<pod>/ns/pid` names its namespace.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// Namespaces every container of a pod shares.
pub const SHARED: [&str; 3] = ["net", "ipc", "uts"];

/// Which namespaces a sandbox makes.
#[derive(Debug, Clone, Copy)]
pub struct Namespaces {
    /// A network namespace (not with `hostNetwork`).
    pub net: bool,
    /// IPC and UTS namespaces (a pod's; a lone container on a CNI network makes only `net`).
    pub ipc_uts: bool,
    /// A PID namespace with Berth's pod init as PID 1.
    pub pid: bool,
}

/// A sandbox step failed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A system call on a path.
    #[error("pod sandbox: {what} {path}: {source}")]
    Io {
        /// The step.
        what: &'static str,
        /// Path involved.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

pub(crate) fn io(what: &'static str, path: &Path, e: impl Into<std::io::Error>) -> SandboxError {
    SandboxError::Io {
        what,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// Creates the namespaces and their bind mounts in `dir`. Call only in a single-threaded
/// process that may change its own namespaces (the sandbox helper). Returns the pod init's
/// pid with `ns.pid`.
pub fn create(
    dir: &Path,
    hostname: Option<&str>,
    ns: Namespaces,
    monitor: Option<&Path>,
    idmap: Option<&crate::userns::IdMap>,
) -> Result<Option<i32>, SandboxError> {
    std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
    if let Some(map) = idmap {
        return crate::sandbox_userns::create(dir, hostname, ns, monitor, map);
    }
    unshare_shared(dir, hostname, ns)?;
    if ns.net {
        bind_ns(Path::new("/proc/self/ns/net"), &dir.join("net"))?;
    }
    if ns.ipc_uts {
        for name in ["ipc", "uts"] {
            bind_ns(
                &PathBuf::from(format!("/proc/self/ns/{name}")),
                &dir.join(name),
            )?;
        }
    }
    if !ns.pid {
        return Ok(None);
    }
    unshare(CloneFlags::CLONE_NEWPID).map_err(|e| io("unshare pid", dir, e))?;
    let child = fork_pod_init(dir, monitor)?;
    bind_ns(
        &PathBuf::from(format!("/proc/{child}/ns/pid")),
        &dir.join("pid"),
    )?;
    Ok(Some(child))
}

/// Unshares the network (with `lo` up), IPC and UTS (with the host name) namespaces `ns`
/// asks for, in this process.
pub(crate) fn unshare_shared(
    dir: &Path,
    hostname: Option<&str>,
    ns: Namespaces,
) -> Result<(), SandboxError> {
    let mut flags = CloneFlags::empty();
    if ns.net {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if ns.ipc_uts {
        flags |= CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS;
    }
    unshare(flags).map_err(|e| io("unshare", dir, e))?;
    if let Some(name) = hostname.filter(|_| ns.ipc_uts) {
        nix::unistd::sethostname(name).map_err(|e| io("sethostname", dir, e))?;
    }
    if ns.net {
        crate::supervisor::launch::set_lo_up().map_err(|e| io("bringing up lo", dir, e))?;
    }
    Ok(())
}

/// Forks Berth's pod init into the PID namespace this process unshared; returns its pid
/// (the namespace's file is bound by the caller).
pub(crate) fn fork_pod_init(dir: &Path, monitor: Option<&Path>) -> Result<i32, SandboxError> {
    // Prepared before the fork: the child only execs (or, without a monitor binary, runs
    // the same loop in this binary's copy).
    let exe = monitor.and_then(|m| {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::CString::new(m.as_os_str().as_bytes()).ok()
    });
    // `--dir` names the pod in `ps` (and lets a test harness find what it started).
    let dir_arg = {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap_or_default()
    };
    let argv = [
        c"berth-monitor".as_ptr(),
        c"pod-init".as_ptr(),
        c"--dir".as_ptr(),
        dir_arg.as_ptr(),
        std::ptr::null(),
    ];
    // SAFETY: the helper is single-threaded; the child only calls async-signal-safe
    // functions (execv; else sigprocmask, setsid, waitpid, _exit) before it ends.
    match unsafe { nix::unistd::fork() }.map_err(|e| io("fork", dir, e))? {
        nix::unistd::ForkResult::Child => {
            if let Some(exe) = &exe {
                // SAFETY: `exe` and `argv` are NUL-terminated and outlive the call; execv
                // returns only on failure.
                unsafe {
                    libc::execv(exe.as_ptr(), argv.as_ptr());
                }
            }
            berth_monitor::pod_init::run()
        }
        nix::unistd::ForkResult::Parent { child } => Ok(child.as_raw()),
    }
}

pub(crate) fn bind_ns(source: &Path, target: &Path) -> Result<(), SandboxError> {
    std::fs::File::create(target).map_err(|e| io("creating", target, e))?;
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| io("bind-mounting", target, e))
}

/// Mounts the tmpfs of a `medium: Memory` volume at `path` (made here), shared by every
/// container of the pod through bind mounts.
pub fn mount_memory_volume(path: &Path, size: Option<i64>) -> Result<(), SandboxError> {
    std::fs::create_dir_all(path).map_err(|e| io("creating", path, e))?;
    let mut options = "mode=1777".to_string();
    if let Some(bytes) = size {
        options.push_str(&format!(",size={bytes}"));
    }
    mount(
        Some("tmpfs"),
        path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(|e| io("mounting a tmpfs on", path, e))
}

/// Unmounts what is mounted on the pod's volume dirs (tmpfs volumes).
pub fn release_volumes(dir: &Path) -> Result<(), SandboxError> {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        loop {
            match umount2(&path, MntFlags::MNT_DETACH) {
                Ok(()) => continue,
                Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => break,
                Err(e) => return Err(io("unmounting", &path, e)),
            }
        }
    }
    Ok(())
}

/// Unmounts the namespace files and removes the dir; missing pieces are fine (a half-made
/// sandbox, or one already released).
pub fn release(dir: &Path) -> Result<(), SandboxError> {
    for ns in SHARED.iter().chain(["pid", "user"].iter()) {
        let path = dir.join(ns);
        match umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(io("unmounting", &path, e)),
        }
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("removing", dir, e)),
    }
}
