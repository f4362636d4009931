//! PID 1 of a pod whose containers share a PID namespace: reaps every child until SIGTERM.
//! The sandbox helper forks it and it execs this small binary, so what stays resident per
//! pod is the monitor's few pages rather than a copy of the whole `berth` binary's.

/// Runs until SIGTERM. Signals other than TERM are ignored by the kernel for a PID 1
/// without handlers, so TERM is waited for explicitly.
pub fn run() -> ! {
    let _ = nix::unistd::setsid();
    for fd in 0..3 {
        if let Ok(null) = nix::fcntl::open(
            "/dev/null",
            nix::fcntl::OFlag::O_RDWR,
            nix::sys::stat::Mode::empty(),
        ) {
            let _ = nix::unistd::dup2(null, fd);
            let _ = nix::unistd::close(null);
        }
    }
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGTERM);
    set.add(nix::sys::signal::Signal::SIGCHLD);
    let _ = set.thread_block();
    loop {
        match set.wait() {
            Ok(nix::sys::signal::Signal::SIGTERM) => std::process::exit(0),
            _ => {
                while let Ok(status) =
                    nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG))
                {
                    if status == nix::sys::wait::WaitStatus::StillAlive {
                        break;
                    }
                }
            }
        }
    }
}
