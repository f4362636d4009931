//! Set-up shared by the init and exec monitors: own session, the attach socket, the
//! container's standard streams, the terminal hand-over.

use std::ffi::OsString;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use berth_api::attach as protocol;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use crate::{helper, io_err, MonitorError};

/// Detaches from the caller: own session, subreaper of the container's orphans (the init
/// the helper forks is reparented here when the helper exits).
pub fn detach() {
    let _ = nix::unistd::setsid();
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes an integer flag and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

/// Binds a unix socket at `path` (replacing a stale one), mode 0600.
pub fn bind(path: &Path) -> Result<UnixListener, MonitorError> {
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path).map_err(io_err("binding the monitor socket"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err("chmod of the monitor socket"))?;
    Ok(l)
}

/// Where the container's standard streams go, before the helper has them.
#[derive(Debug)]
pub enum ContainerStdio {
    /// A terminal: libcontainer creates it and sends the master to this socket.
    Tty {
        /// Listener bound at `path`.
        listener: UnixListener,
        /// Its absolute path.
        path: PathBuf,
    },
    /// Pipes: the container's ends (stdin `/dev/null` when `None`).
    Pipes {
        /// Read end of the container's stdin.
        stdin: Option<OwnedFd>,
        /// Write end of stdout.
        stdout: OwnedFd,
        /// Write end of stderr.
        stderr: OwnedFd,
    },
}

/// The monitor's side of the streams: outputs to relay, the stdin writer.
pub type OurSide = (Vec<(OwnedFd, u8)>, Option<OwnedFd>);

/// Prepares stdio: a console socket named `console` for a tty, else pipes.
pub fn stdio(
    tty: bool,
    stdin: bool,
    console: &str,
) -> Result<(ContainerStdio, OurSide), MonitorError> {
    if tty {
        let path = PathBuf::from(console);
        let listener = bind(&path)?;
        let abs = std::env::current_dir().map_err(io_err("cwd"))?.join(path);
        return Ok((
            ContainerStdio::Tty {
                listener,
                path: abs,
            },
            (Vec::new(), None),
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
        ContainerStdio::Pipes {
            stdin: stdin_r,
            stdout: out_w,
            stderr: err_w,
        },
        (
            vec![(out_r, protocol::STDOUT), (err_r, protocol::STDERR)],
            stdin_w,
        ),
    ))
}

impl ContainerStdio {
    /// Hands the container's side to the helper: its arguments and descriptors. A terminal's
    /// listener stays here (the master arrives on it); pipes go, so that once the helper has
    /// exited only the container holds their write ends and EOF comes when it ends.
    pub fn for_helper(
        self,
        args: &mut Vec<OsString>,
        fds: &mut Vec<(OwnedFd, RawFd)>,
    ) -> Option<UnixListener> {
        match self {
            ContainerStdio::Tty { listener, path } => {
                args.push("--console".into());
                args.push(path.into_os_string());
                Some(listener)
            }
            ContainerStdio::Pipes {
                stdin,
                stdout,
                stderr,
            } => {
                if let Some(stdin) = stdin {
                    args.push("--stdin".into());
                    fds.push((stdin, helper::STDIN_FD));
                }
                fds.push((stdout, helper::STDOUT_FD));
                fds.push((stderr, helper::STDERR_FD));
                None
            }
        }
    }
}

/// Accepts libcontainer's connection on the console socket and takes the pty master.
pub fn receive_pty(listener: &UnixListener) -> Result<OwnedFd, MonitorError> {
    let io = io_err("receiving the terminal");
    listener.set_nonblocking(false).map_err(&io)?;
    let (conn, _) = listener.accept().map_err(&io)?;
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| io(e.into()))?;
    for cmsg in msg.cmsgs().map_err(|e| io(e.into()))? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor in our table for us.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(io(std::io::Error::other("no descriptor received")))
}

/// Fault injection for tests of the agent (`BERTH_FAULT_STALL_START=NAME[@MILLIS]`, read from
/// the agent's environment, which monitors inherit): the monitor of the container named
/// NAME hangs before creating it (for MILLIS, or for good), as one stuck in a kernel call or
/// a hook would. Nothing else reads the variable.
pub fn stall_if_asked(record: &Path) {
    let Some(value) = std::env::var("BERTH_FAULT_STALL_START").ok() else {
        return;
    };
    let (name, millis) = match value.split_once('@') {
        Some((n, ms)) => (n.to_string(), ms.parse::<u64>().ok()),
        None => (value, None),
    };
    let named = std::fs::read(record)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|r| r["name"] == name.as_str());
    if !named {
        return;
    }
    crate::log(format_args!(
        "BERTH_FAULT_STALL_START: stalling before the create ({millis:?} ms)"
    ));
    match millis {
        Some(ms) => std::thread::sleep(std::time::Duration::from_millis(ms)),
        None => loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
    }
}
