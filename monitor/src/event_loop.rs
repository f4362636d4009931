//! The monitor's single-threaded poll loop: accepts attach clients, relays output to the
//! log and to clients, input and terminal size to the process, forwards signals, reaps.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::exit::{now, ExitRecord, EXIT_VERSION};
use crate::logs::LogWriter;
use crate::MonitorError;
use berth_api::attach as protocol;
use berth_api::logs::Stream;

/// Output after the process ended is drained for at most this long (a grandchild may hold
/// the pipe open; the cgroup is killed afterwards anyway).
const DRAIN: Duration = Duration::from_secs(2);
/// An exec supervisor nobody starts gives up after this.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// A client that lets this much output pile up is dropped.
const MAX_CLIENT_BACKLOG: usize = 8 << 20;

/// How the supervised process ended.
#[derive(Debug)]
pub enum End {
    /// exit(code).
    Exited(i32),
    /// Killed by a signal.
    Signaled(i32),
    /// The init was killed or ended while it waited for START: the user's process never
    /// ran (`rm -f` of a created container), so no start is recorded for it.
    NotStarted {
        /// 128 + signal, or the exit code.
        code: i32,
        /// The signal, if killed.
        signal: Option<i32>,
    },
    /// Never ran.
    Failed {
        /// Docker's code.
        code: i32,
        /// Why.
        error: String,
    },
}

/// What the loop supervises.
pub enum Managed<'a> {
    /// A created container; START starts it.
    Init {
        /// Lets the created init run the user's process (asks the create helper).
        start: &'a mut dyn FnMut() -> Result<(), MonitorError>,
        /// Its init.
        pid: i32,
    },
    /// An exec process, launched on START.
    Exec {
        /// Runs the process; returns its pid.
        launch: &'a mut dyn FnMut(&mut EventLoop) -> Result<i32, MonitorError>,
    },
}

struct Client {
    stream: UnixStream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    closed: bool,
}

/// Loop state.
pub struct EventLoop {
    listener: UnixListener,
    signals: SignalFd,
    outputs: Vec<(OwnedFd, u8)>,
    stdin: Option<OwnedFd>,
    tty: Option<OwnedFd>,
    log: Option<LogWriter>,
    clients: Vec<Client>,
    buf: Vec<u8>,
}

fn nonblocking(fd: &impl AsRawFd) {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    if let Ok(flags) = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL) {
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        let _ = fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags));
    }
}

enum Request {
    Start(usize),
}

impl EventLoop {
    /// Blocks the handled signals (from now on they arrive through a signalfd).
    pub fn new(
        listener: UnixListener,
        outputs: Vec<(OwnedFd, u8)>,
        stdin: Option<OwnedFd>,
        tty: Option<OwnedFd>,
        log: Option<LogWriter>,
    ) -> Result<Self, MonitorError> {
        let mut mask = SigSet::empty();
        for s in [
            Signal::SIGCHLD,
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
            Signal::SIGQUIT,
            Signal::SIGUSR1,
            Signal::SIGUSR2,
        ] {
            mask.add(s);
        }
        mask.thread_block().map_err(|e| MonitorError::Io {
            what: "blocking signals".into(),
            source: e.into(),
        })?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| MonitorError::Io {
            what: "signalfd".into(),
            source: e.into(),
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| MonitorError::Io {
                what: "listener".into(),
                source: e,
            })?;
        for (fd, _) in &outputs {
            nonblocking(fd);
        }
        Ok(EventLoop {
            listener,
            signals,
            outputs,
            stdin,
            tty,
            log,
            clients: Vec::new(),
            buf: Vec::new(),
        })
    }

    /// Adds a terminal received after launch: its output, input and size.
    pub fn attach_tty(&mut self, master: OwnedFd) {
        nonblocking(&master);
        if let Ok(w) = master.try_clone() {
            self.stdin = Some(w);
        }
        if let Ok(t) = master.try_clone() {
            self.tty = Some(t);
        }
        self.outputs.push((master, protocol::STDOUT));
    }

    fn broadcast(&mut self, kind: u8, payload: &[u8]) {
        let frame = protocol::encode(kind, payload);
        for c in &mut self.clients {
            c.outbuf.extend_from_slice(&frame);
            if c.outbuf.len() > MAX_CLIENT_BACKLOG {
                c.closed = true;
            }
        }
    }

    fn send_to(&mut self, i: usize, kind: u8, payload: &[u8]) {
        if let Some(c) = self.clients.get_mut(i) {
            c.outbuf.extend_from_slice(&protocol::encode(kind, payload));
        }
    }

