//! The one restart engine's timing: every restart (a lone container's `--restart` policy,
//! a pod member's `restartPolicy`) waits base × 2^step, capped, and the step is forgotten
//! after a run that lasted long enough. Lone containers use Docker's numbers (100 ms
//! doubling to 1 min, reset after a 10 s run); pod members the kubelet's (`restart_backoff`,
//! 10 s by default, doubling to `restart_backoff_max`, 5 min; reset after a 10 min run).
//! Each wait is announced as a `backoff` event with its delay, then the owner hears
//! [`Action::Restart`] and the restart's owner (`relaunch.rs`, `pod/restart.rs`) acts,
//! unless the operator stopped or removed the container meanwhile.

use std::time::Duration;

use super::events::Event;
use super::node::{Action, Node};

/// The numbers of one back-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait.
    pub base: Duration,
    /// The longest wait.
    pub max: Duration,
    /// A run this long forgets earlier crashes.
    pub reset_after: Duration,
}

impl Backoff {
    /// Docker's, for lone containers.
    pub const DOCKER: Backoff = Backoff {
        base: Duration::from_millis(100),
        max: Duration::from_secs(60),
        reset_after: Duration::from_secs(10),
    };

    /// The kubelet's shape with the agent's base and cap, for pod members.
    pub fn kubelet(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            reset_after: Duration::from_secs(600),
        }
    }

    /// The wait before restart number `step` (0-based).
    pub fn delay(&self, step: u32) -> Duration {
        self.base.saturating_mul(1u32 << step.min(16)).min(self.max)
    }

    /// Whether a run of `ran_for` forgets earlier crashes.
    pub fn resets(&self, ran_for: Duration) -> bool {
        ran_for >= self.reset_after
    }
}

/// What to restart once a back-off ends.
#[derive(Debug, Clone)]
pub enum Restart {
    /// A lone container, in place (same id).
    Container(String),
    /// A pod's slot: its ended instance `previous` is replaced by a new container.
    Member {
        /// Pod id.
        pod: String,
        /// Slot.
        name: String,
        /// The ended instance.
        previous: String,
    },
}

/// Announces `event` (a `backoff` event; the delay is added) and restarts `what` after
/// `delay`, through the owner.
pub fn schedule(node: &mut Node, what: Restart, delay: Duration, event: Event) {
    node.emit(event.with("delay", format!("{delay:?}")));
    let tx = node.tx.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = tx.send(Action::Restart(what)).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_base_up_to_the_cap() {
        let b = Backoff::DOCKER;
        assert_eq!(b.delay(0), Duration::from_millis(100));
        assert_eq!(b.delay(1), Duration::from_millis(200));
        assert_eq!(b.delay(9), Duration::from_millis(51_200));
        assert_eq!(b.delay(10), Duration::from_secs(60));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(60));
        let k = Backoff::kubelet(Duration::from_secs(10), Duration::from_secs(300));
        assert_eq!(k.delay(0), Duration::from_secs(10));
        assert_eq!(k.delay(5), Duration::from_secs(300));
        assert!(k.resets(Duration::from_secs(600)));
        assert!(!k.resets(Duration::from_secs(599)));
    }
}
