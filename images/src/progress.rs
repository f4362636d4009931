//! Progress of a pull or import, reported per layer. The library only emits events; the
//! binary draws them (a bar per layer on a terminal, plain lines otherwise).

pub use berth_api::image::ProgressEvent as Event;

/// Receives events; called from several tasks at once.
pub trait Progress: Send + Sync {
    /// Handles one event.
    fn event(&self, event: Event);
}

/// Discards events.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _: Event) {}
}
