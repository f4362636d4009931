//! The confinement of a process that enters a running container (`berth exec`, a command
//! health check): the same as the container's init gets, from the same `config.json`.
//!
//! The process (user, groups, capabilities, no-new-privileges, rlimits) is the init's own
//! `process` section with only args, env, cwd, terminal and user replaced
//! ([`exec_process`]); namespaces, cgroup, masked and read-only paths come from joining the
//! init's namespaces and cgroup (libcontainer's tenant path). What that path leaves out is
//! the seccomp filter: libcontainer 0.7 rebuilds the tenant's `linux` section from
//! namespaces, cgroup path, personality and time offsets only. So the filter is loaded by
//! [`EnterExecutor`], libcontainer's last step before `execve`.
//!
//! Without no-new-privileges, loading a filter needs `CAP_SYS_ADMIN`, and by then
//! libcontainer has dropped to the container's capabilities. As libcontainer does for the
//! init (it loads the filter before dropping), the filter must go in while the process is
//! still privileged: the tenant is launched with `CAP_SYS_ADMIN` and `CAP_SETPCAP` kept in
//! its sets, and the executor loads the filter, then drops every set to exactly the
//! container's (bounding, effective, permitted, inheritable, ambient), then execs. No code
//! of the image runs before that. Tests compare `/proc/self/status` of both kinds of process.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{
    Executor, ExecutorError, ExecutorSetEnvsError, ExecutorValidationError,
};
use oci_spec::runtime::{
    Capability, LinuxCapabilities, LinuxNamespaceType, LinuxSeccomp, Process, Spec,
};

use super::SupervisorError;

/// What an exec changes of the init's process; everything else is the init's.
#[derive(Debug, Clone, Default)]
pub struct ExecOverrides {
    /// The command.
    pub args: Vec<String>,
    /// Variables set or replaced (KEY=VALUE).
    pub env: Vec<String>,
    /// A terminal.
    pub tty: bool,
    /// Another working directory.
    pub cwd: Option<PathBuf>,
    /// Another user: uid, gid, supplementary gids.
    pub user: Option<(u32, u32, Vec<u32>)>,
}

/// The process of an exec: the container's own `process` (capabilities, rlimits,
/// no-new-privileges, user, groups, umask) with the exec's overrides.
pub fn exec_process(spec: &Spec, o: &ExecOverrides) -> Process {
    let mut process = spec.process().clone().unwrap_or_default();
    let mut env = process.env().clone().unwrap_or_default();
    for kv in &o.env {
        let key = kv.split('=').next().unwrap_or_default();
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    if o.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    if let Some((uid, gid, groups)) = &o.user {
        let mut user = process.user().clone();
        user.set_uid(*uid)
            .set_gid(*gid)
            .set_additional_gids(Some(groups.clone()));
        process.set_user(user);
    }
    if let Some(cwd) = &o.cwd {
        process.set_cwd(cwd.clone());
    }
    process
        .set_args(Some(o.args.clone()))
        .set_env(Some(env))
        .set_terminal(Some(o.tty));
    process
}

/// The last step libcontainer runs in the container's process: the container's seccomp
/// filter and, when the launch kept extra capabilities to load it, the drop to the
/// container's exact sets (exec only; the init's filter is libcontainer's own), then
/// `execvp`. If `execvp` fails, its reason goes to the supervisor through a pipe
/// ([`ExecFailure`]): after START nobody else could hear it (E2BIG, EACCES, ENOEXEC).
#[derive(Clone)]
pub struct EnterExecutor {
    seccomp: Option<LinuxSeccomp>,
    exact_caps: Option<LinuxCapabilities>,
    report: Option<RawFd>,
    /// The container's user namespace (open in the supervisor): libcontainer 0.7's tenant
    /// path joins every namespace of the init but this one, so the executor joins it
    /// itself, first thing, then takes the process's ids in it.
    userns: Option<RawFd>,
}

impl EnterExecutor {
    /// For a container's init: libcontainer confines it; only failures are reported.
    pub fn for_init(report: &ExecFailure) -> Self {
        EnterExecutor {
            seccomp: None,
            exact_caps: None,
            report: Some(report.write_fd()),
            userns: None,
        }
    }
}

/// Joins the user namespace `fd` and becomes the process's user in it (its ids were set
/// as host ids by libcontainer; the same numbers are meant inside).
fn enter_userns(fd: RawFd, spec: &Spec) -> Result<(), ExecutorError> {
    let fail = |what: &str, e: nix::Error| ExecutorError::Other(format!("{what}: {e}"));
    // SAFETY: `fd` is the supervisor's open user namespace file, inherited and open until
    // execve.
    let ns = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWUSER)
        .map_err(|e| fail("joining the container's user namespace", e))?;
    let user = spec
        .process()
        .as_ref()
        .map(|p| p.user().clone())
        .unwrap_or_default();
    let groups: Vec<nix::unistd::Gid> = user
        .additional_gids()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(nix::unistd::Gid::from_raw)
        .collect();
    nix::unistd::setgroups(&groups).map_err(|e| fail("setgroups", e))?;
    let gid = nix::unistd::Gid::from_raw(user.gid());
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| fail("setresgid", e))?;
    let uid = nix::unistd::Uid::from_raw(user.uid());
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| fail("setresuid", e))
}

