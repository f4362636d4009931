//! The libcontainer calls, made only in the single-threaded create helper: create the init,
//! start it, run an exec process inside it; bring up `lo` in a new network namespace
//! (libcontainer leaves it down).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;

use super::SupervisorError;

/// Where the process's standard streams go.
#[derive(Debug)]
pub enum Stdio {
    /// A terminal: libcontainer creates it and sends the master to the socket at `path`
    /// (the monitor listens there).
    Tty {
        /// The console socket.
        path: PathBuf,
    },
    /// Pipes (the container's ends); stdin is `/dev/null` when `None`.
    Pipes {
        /// Read end for the container's stdin.
        stdin: Option<OwnedFd>,
        /// Write end of stdout.
        stdout: OwnedFd,
        /// Write end of stderr.
        stderr: OwnedFd,
    },
}

fn lc_err(what: &str) -> impl Fn(libcontainer::error::LibcontainerError) -> SupervisorError + '_ {
    move |e| SupervisorError::Libcontainer {
        what: what.to_string(),
        reason: format!("{e:#}"),
    }
}

fn builder(
    id: &str,
    lc_root: &Path,
    stdio: &mut Stdio,
) -> Result<ContainerBuilder, SupervisorError> {
    let mut b = ContainerBuilder::new(id.to_string(), SyscallType::Linux)
        .with_root_path(lc_root)
        .map_err(lc_err("setting the state root"))?;
    match stdio {
        Stdio::Tty { path } => {
            b = b.with_console_socket(Some(path.clone()));
        }
        Stdio::Pipes {
            stdin,
            stdout,
            stderr,
        } => {
            let null = std::fs::File::open("/dev/null").map_err(|e| SupervisorError::Io {
                what: "opening /dev/null".into(),
                source: e,
            })?;
            let dup = |fd: &OwnedFd| fd.try_clone();
            let io = |e| SupervisorError::Io {
                what: "duplicating stdio".into(),
                source: e,
            };
            b = b
                .with_stdin(match stdin {
                    Some(fd) => dup(fd).map_err(io)?,
                    None => OwnedFd::from(null),
                })
                .with_stdout(dup(stdout).map_err(io)?)
                .with_stderr(dup(stderr).map_err(io)?);
        }
    }
    Ok(b)
}

/// Creates the container from the bundle (its init waits for [`start`]); an `execvp` that
/// fails after START is reported through `report`.
pub fn create(
    id: &str,
    bundle: &Path,
    lc_root: &Path,
    stdio: &mut Stdio,
    report: &super::confine::ExecFailure,
) -> Result<Container, SupervisorError> {
    builder(id, lc_root, stdio)?
        .with_executor(super::confine::EnterExecutor::for_init(report))
        .as_init(bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(lc_err("creating the container"))
}

/// Lets the created init exec the user's process.
pub fn start(container: &mut Container) -> Result<(), SupervisorError> {
    container.start().map_err(lc_err("starting the container"))
}

/// Runs `process.json` inside the running container whose bundle is `bundle`, with the
/// container's whole confinement ([`super::confine`]); returns the process's pid.
pub fn exec(
    id: &str,
    lc_root: &Path,
    bundle: &Path,
    process: &Path,
    stdio: &mut Stdio,
    report: &super::confine::ExecFailure,
) -> Result<i32, SupervisorError> {
    // The init's pid, for its user namespace (libcontainer's state names it).
    let init_pid = libcontainer::container::Container::load(lc_root.join(id))
        .ok()
        .and_then(|c| c.pid())
        .map(|p| p.as_raw());
    let entry = super::confine::prepare(bundle, process, report, init_pid)?;
    let built = builder(id, lc_root, stdio)?
        .with_executor(entry.executor)
        .as_tenant()
        .with_process(Some(&entry.process))
        .with_detach(true)
        .build();
    if entry.temporary {
        let _ = std::fs::remove_file(&entry.process);
    }
    drop(entry.userns);
    let pid = built.map_err(|e| match report.take() {
        Some((code, message)) => SupervisorError::ExecFailed { code, message },
        None => lc_err("running the exec process")(e),
    })?;
    Ok(pid.as_raw())
}

/// Sets `lo` up in the network namespace of `pid`, then returns to our own namespace. The
/// supervisor is single-threaded, so switching its namespace affects nothing else.
pub fn loopback_up(pid: i32) -> Result<(), SupervisorError> {
    let io = |e: std::io::Error| SupervisorError::Io {
        what: "bringing up lo".into(),
        source: e,
    };
    let own = std::fs::File::open("/proc/self/ns/net").map_err(io)?;
    let theirs = std::fs::File::open(format!("/proc/{pid}/ns/net")).map_err(io)?;
    nix::sched::setns(&theirs, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| io(e.into()))?;
    let result = set_lo_up();
    nix::sched::setns(&own, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| io(e.into()))?;
    result.map_err(io)
}

pub(crate) fn set_lo_up() -> std::io::Result<()> {
    // SAFETY: plain socket(2) call; the result is checked and owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the flags of the named interface into `req`, which is a
    // valid, properly sized ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the flags member is the active one after SIOCGIFFLAGS.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS takes the same valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