    /// Runs until the process has ended and its output is drained.
    pub fn run(&mut self, mut managed: Managed<'_>) -> End {
        let (mut target, mut started) = match &managed {
            Managed::Init { pid, .. } => (Some(*pid), false),
            Managed::Exec { .. } => (None, false),
        };
        let begun = Instant::now();
        let mut end: Option<End> = None;
        let mut drain_until: Option<Instant> = None;
        loop {
            if let Some(deadline) = drain_until {
                if self.outputs.is_empty() || Instant::now() > deadline {
                    break;
                }
            }
            if !started
                && matches!(managed, Managed::Exec { .. })
                && begun.elapsed() > START_TIMEOUT
            {
                end = Some(End::Failed {
                    code: 125,
                    error: "no client started the exec process".into(),
                });
                break;
            }
            let requests = self.poll_once(&mut target, &mut end, &mut drain_until, started);
            for Request::Start(client) in requests {
                if started || end.is_some() {
                    continue;
                }
                match &mut managed {
                    Managed::Init { start, pid } => match start() {
                        Ok(()) => {
                            started = true;
                            crate::memory::release_setup_memory();
                            let msg = format!("{{\"pid\":{pid}}}");
                            self.broadcast(protocol::STARTED, msg.as_bytes());
                        }
                        Err(e) => {
                            self.send_to(client, protocol::ERROR, e.to_string().as_bytes());
                            let _ = nix::sys::signal::kill(Pid::from_raw(*pid), Signal::SIGKILL);
                            end = Some(End::Failed {
                                code: e.exit_code(),
                                error: e.to_string(),
                            });
                        }
                    },
                    Managed::Exec { launch } => {
                        // The helper is spawned with an empty signal mask (std resets it).
                        match launch(self) {
                            Ok(pid) => {
                                started = true;
                                target = Some(pid);
                                let msg = format!("{{\"pid\":{pid}}}");
                                self.broadcast(protocol::STARTED, msg.as_bytes());
                                // It may have exited before signals were blocked again.
                                self.reap(&mut target, &mut end, &mut drain_until);
                            }
                            Err(e) => {
                                self.send_to(client, protocol::ERROR, e.to_string().as_bytes());
                                end = Some(End::Failed {
                                    code: e.exit_code(),
                                    error: e.to_string(),
                                });
                                break;
                            }
                        }
                    }
                }
            }
            if matches!(end, Some(End::Failed { .. })) && drain_until.is_none() {
                drain_until = Some(Instant::now() + DRAIN);
            }
        }
        let end = end.unwrap_or(End::Failed {
            code: 125,
            error: "the process was lost".into(),
        });
        match end {
            End::Exited(code) if !started && matches!(managed, Managed::Init { .. }) => {
                End::NotStarted { code, signal: None }
            }
            End::Signaled(sig) if !started && matches!(managed, Managed::Init { .. }) => {
                End::NotStarted {
                    code: 128 + sig,
                    signal: Some(sig),
                }
            }
            other => other,
        }
    }

    fn reap(
        &mut self,
        target: &mut Option<i32>,
        end: &mut Option<End>,
        drain: &mut Option<Instant>,
    ) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if Some(pid.as_raw()) == *target => {
                    *end = Some(End::Exited(code));
                    *drain = Some(Instant::now() + DRAIN);
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) if Some(pid.as_raw()) == *target => {
                    *end = Some(End::Signaled(sig as i32));
                    *drain = Some(Instant::now() + DRAIN);
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    fn poll_once(
        &mut self,
        target: &mut Option<i32>,
        end: &mut Option<End>,
        drain: &mut Option<Instant>,
        started: bool,
    ) -> Vec<Request> {
        let mut fds = vec![
            PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
        ];
        for (fd, _) in &self.outputs {
            fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
        }
        for c in &self.clients {
            let mut flags = PollFlags::POLLIN;
            if !c.outbuf.is_empty() {
                flags |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(c.stream.as_fd(), flags));
        }
        if poll(&mut fds, PollTimeout::from(200u16)).is_err() {
            return Vec::new();
        }
        let revents: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        let ready = |f: PollFlags| !f.is_empty();
        let n_out = self.outputs.len();

        if ready(revents[1]) {
            while let Ok(Some(info)) = self.signals.read_signal() {
                let sig = info.ssi_signo as i32;
                if sig == libc::SIGCHLD {
                    self.reap(target, end, drain);
                } else if let (Some(pid), true) = (*target, started) {
                    if let Ok(s) = Signal::try_from(sig) {
                        let _ = nix::sys::signal::kill(Pid::from_raw(pid), s);
                    }
                }
            }
        }
        // Output first, so nothing a process wrote before exiting is lost.
        let mut dead_outputs = Vec::new();
        for i in 0..n_out {
            if !ready(revents[2 + i]) {
                continue;
            }
            // One buffer, allocated on first output, reused for the supervisor's life.
            let mut buf = std::mem::take(&mut self.buf);
            buf.resize(16 * 1024, 0);
            let (fd, kind) = &self.outputs[i];
            let kind = *kind;
            match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
                Ok(0) | Err(nix::errno::Errno::EIO) => dead_outputs.push(i),
                Ok(n) => {
                    let data = &buf[..n];
                    if let Some(log) = self.log.as_mut() {
                        let stream = if kind == protocol::STDERR {
                            Stream::Stderr
                        } else {
                            Stream::Stdout
                        };
                        if let Err(e) = log.write(stream, data) {
                            crate::log(format_args!("writing the container log: {e}"));
                        }
                    }
                    self.broadcast(kind, data);
                }
                Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {}
                Err(_) => dead_outputs.push(i),
            }
            self.buf = buf;
        }
        let mut requests = Vec::new();
        for (ci, flags) in revents[2 + n_out..].iter().enumerate() {
            let Some(c) = self.clients.get_mut(ci) else {
                continue;
            };
            if flags.intersects(PollFlags::POLLOUT) && !c.outbuf.is_empty() {
                match c.stream.write(&c.outbuf) {
                    Ok(n) => {
                        c.outbuf.drain(..n);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => c.closed = true,
                }
            }
            if flags.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                let mut buf = [0u8; 4096];
                match c.stream.read(&mut buf) {
                    Ok(0) => c.closed = true,
                    Ok(n) => c.inbuf.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => c.closed = true,
                }
            }
            loop {
                match protocol::decode(&mut c.inbuf) {
                    Ok(Some((kind, payload))) => match kind {
                        protocol::STDIN => {
                            if let Some(w) = &self.stdin {
                                let _ = write_all_fd(w, &payload);
                            }
                        }
                        // A terminal has no end of input; keep it for other clients.
                        protocol::STDIN_CLOSE if self.tty.is_none() => self.stdin = None,
                        protocol::RESIZE if payload.len() == 4 => {
                            if let Some(t) = &self.tty {
                                resize(t, &payload);
                            }
                        }
                        protocol::START => requests.push(Request::Start(ci)),
                        _ => {}
                    },
                    Ok(None) => break,
                    Err(_) => {
                        c.closed = true;
                        break;
                    }
                }
            }
        }
        for i in dead_outputs.into_iter().rev() {
            self.outputs.remove(i);
        }
        if ready(revents[0]) {
            while let Ok((stream, _)) = self.listener.accept() {
                let _ = stream.set_nonblocking(true);
                self.clients.push(Client {
                    stream,
                    inbuf: Vec::new(),
                    outbuf: Vec::new(),
                    closed: false,
                });
            }
        }
        // Clients that asked to start are addressed by index: drop closed ones afterwards only
        // if they asked nothing.
        if requests.is_empty() {
            self.clients.retain(|c| !c.closed);
        }
        requests
    }