impl Executor for EnterExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        if let Some(fd) = self.userns {
            enter_userns(fd, spec)?;
        }
        if let Some(seccomp) = &self.seccomp {
            let notify = libcontainer::seccomp::initialize_seccomp(seccomp)
                .map_err(|e| ExecutorError::Other(format!("loading the seccomp filter: {e}")))?;
            if let Some(fd) = notify {
                // Berth's profiles have no notify action; a listener fd is not ours to keep.
                let _ = nix::unistd::close(fd);
            }
        }
        if let Some(caps) = &self.exact_caps {
            let syscall = libcontainer::syscall::syscall::create_syscall();
            libcontainer::capabilities::drop_privileges(caps, syscall.as_ref()).map_err(|e| {
                ExecutorError::Other(format!("dropping to the container's capabilities: {e}"))
            })?;
        }
        let args = spec
            .process()
            .as_ref()
            .and_then(|p| p.args().clone())
            .unwrap_or_default();
        let Some(first) = args.first() else {
            return Err(ExecutorError::InvalidArg);
        };
        let cstr = |s: &str| CString::new(s.as_bytes()).map_err(|_| ExecutorError::InvalidArg);
        let program = cstr(&lookup(first))?;
        let argv = args
            .iter()
            .map(|a| cstr(a))
            .collect::<Result<Vec<_>, _>>()?;
        // execv, not execvp: libc's execvp runs a file the kernel refuses (ENOEXEC) with
        // /bin/sh instead; runc and Docker report "exec format error".
        let Err(errno) = nix::unistd::execv(&program, &argv);
        // Docker's codes: 127 not found, 126 found but not executable.
        let code = if errno == nix::errno::Errno::ENOENT {
            127
        } else {
            126
        };
        let message = format!("exec {first:?}: {}", errno.desc().to_lowercase());
        if let Some(fd) = self.report {
            let line = format!("{code} {message}");
            // SAFETY: `fd` is the pipe's write end inherited from the supervisor, open until
            // execve (CLOEXEC); writing to it touches nothing else.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            if nix::unistd::write(fd, line.as_bytes()).is_ok() {
                // The supervisor has the reason; libcontainer would only log it again into
                // the container's own stderr.
                // SAFETY: _exit ends this single-threaded container process at once; nothing
                // of it needs unwinding or flushing.
                unsafe { libc::_exit(code) };
            }
        }
        Err(ExecutorError::Other(message))
    }

    fn validate(&self, _spec: &Spec) -> Result<(), ExecutorValidationError> {
        // The agent looked the command up already (127 when missing). libcontainer's own
        // check wants an x bit for others, which refuses what the kernel allows (root
        // running a 0700 file); the kernel's verdict comes back from `execvp` instead.
        Ok(())
    }

    fn setup_envs(&self, envs: HashMap<String, String>) -> Result<(), ExecutorSetEnvsError> {
        DefaultExecutor {}.setup_envs(envs)
    }
}

/// `command` found on `$PATH` (already the container's environment) as execvp would, or
/// itself when it has a `/` or nothing matches (execv then says why).
fn lookup(command: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    if command.contains('/') {
        return command.to_string();
    }
    let path = std::env::var("PATH")
        .unwrap_or_else(|_| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| format!("{d}/{command}"))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| command.to_string())
}

/// A pipe through which a container process whose `execvp` failed tells the monitor why
/// (`CODE MESSAGE`). Its write end is inherited by the process and closed by a successful
/// `execve` (CLOEXEC); the helper drops its own copy once the process is launched. The
/// helper reads it for a failure during the launch, the monitor for one after START.
#[derive(Debug)]
pub struct ExecFailure {
    read: OwnedFd,
    write: Option<OwnedFd>,
}

impl ExecFailure {
    /// A new pipe (both ends CLOEXEC; the read end non-blocking).
    pub fn new() -> Result<Self, SupervisorError> {
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .map_err(|e| SupervisorError::Io {
                    what: "making the exec-failure pipe".into(),
                    source: e.into(),
                })?;
        Ok(ExecFailure {
            read,
            write: Some(write),
        })
    }

    fn write_fd(&self) -> RawFd {
        self.write.as_ref().map_or(-1, |w| w.as_raw_fd())
    }

    /// Drops the supervisor's copy of the write end (after the launch).
    pub fn launched(&mut self) {
        self.write = None;
    }

