//! Sampling on a pressure signal, not only on the clock: a thread (`berth-psi-trigger`)
//! holds the kernel's PSI triggers on `/proc/pressure/cpu` and `/proc/pressure/memory`
//! (`some 100000 1000000`: tasks stalled 100 ms within a second) and asks the owner for a
//! usage sample the moment one fires (at most one per 250 ms), so reclaim's first step
//! follows the stall within a fraction of a second instead of waiting for the next
//! sample on the clock. Where the kernel has no PSI (or refuses triggers) the clock alone
//! drives sampling.
//!
//! By hand (poll(2) on the pressure files): no library wraps PSI triggers.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use tokio::sync::mpsc;

use super::node::Action;

/// The least time between two samples a trigger asks for.
const MIN_GAP: Duration = Duration::from_millis(250);

/// Opens a PSI trigger: `spec` written to `path` (e.g. `some 100000 1000000`).
fn trigger(path: &str, spec: &str) -> std::io::Result<OwnedFd> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    // The kernel takes the trigger with its terminating NUL (Documentation/accounting/psi.rst).
    f.write_all(format!("{spec}\0").as_bytes())?;
    Ok(OwnedFd::from(f))
}

/// Starts the trigger thread; `false` when no trigger could be set (no PSI here).
pub fn start(tx: mpsc::Sender<Action>) -> bool {
    let fds: Vec<OwnedFd> = ["/proc/pressure/cpu", "/proc/pressure/memory"]
        .into_iter()
        .filter_map(|p| match trigger(p, "some 100000 1000000") {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::info!(path = p, error = %e, "no PSI trigger: sampling on the clock only");
                None
            }
        })
        .collect();
    if fds.is_empty() {
        return false;
    }
    tracing::debug!(triggers = fds.len(), "PSI triggers armed");
    let spawned = std::thread::Builder::new()
        .name("berth-psi-trigger".into())
        .spawn(move || watch(fds, tx));
    spawned.is_ok()
}

fn watch(fds: Vec<OwnedFd>, tx: mpsc::Sender<Action>) {
    let mut last = Instant::now() - MIN_GAP;
    while !tx.is_closed() {
        let mut polled: Vec<PollFd> = fds
            .iter()
            .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLPRI))
            .collect();
        // A second at most, so the thread notices the agent stopping.
        let fired = match nix::poll::poll(&mut polled, PollTimeout::from(1000u16)) {
            Ok(n) => n > 0,
            Err(nix::errno::Errno::EINTR) => false,
            Err(e) => {
                tracing::warn!(error = %e, "polling the PSI triggers; sampling on the clock only");
                return;
            }
        };
        if polled
            .iter()
            .any(|p| p.revents().is_some_and(|r| r.contains(PollFlags::POLLERR)))
        {
            tracing::warn!("a PSI trigger went away; sampling on the clock only");
            return;
        }
        if fired && last.elapsed() >= MIN_GAP {
            last = Instant::now();
            // Full inbox: the owner is busy and samples on its clock anyway.
            let _ = tx.try_send(Action::Sample);
        } else if fired {
            // Within the gap: the next poll would fire again at once; wait it out.
            std::thread::sleep(MIN_GAP.saturating_sub(last.elapsed()));
        }
    }
}