    /// Sends EXIT to every client and flushes what they have not read yet (2 s at most).
    pub fn finish(&mut self, record: &ExitRecord) {
        let payload = serde_json::to_vec(record).unwrap_or_default();
        self.broadcast(protocol::EXIT, &payload);
        for c in &mut self.clients {
            if c.closed {
                continue;
            }
            let _ = c.stream.set_nonblocking(false);
            let _ = c.stream.set_write_timeout(Some(Duration::from_secs(2)));
            let _ = c.stream.write_all(&c.outbuf);
            let _ = c.stream.shutdown(std::net::Shutdown::Write);
        }
    }
}

fn write_all_fd(fd: &OwnedFd, mut data: &[u8]) -> nix::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn resize(tty: &OwnedFd, payload: &[u8]) {
    let ws = libc::winsize {
        ws_row: u16::from_be_bytes([payload[0], payload[1]]),
        ws_col: u16::from_be_bytes([payload[2], payload[3]]),
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a valid winsize from the pointer; `tty` is an open pty master.
    unsafe {
        libc::ioctl(tty.as_raw_fd(), libc::TIOCSWINSZ, &ws);
    }
}

/// The exit record for how the process ended.
pub fn exit_record(end: End, oom_killed: bool) -> ExitRecord {
    let (exit_code, signal, reason, error) = match end {
        End::Exited(code) => (code, None, "exited", None),
        End::Signaled(sig) => (128 + sig, Some(sig), "signaled", None),
        End::NotStarted { code, signal } => (code, signal, "not-started", None),
        End::Failed { code, error } => (code, None, "start-failed", Some(error)),
    };
    ExitRecord {
        version: EXIT_VERSION,
        exit_code,
        signal,
        oom_killed,
        reason: if oom_killed {
            "oom-killed".into()
        } else {
            reason.into()
        },
        finished: now(),
        error,
    }
}

/// How the process ended, with the reason its `execvp` failed if it reported one on the
/// exec-failure pipe (`CODE MESSAGE`): then it never ran, and the exit is a start failure
/// with Docker's code (126, 127).
pub fn exec_failure(end: End, pipe: &OwnedFd) -> End {
    if !matches!(end, End::Exited(_)) {
        return end;
    }
    let mut buf = [0u8; 1024];
    let Ok(n) = nix::unistd::read(pipe.as_raw_fd(), &mut buf) else {
        return end;
    };
    let text = String::from_utf8_lossy(&buf[..n]);
    match text
        .split_once(' ')
        .and_then(|(code, message)| Some((code.parse().ok()?, message.to_string())))
    {
        Some((code, error)) => End::Failed { code, error },
        None => end,
    }
}