    /// The pipe the monitor made: both ends handed to the create helper at fixed numbers.
    pub fn from_fds(read: OwnedFd, write: OwnedFd) -> Self {
        ExecFailure {
            read,
            write: Some(write),
        }
    }

    /// What the process reported, once it has ended: Docker's exit code and the reason.
    pub(crate) fn take(&self) -> Option<(i32, String)> {
        let mut buf = [0u8; 1024];
        let n = nix::unistd::read(self.read.as_raw_fd(), &mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]);
        let (code, message) = text.split_once(' ')?;
        Some((code.parse().ok()?, message.to_string()))
    }
}

/// The process file libcontainer launches and the executor that finishes the confinement.
#[derive(Debug)]
pub struct Entry {
    /// The process file to hand to libcontainer (a widened copy, or the exec's own).
    pub process: PathBuf,
    /// A copy written for the launch, removed once libcontainer has read it.
    pub temporary: bool,
    /// The executor.
    pub executor: EnterExecutor,
    /// The container's user namespace, kept open until the launch is done.
    pub userns: Option<OwnedFd>,
}

impl std::fmt::Debug for EnterExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnterExecutor")
            .field("seccomp", &self.seccomp.is_some())
            .field("widened", &self.exact_caps.is_some())
            .finish()
    }
}

/// Capabilities the launch keeps until the filter is loaded: loading needs SYS_ADMIN
/// without no-new-privileges; dropping bounding capabilities afterwards needs SETPCAP.
const LOAD_CAPS: [Capability; 2] = [Capability::SysAdmin, Capability::Setpcap];

/// Prepares the launch of `process_file` in the container whose bundle is `bundle`.
pub fn prepare(
    bundle: &Path,
    process_file: &Path,
    report: &ExecFailure,
    init_pid: Option<i32>,
) -> Result<Entry, SupervisorError> {
    let read = |p: &Path| -> Result<Vec<u8>, SupervisorError> {
        std::fs::read(p).map_err(|e| SupervisorError::Io {
            what: format!("reading {}", p.display()),
            source: e,
        })
    };
    let bad = |p: &Path, e: serde_json::Error| SupervisorError::Io {
        what: format!("parsing {}", p.display()),
        source: std::io::Error::other(e),
    };
    let config = bundle.join("config.json");
    let spec: Spec = serde_json::from_slice(&read(&config)?).map_err(|e| bad(&config, e))?;
    let mut process: Process =
        serde_json::from_slice(&read(process_file)?).map_err(|e| bad(process_file, e))?;
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
    let in_userns = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|n| n.iter().any(|n| n.typ() == LinuxNamespaceType::User));
    let userns = match (in_userns, init_pid) {
        (true, Some(pid)) => {
            let path = PathBuf::from(format!("/proc/{pid}/ns/user"));
            Some(OwnedFd::from(std::fs::File::open(&path).map_err(|e| {
                SupervisorError::Io {
                    what: format!("opening {}", path.display()),
                    source: e,
                }
            })?))
        }
        _ => None,
    };
    // Joining the user namespace needs CAP_SYS_ADMIN at the executor, as loading the
    // filter does without no-new-privileges.
    let needs_privilege =
        (seccomp.is_some() && process.no_new_privileges() != Some(true)) || userns.is_some();
    let exact = process.capabilities().clone();
    let Some(exact) = exact.filter(|_| needs_privilege) else {
        return Ok(Entry {
            process: process_file.to_path_buf(),
            temporary: false,
            executor: EnterExecutor {
                seccomp,
                exact_caps: None,
                report: Some(report.write_fd()),
                userns: userns.as_ref().map(|f| f.as_raw_fd()),
            },
            userns,
        });
    };
    let mut widened = exact.clone();
    let widen = |set: &Option<oci_spec::runtime::Capabilities>| {
        let mut s = set.clone().unwrap_or_default();
        s.extend(LOAD_CAPS);
        s
    };
    widened
        .set_bounding(Some(widen(exact.bounding())))
        .set_effective(Some(widen(exact.effective())))
        .set_permitted(Some(widen(exact.permitted())));
    process.set_capabilities(Some(widened));
    let launch = process_file.with_extension("launch.json");
    let bytes = serde_json::to_vec(&process).map_err(|e| bad(&launch, e))?;
    // Transient (removed once libcontainer has read it), in the 0700 container dir.
    std::fs::write(&launch, bytes).map_err(|e| SupervisorError::Io {
        what: format!("writing {}", launch.display()),
        source: e,
    })?;
    Ok(Entry {
        process: launch,
        temporary: true,
        executor: EnterExecutor {
            seccomp,
            exact_caps: Some(exact),
            report: Some(report.write_fd()),
            userns: userns.as_ref().map(|f| f.as_raw_fd()),
        },
        userns,
    })
}
